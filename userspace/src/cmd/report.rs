//! `scope-probe report`: a recording as one self-contained HTML page (see `export::report`).

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::ReportArgs;
use crate::export::report;
use crate::record::select::Filter;

pub fn run(args: ReportArgs) -> Result<()> {
    let rec = crate::cmd::replay::open_one_vm(&args.recording)?;
    let filter = Filter::new(&rec, &args.select)?;
    let source = args.recording.file_name().map_or_else(|| args.recording.display().to_string(), |n| n.to_string_lossy().into_owned());
    let page = report::render(&rec, &filter, &source, &args.request_processes);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&args.output)?;
        file.write_all(page.as_bytes())?;
        file.flush()
    };
    write().with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!("scope-probe: wrote {} ({} KiB)", args.output.display(), page.len().div_ceil(1024));
    Ok(())
}
