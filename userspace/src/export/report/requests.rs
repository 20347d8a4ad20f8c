//! Request latency: per handler (the initial call of the processes that serve requests), and
//! the slowest requests with their CPU, GC and the servers they waited on, from the recording's
//! spawns, exits and sends (see `aggregate::requests`).

use std::fmt::Write;

use super::html::Esc;
use crate::aggregate::calls::Calls;
use crate::export::requests::RequestsView;
use crate::record::model::Recording;
use crate::units::at;

pub fn section(out: &mut String, rec: &Recording, request_processes: &[String]) {
    out.push_str("<section id=\"sp-requests\"><h2>Requests</h2>");
    let calls = Calls::from_recording(rec, request_processes);
    let view = RequestsView::new(&calls.requests, 20, &|p| rec.pid(p), &|p| rec.identity(p).unwrap_or("").to_owned());
    if view.handlers.is_empty() {
        out.push_str(
            "<p class=\"sp-none\">No request measured: no request process (Cowboy's, yaws' acceptors, or given with \
             --request-process) started and ended while the spawn, exit and send hooks were attached.</p></section>",
        );
        return;
    }
    let ms = |s: Option<f64>| s.map_or("?".to_owned(), |s| format!("{:.1} ms", s * 1e3));
    out.push_str(
        "<table class=\"sp-table sp-handlers\"><caption>By handler</caption><thead><tr><th>Handler</th><th>Requests</th>\
         <th>Mean</th><th>p50</th><th>p99</th></tr></thead><tbody>",
    );
    for h in &view.handlers {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            Esc(&h.handler),
            h.requests,
            ms(h.mean_seconds),
            ms(h.p50_seconds),
            ms(h.p99_seconds)
        );
    }
    out.push_str(
        "</tbody></table><table class=\"sp-table sp-slowest\"><caption>Slowest requests</caption><thead><tr><th>At</th>\
         <th>Process</th><th>Handler</th><th>Took</th><th>CPU</th><th>GC</th><th>Waited on</th></tr></thead><tbody>",
    );
    for q in &view.slowest {
        let waits: Vec<String> = q
            .waited_on
            .iter()
            .map(|w| {
                let who = if w.name.is_empty() { w.server.clone() } else { format!("{} ({})", w.server, w.name) };
                format!("{who}: {} ({:.0}%, {} call{})", ms(Some(w.seconds)), w.share * 100.0, w.calls, if w.calls == 1 { "" } else { "s" })
            })
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            at((q.started_seconds * 1e9) as u64),
            Esc(&q.pid),
            Esc(&q.handler),
            ms(Some(q.duration_seconds)),
            ms(q.cpu_seconds),
            ms(q.gc_seconds),
            Esc(&waits.join("; "))
        );
    }
    out.push_str("</tbody></table>");
    if calls.requests.dropped > 0 {
        let _ = write!(out, "<p class=\"sp-muted\">{} request processes not followed (bounds).</p>", calls.requests.dropped);
    }
    out.push_str("</section>");
}
