//! The report's header: which VM, when, how long, how it was observed (the mode, and how long
//! each per-event hook was attached), what the recording holds, and what went wrong in it.

use std::fmt::Write;

use beam_probes::Capability;

use super::Observed;
use super::html::Esc;
use crate::record::model::Recording;
use crate::record::select::Filter;
use crate::units::{at, count};

pub fn section(out: &mut String, rec: &Recording, f: &Filter, source: &str) {
    let m = rec.meta();
    // A damaged header must not stop the report: a start beyond year 9999 reads as the epoch.
    let secs = if (0.0..253_402_300_800.0).contains(&m.started_unix) { m.started_unix } else { 0.0 };
    let started = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs);
    let span = (f.to - f.from) as f64 / 1e9;
    let _ = write!(
        out,
        "<header id=\"sp-summary\"><h1>scope-probe report: <span class=\"sp-node\">{}</span></h1>\
         <p class=\"sp-sub\">{} · recorded {} UTC · {:.1} s · mode {}</p>",
        Esc(&m.vm.node),
        Esc(source),
        Esc(&humantime::format_rfc3339_seconds(started).to_string().replace('T', " ").replace('Z', "")),
        rec.end as f64 / 1e9,
        Esc(&m.mode),
    );
    for d in &rec.damage {
        let _ = write!(out, "<p class=\"sp-warn\"><b>Damaged recording:</b> {}. The report shows what is intact.</p>", Esc(d));
    }
    if rec.lost > 0 {
        let _ = write!(
            out,
            "<p class=\"sp-warn\"><b>{} entries lost:</b> the recorder's queue was full (the disk did not keep up); counts are \
             short by about as many.</p>",
            count(rec.lost)
        );
    }
    out.push_str("<dl class=\"sp-facts\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(out, "<dt>{}</dt><dd>{v}</dd>", Esc(k));
    };
    fact("Node", format!("{} (OS pid {})", Esc(&m.vm.node), m.vm.os_pid));
    fact("OTP", format!("{} (ERTS {})", Esc(&m.vm.otp_release), Esc(&m.vm.erts_version)));
    fact("Build", Esc(&m.vm.build).to_string());
    fact("Started", format!("{} UTC", Esc(&humantime::format_rfc3339_millis(started).to_string())));
    fact("Length", format!("{:.1} s", rec.end as f64 / 1e9));
    let mode = match m.mode.as_str() {
        "adaptive" => format!(
            "adaptive: per-event hooks attached in windows kept within {:.1}% of the VM's CPU; CPU samples and table reads \
             all along",
            m.overhead_budget * 100.0
        ),
        "trace" => "trace: every per-event hook attached all along (exact counts)".to_owned(),
        "sample" => "sample: CPU samples and table reads only, no per-event hook".to_owned(),
        other => Esc(other).to_string(),
    };
    fact("Mode", mode);
    fact("CPU sampling", if m.frequency > 0 { format!("{} Hz per CPU", m.frequency) } else { "off".into() });
    let hooks: Vec<String> = Capability::ALL
        .iter()
        .map(|c| {
            let o = Observed::of(rec, c.index() as u8, f.from, f.to);
            let share = if span > 0.0 { o.seconds / span * 100.0 } else { 0.0 };
            let windows = if o.windows > 1 { format!(", {} windows", o.windows) } else { String::new() };
            format!("{} {:.1} s ({share:.0}%{windows})", c.name(), o.seconds)
        })
        .collect();
    fact("Hooks attached", format!("{} <span class=\"sp-muted\">(events exist only then)</span>", hooks.join(" · ")));
    // Indexed as `Capability::ALL`: send, schedule, gc, spawn, exit, distribution.
    let mut kinds = [0u64; beam_probes::Capability::ALL.len()];
    for e in rec.events.iter().filter(|e| f.time(e.t)) {
        kinds[e.what.capability().index()] += 1;
    }
    fact(
        "Events",
        format!(
            "{} ({} sends, {} schedules, {} GCs, {} spawns, {} exits, {} to or from other nodes)",
            count(kinds.iter().sum()),
            count(kinds[0]),
            count(kinds[1]),
            count(kinds[2]),
            count(kinds[3]),
            count(kinds[4]),
            count(kinds[5])
        ),
    );
    let in_span = |t: u64| f.time(t);
    fact(
        "Reads",
        format!(
            "{} CPU samples, {} process-table reads, {} /proc reads",
            count(rec.samples.iter().filter(|s| in_span(s.t)).count() as u64),
            count(rec.tables.iter().filter(|x| in_span(x.t)).count() as u64),
            count(rec.procs.iter().filter(|p| in_span(p.t)).count() as u64)
        ),
    );
    fact("Findings", format!("{} state changes", rec.findings.iter().filter(|x| in_span(x.t)).count()));
    fact("Lost entries", count(rec.lost));
    let mut shown = Vec::new();
    if f.from > 0 || f.to < rec.end {
        shown.push(format!("from {} to {}", at(f.from), at(f.to)));
    }
    if let Some(pids) = &f.pids {
        let mut names: Vec<String> = pids.iter().map(|p| rec.who(*p)).collect();
        names.sort();
        shown.push(format!("processes {}", Esc(&names.join(", "))));
    }
    shown.push(if f.all { "OTP's own processes included".into() } else { "OTP's own processes hidden (--all shows them)".into() });
    fact("Shown", shown.join("; "));
    out.push_str("</dl></header>\n");
}
