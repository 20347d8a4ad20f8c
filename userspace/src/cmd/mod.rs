//! One module per subcommand.

pub mod check;
pub mod diff;
pub mod export;
pub mod merge;
pub mod monitor;
pub mod profile;
pub mod record;
pub mod replay;
pub mod report;
pub mod snapshot;
pub mod top;
pub mod why;

use anyhow::Result;

use crate::cli::ConfigArgs;
use crate::config::{ConfigFile, DEFAULT};

/// `scope-probe config`.
pub fn config(args: ConfigArgs) -> Result<()> {
    match args.check {
        Some(path) => {
            ConfigFile::read(&path)?;
            println!("{}: ok", path.display());
        }
        None => print!("{DEFAULT}"),
    }
    Ok(())
}
