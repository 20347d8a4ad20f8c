//! One module per subcommand.

pub mod monitor;
pub mod profile;
pub mod snapshot;
pub mod top;
