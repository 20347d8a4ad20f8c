//! `scope-probe diff before.scope after.scope`: what changed between two runs, biggest first.

use std::io::Write;

use anyhow::{Context, Result};

use crate::analyze::diff::{Change, Diff, Section};
use crate::analyze::stats::Stats;
use crate::cli::DiffArgs;
use crate::record::model::Recording;
use crate::record::select::Filter;
use crate::units::{bytes, count};

pub fn run(args: DiffArgs) -> Result<()> {
    let before = crate::cmd::replay::open_one_vm(&args.before)?;
    let after = crate::cmd::replay::open_one_vm(&args.after)?;
    let (fb, fa) = (Filter::everything(&before, args.all), Filter::everything(&after, args.all));
    let (sb, sa) = (Stats::of(&before, &fb), Stats::of(&after, &fa));
    let diff = Diff::of(&sb, &sa);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "before: {}", describe(&args.before, &before))?;
    writeln!(out, "after:  {}", describe(&args.after, &after))?;
    if before.meta().vm.build != after.meta().vm.build {
        writeln!(out, "note: different VM builds ({} and {})", before.meta().vm.build, after.meta().vm.build)?;
    }
    writeln!(out)?;
    writeln!(out, "Biggest changes:")?;
    let ranked = diff.ranked(args.top);
    if ranked.iter().all(|c| c.score < 0.01) {
        writeln!(out, "  nothing moved by more than 1% of its whole")?;
    }
    for (i, c) in ranked.iter().enumerate() {
        writeln!(out, "  {:>2}. {:<9} {}", i + 1, c.section.label(), line(c))?;
    }
    for section in &diff.sections {
        let Some(first) = section.first() else { continue };
        writeln!(out)?;
        writeln!(out, "{}:", first.section.title())?;
        for c in section.iter().take(args.top) {
            writeln!(out, "  {}", line(c))?;
        }
    }
    writeln!(out)?;
    writeln!(out, "The VM:")?;
    let both = |b: Option<f64>, a: Option<f64>, f: &dyn Fn(f64) -> String| match (b, a) {
        (Some(b), Some(a)) => format!("{} -> {}", f(b), f(a)),
        _ => "not read in both".into(),
    };
    writeln!(out, "  schedulers' CPU   {}", both(sb.scheduler_cores, sa.scheduler_cores, &|x| format!("{x:.2} cores")))?;
    writeln!(out, "  run queues (mean) {}", both(sb.run_queue_mean, sa.run_queue_mean, &|x| format!("{x:.2}")))?;
    writeln!(
        out,
        "  resident memory   {}",
        both(sb.resident_peak.map(|x| x as f64), sa.resident_peak.map(|x| x as f64), &|x| format!("{} at its peak", bytes(x as u64)))
    )?;
    for n in &diff.notes {
        writeln!(out, "note: {n}")?;
    }
    out.flush()?;
    if let Some(path) = &args.flamegraph {
        differential_flamegraph(&before, &fb, &after, &fa, path)?;
        eprintln!("scope-probe: wrote {} (red: more CPU after, blue: less)", path.display());
    }
    Ok(())
}

fn describe(path: &std::path::Path, r: &Recording) -> String {
    let m = r.meta();
    format!(
        "{} (node {}, OTP {}, {:.1} s, mode {}, {} CPU samples, {} events)",
        path.display(),
        m.vm.node,
        m.vm.otp_release,
        r.end as f64 / 1e9,
        m.mode,
        count(r.samples.len() as u64),
        count(r.events.len() as u64)
    )
}

/// `what  before -> after  (change)` in the section's unit.
fn line(c: &Change) -> String {
    let v = |x: f64| match c.section {
        Section::Cpu => format!("{x:.3} cores"),
        Section::Messages => format!("{}/s", count(x.round() as u64)),
        Section::Gc | Section::Scheduling => format!("{:.1} ms/s", x * 1e3),
        Section::Mailbox => count(x as u64),
        Section::Memory => bytes(x as u64),
    };
    let change = if c.before > 0.0 && c.after > 0.0 {
        format!("x{:.2}", c.after / c.before)
    } else if c.before == 0.0 {
        "new".into()
    } else {
        "gone".into()
    };
    format!("{:<48} {:>14} -> {:<14} ({change}, {:.0}% of the whole)", c.what, v(c.before), v(c.after), c.score * 100.0)
}

/// Red where the second run spends more CPU, blue where less (the first run scaled to the
/// second's sample count).
fn differential_flamegraph(before: &Recording, fb: &Filter, after: &Recording, fa: &Filter, path: &std::path::Path) -> Result<()> {
    let folded = |r: &Recording, f: &Filter| crate::export::folded::lines(&crate::record::profile::profile(r, f, false)).join("\n");
    let (b, a) = (folded(before, fb), folded(after, fa));
    if b.is_empty() || a.is_empty() {
        anyhow::bail!("one of the recordings has no CPU samples: no differential flame graph");
    }
    let mut merged = Vec::new();
    let opts = inferno::differential::Options { normalize: true, strip_hex: false };
    inferno::differential::from_readers(opts, b.as_bytes(), a.as_bytes(), &mut merged).context("merging the profiles")?;
    let mut fg = inferno::flamegraph::Options::default();
    fg.title = "CPU: after against before".into();
    fg.subtitle = Some("red: more samples after, blue: fewer".into());
    fg.count_name = "samples".into();
    let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    inferno::flamegraph::from_reader(&mut fg, merged.as_slice(), std::io::BufWriter::new(file)).context("rendering the flame graph")?;
    Ok(())
}
