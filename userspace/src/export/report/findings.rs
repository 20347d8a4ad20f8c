//! The detectors' findings: one row per finding (its changes of state gathered), with its
//! evidence.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use super::html::Esc;
use crate::record::model::Recording;
use crate::record::select::Filter;
use crate::units::at;

/// Findings listed at most (the rest counted).
const MAX: usize = 50;

struct Row<'a> {
    first: u64,
    /// (time, state) of each change.
    changes: Vec<(u64, &'a str)>,
    /// The latest change's finding.
    last: &'a Value,
}

pub fn section(out: &mut String, rec: &Recording, f: &Filter) {
    out.push_str("<section id=\"sp-findings\"><h2>Findings</h2>");
    // Changes of one finding share its id; a finding without one stands alone.
    let mut rows: BTreeMap<(u64, usize), Row> = BTreeMap::new();
    let mut by_id: BTreeMap<u64, (u64, usize)> = BTreeMap::new();
    for (i, x) in rec.findings.iter().enumerate().filter(|(_, x)| f.time(x.t)) {
        let state = x.json.get("state").and_then(Value::as_str).unwrap_or("?");
        let key = match x.json.get("id").and_then(Value::as_u64) {
            Some(id) => *by_id.entry(id).or_insert((x.t, i)),
            None => (x.t, i),
        };
        let row = rows.entry(key).or_insert(Row { first: x.t, changes: Vec::new(), last: &x.json });
        row.changes.push((x.t, state));
        row.last = &x.json;
    }
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"sp-none\">No finding{}: no detector fired while recording.</p></section>",
            if f.from > 0 || f.to < rec.end { " in the span shown" } else { "" }
        );
        return;
    }
    let total = rows.len();
    out.push_str(
        "<table class=\"sp-table sp-findings\"><thead><tr><th>Kind</th><th>State</th><th>Process</th><th>Summary</th>\
         <th>Evidence</th><th>When</th></tr></thead><tbody>",
    );
    for row in rows.values().take(MAX) {
        let j = row.last;
        let s = |k: &str| j.get(k).and_then(Value::as_str).unwrap_or("");
        let state = row.changes.last().map_or("?", |c| c.1);
        let who = match (s("pid"), s("name")) {
            ("", _) => {
                let many: Vec<String> = j
                    .get("processes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let (pid, name) = (p["pid"].as_str().unwrap_or("?"), p["name"].as_str().unwrap_or(""));
                        if name.is_empty() { pid.to_owned() } else { format!("{pid} ({name})") }
                    })
                    .collect();
                many.join(", ")
            }
            (pid, "") => pid.to_owned(),
            (pid, name) => format!("{pid} ({name})"),
        };
        let severity = s("severity");
        let _ = write!(
            out,
            "<tr data-kind=\"{kind}\"><td><b>{kind}</b>{sev}</td><td><span class=\"sp-state sp-state-{state}\">{state}</span></td>\
             <td>{who}</td><td>{summary}</td><td>",
            kind = Esc(s("kind")),
            sev = if severity.is_empty() { String::new() } else { format!("<br><span class=\"sp-muted\">{}</span>", Esc(severity)) },
            state = Esc(state),
            who = Esc(&who),
            summary = Esc(s("summary")),
        );
        let evidence = j.get("evidence").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        if evidence.is_empty() {
            out.push_str("<span class=\"sp-muted\">none recorded</span>");
        } else {
            out.push_str("<table class=\"sp-evidence\">");
            for e in evidence {
                let value = match &e["value"] {
                    Value::String(v) => v.clone(),
                    other => other.to_string(),
                };
                let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", Esc(e["what"].as_str().unwrap_or("?")), Esc(&value));
            }
            out.push_str("</table>");
        }
        let changes: Vec<String> = row.changes.iter().map(|(t, st)| format!("{} at {}", Esc(st), at(*t))).collect();
        let _ = write!(out, "</td><td class=\"sp-when\">first at {}<br>{}</td></tr>", at(row.first), changes.join("<br>"));
    }
    out.push_str("</tbody></table>");
    if total > MAX {
        let _ = write!(out, "<p class=\"sp-muted\">{} more findings not listed.</p>", total - MAX);
    }
    out.push_str("</section>\n");
}
