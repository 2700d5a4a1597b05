//! Least privilege: procmond keeps only the capabilities it needs to read
//! every process, and cannot gain others.
//!
//! Needed, and why:
//! - `CAP_SYS_PTRACE`: reading `/proc/PID/exe`, `/proc/PID/fd` and the
//!   environment-sensitive files of processes of other users is governed by
//!   ptrace access checks.
//! - `CAP_DAC_READ_SEARCH`: opening another user's executable (through
//!   `/proc/PID/exe`) to hash it, and reading `/proc` files whose mode
//!   forbids it, without the broader `CAP_DAC_OVERRIDE` (which would also
//!   allow writing).
//!
//! Everything else is dropped from the effective, permitted, inheritable,
//! ambient and bounding sets, and `no_new_privs` is set, so neither procmond
//! nor anything it could be made to execute can regain a capability.
//! Without root (or without these capabilities) procmond runs with what it
//! has and reports what is missing: processes of other users are then read
//! partly (no executable hash, sometimes no command line).
//!
//! Capabilities are per thread: [`restrict`] must run before procmond starts
//! any thread, which `main` does first.

use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities procmond keeps.
pub const NEEDED: [Capability; 2] = [Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH];

/// What [`restrict`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivilegeReport {
    /// Needed capabilities procmond has and keeps.
    pub kept: Vec<String>,
    /// Needed capabilities procmond does not have.
    pub missing: Vec<String>,
    /// Capabilities removed from the bounding set.
    pub bounding_dropped: usize,
    /// Whether `no_new_privs` is set.
    pub no_new_privs: bool,
    /// Steps that failed, with the reason; procmond goes on without them.
    pub failures: Vec<String>,
}

/// The capabilities of [`NEEDED`] this thread does not have in its
/// effective set now (all of them where capabilities cannot be read).
pub fn missing_now() -> Vec<String> {
    let needed: CapsHashSet = NEEDED.into_iter().collect();
    match caps::read(None, CapSet::Effective) {
        Ok(effective) => names(&needed.difference(&effective).copied().collect()),
        Err(_) => names(&needed),
    }
}

fn names(set: &CapsHashSet) -> Vec<String> {
    let mut out: Vec<String> = set.iter().map(ToString::to_string).collect();
    out.sort();
    out
}

/// Drops every capability but [`NEEDED`] from every set of this thread and
/// sets `no_new_privs`. Never fails: what cannot be done is reported.
pub fn restrict() -> PrivilegeReport {
    let mut report = PrivilegeReport::default();
    let needed: CapsHashSet = NEEDED.into_iter().collect();
    let permitted = match caps::read(None, CapSet::Permitted) {
        Ok(p) => p,
        Err(e) => {
            report.failures.push(format!("read the permitted set: {e}"));
            CapsHashSet::new()
        }
    };
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes
    // with the permitted set below.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        match caps::read(None, CapSet::Bounding) {
            Ok(bounding) => {
                for cap in bounding.difference(&needed) {
                    match caps::drop(None, CapSet::Bounding, *cap) {
                        Ok(()) => report.bounding_dropped += 1,
                        Err(e) => report
                            .failures
                            .push(format!("drop {cap} from the bounding set: {e}")),
                    }
                }
            }
            Err(e) => report.failures.push(format!("read the bounding set: {e}")),
        }
    }
    let keep: CapsHashSet = permitted.intersection(&needed).copied().collect();
    for (set, value) in [
        (CapSet::Ambient, CapsHashSet::new()),
        (CapSet::Inheritable, CapsHashSet::new()),
        (CapSet::Effective, keep.clone()),
        (CapSet::Permitted, keep.clone()),
    ] {
        if let Err(e) = caps::set(None, set, &value) {
            report.failures.push(format!("set the {set:?} set: {e}"));
        }
    }
    match nix::sys::prctl::set_no_new_privs() {
        Ok(()) => report.no_new_privs = true,
        Err(e) => report.failures.push(format!("set no_new_privs: {e}")),
    }
    report.kept = names(&keep);
    report.missing = names(&needed.difference(&keep).copied().collect());
    report
}

/// Logs what [`restrict`] did: once, at start.
pub fn log(report: &PrivilegeReport) {
    if report.missing.is_empty() {
        tracing::info!(
            kept = ?report.kept,
            bounding_dropped = report.bounding_dropped,
            no_new_privs = report.no_new_privs,
            "privileges reduced to what reading every process needs"
        );
    } else {
        tracing::warn!(
            missing = ?report.missing,
            kept = ?report.kept,
            "running without capabilities procmond needs: processes of other users are read partly (no executable hash, sometimes no command line); run as root or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
        );
    }
    for failure in &report.failures {
        tracing::warn!(error = %failure, "could not reduce privileges fully");
    }
}
