//! One module per subcommand.

pub mod monitor;
pub mod profile;
pub mod snapshot;
pub mod top;

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
