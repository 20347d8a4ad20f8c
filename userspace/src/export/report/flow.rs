//! Message flow between processes: who sent to whom, from the send events, as a directed graph
//! laid out in layers (senders left, receivers right) and drawn as SVG, edges as thick as their
//! counts; then the busiest pairs as a table. In adaptive mode sends exist only in the hook's
//! windows: the section says so and gives rates per observed second.

use std::collections::HashMap;
use std::fmt::Write;

use beam_probes::Capability;

use super::Observed;
use super::html::{Esc, clip, short};
use crate::record::model::Recording;
use crate::record::select::Filter;
use crate::units::count;

/// Processes drawn at most (the busiest); the others are folded into one node.
const MAX_NODES: usize = 14;
/// Edges drawn at most (the heaviest).
const MAX_EDGES: usize = 40;
/// Edges with their count written beside them.
const LABELLED: usize = 24;
/// Edges lighter than the heaviest divided by this are not drawn.
const LIGHT: u64 = 500;
/// Pairs listed in the table.
const TABLE_ROWS: usize = 15;
/// The node standing for the processes not drawn.
const OTHERS: u64 = u64::MAX;

/// Who sent to whom, bounded for drawing.
pub struct Graph {
    /// Pids ([`OTHERS`] for the folded ones), busiest first.
    pub nodes: Vec<u64>,
    /// (sent, received) per node.
    pub traffic: Vec<(u64, u64)>,
    /// (from, to, messages) as node indices, heaviest first.
    pub edges: Vec<(usize, usize, u64)>,
    /// Every pair, by pid, heaviest first.
    pub pairs: Vec<((u64, u64), u64)>,
    pub total: u64,
    /// Processes folded into [`OTHERS`], and edges not drawn.
    pub folded: usize,
    pub edges_dropped: usize,
}

pub fn graph(rec: &Recording, f: &Filter) -> Graph {
    let mut counts: HashMap<(u64, u64), u64> = HashMap::new();
    for e in &rec.events {
        if let Some((from, to)) = e.what.send()
            && f.event(rec, e.t, &e.what)
        {
            *counts.entry((from, to)).or_default() += 1;
        }
    }
    graph_of(counts)
}

/// The graph of messages counted per (sender, receiver): a recording's, or the live monitor's.
pub fn graph_of(counts: HashMap<(u64, u64), u64>) -> Graph {
    let mut traffic: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut total = 0u64;
    for (&(from, to), &n) in &counts {
        traffic.entry(from).or_default().0 += n;
        traffic.entry(to).or_default().1 += n;
        total += n;
    }
    let mut busiest: Vec<(u64, (u64, u64))> = traffic.iter().map(|(p, t)| (*p, *t)).collect();
    busiest.sort_by(|a, b| (b.1.0 + b.1.1).cmp(&(a.1.0 + a.1.1)).then(a.0.cmp(&b.0)));
    let drawn: HashMap<u64, ()> = busiest.iter().take(MAX_NODES).map(|(p, _)| (*p, ())).collect();
    let folded = busiest.len().saturating_sub(MAX_NODES);
    let node_of = |p: u64| if drawn.contains_key(&p) { p } else { OTHERS };
    let mut merged: HashMap<(u64, u64), u64> = HashMap::new();
    for (&(from, to), &n) in &counts {
        let key = (node_of(from), node_of(to));
        // What the folded processes sent each other is not drawn.
        if key != (OTHERS, OTHERS) {
            *merged.entry(key).or_default() += n;
        }
    }
    let mut merged: Vec<((u64, u64), u64)> = merged.into_iter().collect();
    merged.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // Pairs with a few messages beside ones with thousands are noise in a drawing (the table
    // lists them).
    let floor = merged.first().map_or(0, |e| e.1 / LIGHT);
    let before = merged.len();
    merged.retain(|e| e.1 >= floor);
    merged.truncate(MAX_EDGES);
    let edges_dropped = before - merged.len();
    // Nodes that keep an edge, busiest first, the folded ones last.
    let mut nodes: Vec<u64> = busiest.iter().map(|(p, _)| *p).filter(|p| drawn.contains_key(p)).collect();
    if merged.iter().any(|((a, b), _)| *a == OTHERS || *b == OTHERS) {
        nodes.push(OTHERS);
    }
    nodes.retain(|p| merged.iter().any(|((a, b), _)| a == p || b == p));
    let index: HashMap<u64, usize> = nodes.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut node_traffic = vec![(0u64, 0u64); nodes.len()];
    for (&(from, to), &n) in &counts {
        if let Some(&i) = index.get(&node_of(from)) {
            node_traffic[i].0 += n;
        }
        if let Some(&i) = index.get(&node_of(to)) {
            node_traffic[i].1 += n;
        }
    }
    let edges = merged.iter().map(|((a, b), n)| (index[a], index[b], *n)).collect();
    let mut pairs: Vec<((u64, u64), u64)> = counts.into_iter().collect();
    pairs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Graph { nodes, traffic: node_traffic, edges, pairs, total, folded, edges_dropped }
}

/// Where each node goes: layers from left to right (a sender left of what it sends to, cycles
/// broken), rows within a layer ordered to keep edges short.
pub struct Layout {
    pub layer: Vec<usize>,
    pub row: Vec<usize>,
    pub layers: usize,
    /// Nodes in the fullest layer.
    pub rows: usize,
}

pub fn layout(n: usize, edges: &[(usize, usize, u64)]) -> Layout {
    // Out-edges, heaviest first (edges come sorted so).
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for &(a, b, _) in edges {
        if a != b && !out[a].contains(&b) {
            out[a].push(b);
            indegree[b] += 1;
        }
    }
    // Depth-first from the nodes nothing sends to, then the rest: an edge to a node still on
    // the stack closes a cycle and is turned round for the layering.
    let mut state = vec![0u8; n]; // 0 new, 1 on the stack, 2 done
    let mut dag: Vec<(usize, usize)> = Vec::new();
    let starts: Vec<usize> = (0..n).filter(|&v| indegree[v] == 0).chain(0..n).collect();
    for s in starts {
        if state[s] != 0 {
            continue;
        }
        // (node, next out-edge to follow)
        let mut stack = vec![(s, 0usize)];
        state[s] = 1;
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if let Some(&w) = out[v].get(*next) {
                *next += 1;
                match state[w] {
                    0 => {
                        dag.push((v, w));
                        state[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => dag.push((w, v)),
                    _ => dag.push((v, w)),
                }
            } else {
                state[v] = 2;
                stack.pop();
            }
        }
    }
    dag.sort_unstable();
    dag.dedup();
    // Longest path from the sources.
    let mut layer = vec![0usize; n];
    let mut pending = vec![0usize; n];
    for &(_, b) in &dag {
        pending[b] += 1;
    }
    let mut ready: Vec<usize> = (0..n).filter(|&v| pending[v] == 0).collect();
    ready.reverse();
    while let Some(v) = ready.pop() {
        for &(a, b) in dag.iter().filter(|(a, _)| *a == v) {
            layer[b] = layer[b].max(layer[a] + 1);
            pending[b] -= 1;
            if pending[b] == 0 {
                ready.push(b);
            }
        }
    }
    let layers = layer.iter().max().map_or(0, |m| m + 1);
    // Rows: first by how busy (node order), then a few sweeps moving each node towards the
    // mean row of its neighbours in the layer before (then after).
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for v in 0..n {
        order[layer[v]].push(v);
    }
    let mut pos = vec![0f64; n];
    let place = |order: &Vec<Vec<usize>>, pos: &mut Vec<f64>| {
        for l in order {
            let k = l.len() as f64;
            for (i, &v) in l.iter().enumerate() {
                pos[v] = (i as f64 + 0.5) / k;
            }
        }
    };
    place(&order, &mut pos);
    for sweep in 0..8 {
        let down = sweep % 2 == 0;
        let range: Vec<usize> = if down { (1..layers).collect() } else { (0..layers.saturating_sub(1)).rev().collect() };
        for l in range {
            let near = if down { l - 1 } else { l + 1 };
            let mut keyed: Vec<(f64, f64, usize)> = order[l]
                .iter()
                .map(|&v| {
                    let ns: Vec<f64> = dag
                        .iter()
                        .filter_map(|&(a, b)| {
                            if a == v {
                                Some(b)
                            } else if b == v {
                                Some(a)
                            } else {
                                None
                            }
                        })
                        .filter(|&w| layer[w] == near)
                        .map(|w| pos[w])
                        .collect();
                    let bary = if ns.is_empty() { pos[v] } else { ns.iter().sum::<f64>() / ns.len() as f64 };
                    (bary, pos[v], v)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
            order[l] = keyed.into_iter().map(|k| k.2).collect();
            place(&order, &mut pos);
        }
    }
    let mut row = vec![0usize; n];
    for l in &order {
        for (i, &v) in l.iter().enumerate() {
            row[v] = i;
        }
    }
    let rows = order.iter().map(Vec::len).max().unwrap_or(0);
    Layout { layer, row, layers, rows }
}

const PAD: f64 = 24.0;
const COL_W: f64 = 250.0;
const ROW_H: f64 = 66.0;
const NODE_W: f64 = 176.0;
const NODE_H: f64 = 40.0;

type Point = (f64, f64);

fn cubic_mid(p: [Point; 4]) -> Point {
    ((p[0].0 + 3.0 * p[1].0 + 3.0 * p[2].0 + p[3].0) / 8.0, (p[0].1 + 3.0 * p[1].1 + 3.0 * p[2].1 + p[3].1) / 8.0)
}

pub fn section(out: &mut String, rec: &Recording, f: &Filter) {
    out.push_str("<section id=\"sp-flow\"><h2>Message flow</h2>");
    let span = (f.to - f.from) as f64 / 1e9;
    let seen = Observed::of(rec, Capability::Send.index() as u8, f.from, f.to);
    let g = graph(rec, f);
    let mode = rec.meta().mode.as_str();
    if seen.seconds <= 0.0 && g.total == 0 {
        let _ = writeln!(
            out,
            "<p class=\"sp-none\">No message flow: the send hook was never attached while recording (mode {}). Record in \
             adaptive or trace mode to see who sends to whom.</p></section>",
            Esc(mode)
        );
        return;
    }
    let rate = |n: u64| if seen.seconds > 0.0 { n as f64 / seen.seconds } else { 0.0 };
    if mode == "trace" || seen.seconds >= span * 0.98 {
        let _ = write!(
            out,
            "<p class=\"sp-note\">Every send while recording (the send hook was attached all along, {:.1} s): {} messages, {:.0} \
             per second.",
            seen.seconds,
            count(g.total),
            rate(g.total)
        );
    } else {
        let _ = write!(
            out,
            "<p class=\"sp-note\"><b>Sampled in windows:</b> sends were seen only while the send hook was attached, {:.1} s of \
             {:.1} s ({:.1}%) in {} window{}. Counts are what those windows saw ({} messages); rates are per observed second \
             ({:.0} per second) and estimate the whole recording's.",
            seen.seconds,
            span,
            if span > 0.0 { seen.seconds / span * 100.0 } else { 0.0 },
            seen.windows,
            if seen.windows == 1 { "" } else { "s" },
            count(g.total),
            rate(g.total)
        );
    }
    if !f.all {
        out.push_str(" OTP's own processes are hidden, but a send between one of them and a process shown is kept.");
    }
    out.push_str("</p>");
    if g.edges.is_empty() {
        out.push_str("<p class=\"sp-none\">No send between processes shown was seen.</p></section>\n");
        return;
    }
    let mut notes = Vec::new();
    if g.nodes.contains(&OTHERS) {
        notes.push(match g.folded {
            1 => "the least busy process is drawn as \"1 other process\"".to_owned(),
            n => format!("the {n} least busy processes are folded into one node"),
        });
    }
    if g.edges_dropped > 0 {
        notes.push(format!(
            "{} lighter pairs are not drawn (at most {MAX_EDGES} are, none under 1/{LIGHT} of the heaviest)",
            g.edges_dropped
        ));
    }
    if !notes.is_empty() {
        let _ = write!(out, "<p class=\"sp-muted\">Drawn: at most the {MAX_NODES} busiest processes; {}.</p>", notes.join("; "));
    }
    out.push_str(
        "<p class=\"sp-muted\">Senders are left of what they send to; a dashed edge goes back left (a reply, or a cycle). \
         Hover an edge or a process for its counts.</p>",
    );
    draw(out, &g, &rate, &|pid| (short(rec, pid), rec.who(pid)), &|pid| rec.pid(pid));
    pairs_table(out, rec, &g, &rate);
    out.push_str("</section>\n");
}

/// How a process is named in the drawing: a short label and who it is in full.
pub type Names<'a> = dyn Fn(u64) -> (String, String) + 'a;

fn label(names: &Names<'_>, g: &Graph, pid: u64) -> (String, String) {
    if pid == OTHERS {
        let n = match g.folded {
            1 => "1 other process".to_owned(),
            n => format!("{n} other processes"),
        };
        (n.clone(), format!("{n} (folded: less busy than those drawn)"))
    } else {
        names(pid)
    }
}

/// The graph alone as an SVG document, its styles inside (the live dashboard's, read from the
/// monitor's pair counts).
pub fn svg(g: &Graph, rate: &dyn Fn(u64) -> f64, names: &Names<'_>, pid_text: &dyn Fn(u64) -> String) -> String {
    let mut out = String::new();
    draw(&mut out, g, rate, names, pid_text);
    let (Some(start), Some(end)) = (out.find("<svg"), out.rfind("</svg>")) else { return out };
    let svg = &out[start..end + "</svg>".len()];
    let open = svg.find('>').map_or(0, |i| i + 1);
    format!("{}<style>{}</style>{}", &svg[..open], super::CSS, &svg[open..])
}

fn draw(out: &mut String, g: &Graph, rate: &dyn Fn(u64) -> f64, names: &Names<'_>, pid_text: &dyn Fn(u64) -> String) {
    let lay = layout(g.nodes.len(), &g.edges);
    let width = PAD * 2.0 + (lay.layers.max(1) - 1) as f64 * COL_W + NODE_W;
    // Room over the nodes for a process's sends to itself.
    let loops = if g.edges.iter().any(|&(a, b, _)| a == b) { 36.0 } else { 0.0 };
    let height = PAD * 2.0 + loops + lay.rows as f64 * ROW_H;
    let centre = |v: usize| -> Point {
        let in_layer = (0..g.nodes.len()).filter(|&w| lay.layer[w] == lay.layer[v]).count();
        let top = PAD + loops + (lay.rows - in_layer) as f64 * ROW_H / 2.0;
        (PAD + NODE_W / 2.0 + lay.layer[v] as f64 * COL_W, top + (lay.row[v] as f64 + 0.5) * ROW_H)
    };
    let max = g.edges.iter().map(|e| e.2).max().unwrap_or(1).max(1) as f64;
    let _ = write!(
        out,
        "<div class=\"sp-graph-wrap\"><svg id=\"sp-flow-graph\" class=\"sp-graph\" xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" width=\"{width:.0}\" height=\"{height:.0}\" role=\"img\" \
         aria-label=\"Message flow between processes\">"
    );
    // An edge runs from the right side of the node in the left layer to the left side of the
    // one in the right layer, whichever way it goes (one going back left has its arrowhead at
    // the left end, and is dashed). The edges at a side spread over it, ordered by where they
    // go.
    let back = |a: usize, b: usize| a != b && lay.layer[b] < lay.layer[a];
    let mut right_ports: HashMap<usize, Vec<(f64, usize)>> = HashMap::new();
    let mut left_ports: HashMap<usize, Vec<(f64, usize)>> = HashMap::new();
    for (i, &(a, b, _)) in g.edges.iter().enumerate() {
        if a != b {
            let (l, r) = if back(a, b) { (b, a) } else { (a, b) };
            right_ports.entry(l).or_default().push((centre(r).1, i));
            left_ports.entry(r).or_default().push((centre(l).1, i));
        }
    }
    let offset = |ports: &HashMap<usize, Vec<(f64, usize)>>, v: usize, edge: usize| -> f64 {
        let Some(list) = ports.get(&v) else { return 0.0 };
        let mut list = list.clone();
        list.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        let k = list.len() as f64;
        let i = list.iter().position(|p| p.1 == edge).unwrap_or(0) as f64;
        let step = (NODE_H - 10.0) / k.max(1.0);
        (i - (k - 1.0) / 2.0) * step.min(8.0)
    };
    // Edges under the nodes, the lightest first (the heavy ones on top).
    let mut labels = String::new();
    for (i, &(a, b, n)) in g.edges.iter().enumerate().rev() {
        let w = 1.2 + 10.0 * (n as f64 / max).sqrt();
        let (ca, cb) = (centre(a), centre(b));
        let head_len = 7.0 + w * 1.1;
        let (p, tip): ([Point; 4], Point) = if a == b {
            let top = ca.1 - NODE_H / 2.0;
            let s = (ca.0 + 24.0, top);
            let e = (ca.0 + 50.0, top);
            ([s, (s.0 - 10.0, top - 46.0), (e.0 + 24.0, top - 46.0), e], e)
        } else if !back(a, b) {
            let s = (ca.0 + NODE_W / 2.0, ca.1 + offset(&right_ports, a, i));
            let e = (cb.0 - NODE_W / 2.0, cb.1 + offset(&left_ports, b, i));
            let dx = (e.0 - s.0) * 0.5;
            ([s, (s.0 + dx, s.1), (e.0 - dx, e.1), e], e)
        } else {
            let s = (ca.0 - NODE_W / 2.0, ca.1 + offset(&left_ports, a, i));
            let e = (cb.0 + NODE_W / 2.0, cb.1 + offset(&right_ports, b, i));
            let dx = (s.0 - e.0) * 0.5;
            ([s, (s.0 - dx, s.1), (e.0 + dx, e.1), e], e)
        };
        // The line stops where the arrowhead starts, the head points along the curve's end.
        let (dx, dy) = (tip.0 - p[2].0, tip.1 - p[2].1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-6);
        let (ux, uy) = (dx / len, dy / len);
        let base = (tip.0 - ux * head_len, tip.1 - uy * head_len);
        let half = 3.5 + w * 0.75;
        let (l, r) = ((base.0 - uy * half, base.1 + ux * half), (base.0 + uy * half, base.1 - ux * half));
        let (from, to) = (label(names, g, g.nodes[a]).1, label(names, g, g.nodes[b]).1);
        let _ = write!(
            out,
            "<g class=\"sp-edge{}\" data-from=\"{}\" data-to=\"{}\" data-n=\"{n}\"><title>{} → {}\n{} messages ({:.1} per second \
             while observed)</title><path class=\"sp-edge-line\" d=\"M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\" \
             stroke-width=\"{w:.1}\"{}/><path class=\"sp-edge-head\" d=\"M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z\"/></g>",
            if back(a, b) { " sp-back" } else { "" },
            Esc(&from),
            Esc(&to),
            Esc(&from),
            Esc(&to),
            count(n),
            rate(n),
            p[0].0,
            p[0].1,
            p[1].0,
            p[1].1,
            p[2].0,
            p[2].1,
            base.0,
            base.1,
            // Dashes long enough to show on a thick line.
            if back(a, b) { format!(" stroke-dasharray=\"{:.1} {:.1}\"", 6.0 + 2.0 * w, 4.0 + 1.5 * w) } else { String::new() },
            tip.0,
            tip.1,
            l.0,
            l.1,
            r.0,
            r.1,
        );
        if i < LABELLED {
            let m = cubic_mid(p);
            // Over a line going right, under one coming back (a pair's two counts apart).
            let y = if back(a, b) { m.1 + 14.0 } else { m.1 - 4.0 };
            let _ = write!(labels, "<text class=\"sp-edge-label\" x=\"{:.1}\" y=\"{y:.1}\">{}</text>", m.0, count(n));
        }
    }
    out.push_str(&labels);
    // Processes known by the same initial call (a pool, a ring) are told apart by their pids.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for &pid in &g.nodes {
        *seen.entry(label(names, g, pid).0).or_default() += 1;
    }
    for (v, &pid) in g.nodes.iter().enumerate() {
        let (x, y) = centre(v);
        let (mut name, who) = label(names, g, pid);
        if seen[&name] > 1 && pid != OTHERS {
            name = format!("{} {}", pid_text(pid), name);
        }
        let (sent, received) = g.traffic[v];
        let _ = write!(
            out,
            "<g class=\"sp-fnode{}\" data-who=\"{}\"><title>{}\nsent {} · received {}</title><rect x=\"{:.1}\" y=\"{:.1}\" \
             width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\"/><text class=\"sp-fnode-name\" x=\"{x:.1}\" y=\"{:.1}\">{}</text>\
             <text class=\"sp-fnode-count\" x=\"{x:.1}\" y=\"{:.1}\">sent {} · recv {}</text></g>",
            if pid == OTHERS { " sp-others" } else { "" },
            Esc(&who),
            Esc(&who),
            count(sent),
            count(received),
            x - NODE_W / 2.0,
            y - NODE_H / 2.0,
            y - 3.0,
            Esc(&clip(&name, 24)),
            y + 12.0,
            count(sent),
            count(received),
        );
    }
    out.push_str("</svg></div>");
}

fn pairs_table(out: &mut String, rec: &Recording, g: &Graph, rate: &dyn Fn(u64) -> f64) {
    out.push_str(
        "<table class=\"sp-table\" id=\"sp-flow-pairs\"><caption>Busiest pairs</caption><thead><tr><th>From</th><th>To</th>\
         <th class=\"sp-num\">Messages</th><th class=\"sp-num\">Per observed second</th><th class=\"sp-num\">Share</th></tr>\
         </thead><tbody>",
    );
    for ((from, to), n) in g.pairs.iter().take(TABLE_ROWS) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"sp-num\">{}</td><td class=\"sp-num\">{:.1}</td><td class=\"sp-num\">{:.1}%</td></tr>",
            Esc(&rec.who(*from)),
            Esc(&rec.who(*to)),
            count(*n),
            rate(*n),
            *n as f64 * 100.0 / g.total.max(1) as f64
        );
    }
    out.push_str("</tbody></table>");
    if g.pairs.len() > TABLE_ROWS {
        let _ = write!(out, "<p class=\"sp-muted\">{} more pairs.</p>", count((g.pairs.len() - TABLE_ROWS) as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::layout;

    #[test]
    fn a_pipeline_runs_left_to_right() {
        // intake -> router -> 2 workers -> ledger, and the ledger answering the router.
        let edges = [(0, 1, 100), (1, 2, 50), (1, 3, 50), (2, 4, 50), (3, 4, 50), (4, 1, 5)];
        let l = layout(5, &edges);
        assert_eq!(l.layer, vec![0, 1, 2, 2, 3]);
        assert_eq!(l.layers, 4);
        assert_eq!(l.rows, 2);
        assert_ne!(l.row[2], l.row[3]);
    }

    #[test]
    fn cycles_and_self_sends_are_laid_out_the_same_every_time() {
        let edges = [(0, 1, 9), (1, 2, 8), (2, 0, 7), (1, 1, 3), (3, 3, 1)];
        let a = layout(4, &edges);
        let b = layout(4, &edges);
        assert_eq!((a.layer.clone(), a.row.clone()), (b.layer, b.row));
        assert_eq!(a.layer[0], 0);
        assert!(a.layer[1] > a.layer[0] && a.layer[2] > a.layer[1]);
    }
}
