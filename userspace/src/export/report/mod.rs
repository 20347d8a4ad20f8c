//! The HTML report: a recording as one self-contained page to attach to a ticket (no network:
//! styles, scripts and graphics inline, the system's fonts). One module per section:
//! `summary` (the VM, the span, how it was observed), `findings`, `flame` (CPU), `flow`
//! (messages between processes), `requests` (request latency), `spawn_tree`, `timelines`; `chart` draws line charts and
//! `html` escapes. The page's script (`report.js`) makes the graphs interactive and, once they
//! are drawn, writes what it drew into `#sp-drawn` (JSON) for tests to read.

mod chart;
mod findings;
mod flame;
pub(crate) mod flow;
mod html;
mod requests;
mod spawn_tree;
mod summary;
mod timelines;

use std::fmt::Write;

use html::Esc;

use crate::record::model::Recording;
use crate::record::select::Filter;

pub(crate) const CSS: &str = include_str!("report.css");
const JS: &str = include_str!("report.js");

/// How long a capability's hooks were attached within a span, and in how many windows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    pub seconds: f64,
    pub windows: usize,
}

impl Observed {
    /// For `capability` (`Capability::index`) between `from` and `to` (ns since the start).
    pub fn of(rec: &Recording, capability: u8, from: u64, to: u64) -> Observed {
        let mut o = Observed::default();
        let mut add = |start: u64, end: u64| {
            let (s, e) = (start.max(from), end.min(to));
            if e > s {
                o.seconds += (e - s) as f64 / 1e9;
                o.windows += 1;
            }
        };
        let mut open: Option<u64> = None;
        for w in rec.windows.iter().filter(|w| w.capabilities.contains(&capability)) {
            match (w.open, open) {
                (true, None) => open = Some(w.t),
                (false, Some(start)) => {
                    add(start, w.t);
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(start) = open {
            add(start, rec.end.max(start));
        }
        o
    }
}

/// The whole page. `source` names the recording (its file name).
pub fn render(rec: &Recording, f: &Filter, source: &str, request_processes: &[String]) -> String {
    let m = rec.meta();
    let mut out = String::with_capacity(256 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; \
         script-src 'unsafe-inline'; img-src data:\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"generator\" content=\"scope-probe {}\"><title>scope-probe report: {} ({})</title>\
         <script>window.scopeProbeErrors=[];window.addEventListener(\"error\",function(e){{window.scopeProbeErrors.push(String(\
         e.message||e.type))}});</script><style>{CSS}</style></head><body>\n",
        env!("CARGO_PKG_VERSION"),
        Esc(&m.vm.node),
        Esc(source),
    );
    out.push_str(
        "<nav class=\"sp-nav\"><a href=\"#sp-summary\">Summary</a><a href=\"#sp-findings\">Findings</a><a href=\"#sp-cpu\">CPU</a>\
         <a href=\"#sp-flow\">Message flow</a><a href=\"#sp-requests\">Requests</a><a href=\"#sp-spawn\">Spawn tree</a><a href=\"#sp-timelines\">Timelines</a></nav><main>\n",
    );
    summary::section(&mut out, rec, f, source);
    findings::section(&mut out, rec, f);
    // The flame graph's own script takes the page's first <svg> for its own: it comes first.
    flame::section(&mut out, rec, f);
    flow::section(&mut out, rec, f);
    requests::section(&mut out, rec, request_processes);
    spawn_tree::section(&mut out, rec, f);
    timelines::section(&mut out, rec, f);
    let _ = write!(
        out,
        "</main><footer>Written by scope-probe {} from {}. Self-contained: opens without a network.</footer>\n\
         <script type=\"application/json\" id=\"sp-drawn\">{{}}</script><script>{JS}</script></body></html>\n",
        env!("CARGO_PKG_VERSION"),
        Esc(source)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::model::Window;

    fn rec_with(windows: &[(u64, bool)], end: u64) -> Recording {
        Recording {
            windows: windows.iter().map(|&(t, open)| Window { t, capabilities: vec![0, 1], open }).collect(),
            end,
            ..Recording::default()
        }
    }

    #[test]
    fn observed_time_is_cut_to_the_span() {
        let r = rec_with(&[(1_000_000_000, true), (2_000_000_000, false), (5_000_000_000, true)], 8_000_000_000);
        assert_eq!(Observed::of(&r, 0, 0, 8_000_000_000), Observed { seconds: 4.0, windows: 2 });
        assert_eq!(Observed::of(&r, 0, 1_500_000_000, 6_000_000_000), Observed { seconds: 1.5, windows: 2 });
        assert_eq!(Observed::of(&r, 0, 2_500_000_000, 4_000_000_000), Observed::default());
        assert_eq!(Observed::of(&r, 3, 0, 8_000_000_000), Observed::default());
    }
}
