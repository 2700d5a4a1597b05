//! Shared helpers for the SentinelD benchmarks.
