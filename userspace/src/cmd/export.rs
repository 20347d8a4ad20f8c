//! `scope-probe export`: a recording for a timeline viewer.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::{ExportArgs, ExportFormat};
use crate::export::{chrome_json, perfetto, timeline};
use crate::record::select::Filter;

pub fn run(args: ExportArgs) -> Result<()> {
    let rec = crate::cmd::replay::open(&args.recording)?;
    let filter = Filter::new(&rec, &args.select)?;
    let output = args.output.clone().unwrap_or_else(|| {
        args.recording.with_extension(match args.format {
            ExportFormat::Perfetto => "perfetto-trace",
            ExportFormat::ChromeJson => "json",
        })
    });
    let tl = timeline::build(&rec, &filter);
    let file = std::fs::File::create(&output).with_context(|| format!("cannot write {}", output.display()))?;
    let mut out = std::io::BufWriter::new(file);
    match args.format {
        ExportFormat::Perfetto => perfetto::write(&tl, &mut out),
        ExportFormat::ChromeJson => chrome_json::write(&tl, &mut out),
    }
    .with_context(|| format!("writing {}", output.display()))?;
    out.flush()?;
    let processes = tl.tracks.iter().filter(|t| matches!(t.kind, timeline::TrackKind::Process { .. })).count();
    eprintln!(
        "scope-probe: wrote {} ({} tracks, {} of them Erlang processes, {} items{}){}",
        output.display(),
        tl.tracks.len(),
        processes,
        tl.items.len(),
        if tl.flows_dropped > 0 {
            format!("; {} messages past the first {} not drawn", tl.flows_dropped, timeline::MAX_FLOWS)
        } else {
            String::new()
        },
        match args.format {
            ExportFormat::Perfetto => ": open it in https://ui.perfetto.dev",
            ExportFormat::ChromeJson => "",
        }
    );
    Ok(())
}
