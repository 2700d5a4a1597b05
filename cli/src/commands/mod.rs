//! One module per subcommand: read from the store, shape the rows, render
//! them in the chosen format.

pub(crate) mod alerts;
pub(crate) mod audit;
pub(crate) mod history;
pub(crate) mod ps;
pub(crate) mod query;
pub(crate) mod rules;
pub(crate) mod scans;
