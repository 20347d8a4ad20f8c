//! The CPU section: the recording's samples as a flame graph (inferno's SVG inlined, each
//! process its own root frame), with the busiest processes and the hottest functions beside
//! it.

use std::collections::HashMap;
use std::fmt::Write;

use super::html::Esc;
use crate::export::flamegraph;
use crate::record::format::Owner;
use crate::record::model::Recording;
use crate::record::profile::profile;
use crate::record::select::Filter;
use crate::units::count;

/// Rows in each of the tables beside the graph.
const TOP: usize = 10;

pub fn section(out: &mut String, rec: &Recording, f: &Filter) {
    out.push_str("<section id=\"sp-cpu\"><h2>CPU</h2>");
    let m = rec.meta();
    if m.frequency == 0 {
        out.push_str("<p class=\"sp-none\">No CPU samples: sampling was off (--frequency 0) while recording.</p></section>\n");
        return;
    }
    let mut p = profile(rec, f, true);
    if p.samples == 0 {
        let _ = writeln!(
            out,
            "<p class=\"sp-none\">No CPU samples{}: the VM's threads were never found on a CPU at {} Hz (idle?).</p></section>",
            if f.pids.is_some() { " of the processes shown" } else { "" },
            m.frequency
        );
        return;
    }
    p.notes.push(format!(
        "{} samples, {} of them in Erlang processes; each process is a root frame",
        count(p.samples),
        count(p.attributed)
    ));
    if !f.all {
        p.notes.push("OTP's own processes hidden".into());
    }
    let mut svg = Vec::new();
    match flamegraph::write(&p, &mut svg) {
        Ok(()) => {
            let svg = String::from_utf8_lossy(&svg);
            // Inlined: the XML declaration and doctype belong to a file of its own.
            let start = svg.find("<svg").unwrap_or(0);
            let _ = write!(
                out,
                "<p class=\"sp-note\">Click a frame to zoom in, <i>Reset Zoom</i> to go back, <i>Search</i> to highlight \
                 frames by name; hover for counts. Wider is more samples; tall stacks scroll inside the box, which opens on \
                 the processes at the bottom.</p><div class=\"sp-flame\">{}</div>",
                &svg[start..]
            );
        }
        Err(e) => {
            let _ = write!(out, "<p class=\"sp-warn\">The flame graph could not be drawn: {}</p>", Esc(&format!("{e:#}")));
        }
    }
    tables(out, rec, f);
    out.push_str("</section>\n");
}

/// The busiest processes and the hottest Erlang functions, by samples.
fn tables(out: &mut String, rec: &Recording, f: &Filter) {
    let mut by_process: HashMap<u64, u64> = HashMap::new();
    let mut by_function: HashMap<u32, u64> = HashMap::new();
    let mut total = 0u64;
    for s in rec.samples.iter().filter(|s| f.time(s.t)) {
        let Owner::Process(pid) = s.owner else { continue };
        if !f.process(rec, pid) {
            continue;
        }
        total += 1;
        *by_process.entry(pid).or_default() += 1;
        if let Some(leaf) = s.erlang_leaf {
            *by_function.entry(leaf).or_default() += 1;
        }
    }
    if total == 0 {
        out.push_str("<p class=\"sp-muted\">No sample found an Erlang process running (only the VM's own threads).</p>");
        return;
    }
    let mut processes: Vec<(u64, u64)> = by_process.into_iter().collect();
    processes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut functions: Vec<(&str, u64)> = by_function.into_iter().map(|(id, n)| (rec.name(id), n)).collect();
    functions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let pct = |n: u64| n as f64 * 100.0 / total as f64;
    out.push_str(
        "<div class=\"sp-cols\"><table class=\"sp-table\"><caption>Busiest processes</caption><thead><tr><th>Process</th>\
         <th class=\"sp-num\">Samples</th><th class=\"sp-num\">Share</th></tr></thead><tbody>",
    );
    for (pid, n) in processes.iter().take(TOP) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"sp-num\">{}</td><td class=\"sp-num\">{:.1}%</td></tr>",
            Esc(&rec.who(*pid)),
            count(*n),
            pct(*n)
        );
    }
    out.push_str(
        "</tbody></table><table class=\"sp-table\"><caption>Hottest Erlang functions (where the samples were)</caption>\
         <thead><tr><th>Function</th><th class=\"sp-num\">Samples</th><th class=\"sp-num\">Share</th></tr></thead><tbody>",
    );
    for (name, n) in functions.iter().take(TOP) {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td class=\"sp-num\">{}</td><td class=\"sp-num\">{:.1}%</td></tr>",
            Esc(name),
            count(*n),
            pct(*n)
        );
    }
    if functions.is_empty() {
        out.push_str("<tr><td colspan=\"3\" class=\"sp-muted\">no Erlang frame was read</td></tr>");
    }
    out.push_str("</tbody></table></div>");
}
