//! `scope-probe record`: the monitor's session, everything it observes written to one file.

use anyhow::Result;

use crate::cli::RecordArgs;
use crate::cmd::monitor::{self, Outputs, RecordTo};

pub fn run(args: RecordArgs, matches: &clap::ArgMatches) -> Result<()> {
    if args.session.duration.is_none() && args.max_size.is_none() {
        eprintln!("scope-probe: recording until Ctrl-C (--duration or --max-size stop it by themselves)");
    }
    monitor::run_session(args.session, matches, Outputs { record: Some(RecordTo { path: args.output, max_size: args.max_size }) })
}
