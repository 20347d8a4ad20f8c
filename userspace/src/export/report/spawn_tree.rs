//! Who started whom, as a heat map: parents from the spawn events and, for processes started
//! before (or outside the hook's windows), the first ancestor the table reads found; each
//! process a cell coloured by a metric the page lets one choose (CPU samples, messages sent and
//! received, peak memory). Bounded: beyond a few children per parent the rest fold into one
//! "+k more" cell carrying their totals.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use beam_probes::Capability;

use super::Observed;
use super::html::{Esc, heat, heat_dark};
use crate::record::format::{Owner, What};
use crate::record::model::Recording;
use crate::record::select::Filter;
use crate::units::{at, bytes, count};

/// Children shown per parent (the rest fold into "+k more").
const MAX_CHILDREN: usize = 12;
/// Roots shown.
const MAX_ROOTS: usize = 40;
/// Cells drawn at most in all.
const MAX_CELLS: usize = 400;
/// Levels drawn at most (a process spawning the next, and so on, makes deep chains).
const MAX_DEPTH: usize = 24;

/// A process's own numbers, and its subtree's.
#[derive(Debug, Default, Clone, Copy)]
pub struct Metrics {
    pub cpu: u64,
    pub msgs: u64,
    pub mem: u64,
}

impl Metrics {
    fn add(&mut self, o: &Metrics) {
        self.cpu += o.cpu;
        self.msgs += o.msgs;
        self.mem = self.mem.max(o.mem);
    }
}

#[derive(Debug, Default)]
pub struct Tree {
    pub roots: Vec<u64>,
    pub children: HashMap<u64, Vec<u64>>,
    /// Parent of each process; the hidden ones (OTP's own) named apart.
    pub parent: HashMap<u64, u64>,
    pub hidden_parent: HashMap<u64, u64>,
    pub own: HashMap<u64, Metrics>,
    /// Processes in the subtree (itself included) and its totals (memory: the largest).
    pub size: HashMap<u64, usize>,
    pub total: HashMap<u64, Metrics>,
    pub spawned_at: HashMap<u64, u64>,
    pub exited: HashSet<u64>,
    /// Links drawn from spawn events and from ancestors.
    pub from_events: usize,
    pub from_ancestors: usize,
}

pub fn tree(rec: &Recording, f: &Filter) -> Tree {
    let mut t = Tree::default();
    let mut nodes: HashSet<u64> = HashSet::new();
    for table in rec.tables.iter().filter(|x| f.time(x.t)) {
        for p in &table.processes {
            nodes.insert(p.pid);
            let m = t.own.entry(p.pid).or_default();
            m.mem = m.mem.max(p.memory_bytes);
        }
    }
    let mut parent: HashMap<u64, u64> = HashMap::new();
    let mut by_ancestor: HashSet<u64> = HashSet::new();
    for e in rec.events.iter().filter(|e| f.time(e.t)) {
        match e.what {
            What::Spawn { parent: p, child } => {
                nodes.insert(child);
                t.spawned_at.entry(child).or_insert(e.t);
                if let Some(p) = p {
                    nodes.insert(p);
                    parent.insert(child, p);
                }
            }
            What::Exit { pid } => {
                t.exited.insert(pid);
            }
            What::Send { from, to } | What::SendToAlias { from, to } => {
                t.own.entry(from).or_default().msgs += 1;
                t.own.entry(to).or_default().msgs += 1;
            }
            _ => {}
        }
    }
    for s in rec.samples.iter().filter(|s| f.time(s.t)) {
        if let Owner::Process(pid) = s.owner {
            t.own.entry(pid).or_default().cpu += 1;
        }
    }
    // The first ancestor, a pid or a registered name, for processes no spawn event placed.
    let by_text: HashMap<&str, u64> = rec.pids.iter().map(|(term, text)| (text.as_str(), *term)).collect();
    let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for (pid, p) in &rec.processes {
        if let Some(n) = &p.name {
            let e = by_name.entry(n.as_str()).or_insert(*pid);
            *e = (*e).min(*pid);
        }
    }
    let mut sorted: Vec<u64> = nodes.iter().copied().collect();
    sorted.sort_unstable();
    for &pid in &sorted {
        if parent.contains_key(&pid) {
            continue;
        }
        let Some(a) = rec.processes.get(&pid).and_then(|p| p.ancestor.as_deref()) else { continue };
        let found = if a.starts_with('<') { by_text.get(a).copied() } else { by_name.get(a).copied() };
        if let Some(p) = found.filter(|p| *p != pid) {
            parent.insert(pid, p);
            by_ancestor.insert(pid);
        }
    }
    // Shown processes only: one whose parent is hidden is a root that says so.
    let shown: Vec<u64> = sorted.iter().copied().filter(|p| f.process(rec, *p)).collect();
    let shown_set: HashSet<u64> = shown.iter().copied().collect();
    for &pid in &shown {
        match parent.get(&pid) {
            Some(&p) if shown_set.contains(&p) => {
                t.parent.insert(pid, p);
            }
            Some(&p) => {
                t.hidden_parent.insert(pid, p);
            }
            None => {}
        }
    }
    // Cut cycles (reused pids, stale ancestors): walking up from a process must end. Each
    // process is walked once: a walk stops at one already done, and a walk that comes back to
    // itself cuts the link that closed the loop.
    let mut done: HashSet<u64> = HashSet::new();
    for &pid in &shown {
        let mut walk: Vec<u64> = Vec::new();
        let mut on_walk: HashSet<u64> = HashSet::new();
        let mut at = pid;
        loop {
            if done.contains(&at) {
                break;
            }
            walk.push(at);
            on_walk.insert(at);
            match t.parent.get(&at) {
                Some(&p) if on_walk.contains(&p) => {
                    t.parent.remove(&at);
                    break;
                }
                Some(&p) => at = p,
                None => break,
            }
        }
        done.extend(walk);
    }
    for &pid in &shown {
        match t.parent.get(&pid) {
            Some(&p) => {
                t.children.entry(p).or_default().push(pid);
                if by_ancestor.contains(&pid) {
                    t.from_ancestors += 1;
                } else {
                    t.from_events += 1;
                }
            }
            None => t.roots.push(pid),
        }
    }
    // Subtree sizes and totals, children before parents.
    let mut order = Vec::with_capacity(shown.len());
    let mut stack: Vec<u64> = t.roots.clone();
    while let Some(v) = stack.pop() {
        order.push(v);
        stack.extend(t.children.get(&v).into_iter().flatten().copied());
    }
    for &v in order.iter().rev() {
        let mut total = t.own.get(&v).copied().unwrap_or_default();
        let mut size = 1;
        for c in t.children.get(&v).into_iter().flatten() {
            total.add(&t.total[c]);
            size += t.size[c];
        }
        t.total.insert(v, total);
        t.size.insert(v, size);
    }
    let key = |p: &u64| {
        let total = t.total.get(p).copied().unwrap_or_default();
        (rec.identity(*p).is_none(), std::cmp::Reverse(t.size[p]), std::cmp::Reverse(total.cpu + total.msgs), *p)
    };
    let mut roots = t.roots.clone();
    roots.sort_by_key(key);
    let mut children = t.children.clone();
    for list in children.values_mut() {
        list.sort_by_key(key);
    }
    t.roots = roots;
    t.children = children;
    t
}

/// A cell to draw: a process, or the ones folded into "+k more".
struct Cell {
    depth: usize,
    who: String,
    parent: String,
    own: Metrics,
    title: String,
    more: usize,
    exited: bool,
}

pub fn section(out: &mut String, rec: &Recording, f: &Filter) {
    out.push_str("<section id=\"sp-spawn\"><h2>Spawn tree</h2>");
    let t = tree(rec, f);
    if t.roots.is_empty() {
        out.push_str("<p class=\"sp-none\">No process to show: no table read or spawn event in the span.</p></section>\n");
        return;
    }
    let seen = Observed::of(rec, Capability::Spawn.index() as u8, f.from, f.to);
    let span = (f.to - f.from) as f64 / 1e9;
    let _ = write!(
        out,
        "<p class=\"sp-note\">Parents come from spawn events ({} shown; the spawn hook was attached {:.1} s of {:.1} s) and, \
         for {} processes started before or outside those windows, from the first ancestor the table reads found (proc_lib's \
         <code>$ancestors</code>: supervisors, gen_servers, tasks). A process with neither is a root. Messages count only \
         while the send hook was attached; memory only for processes a table read saw.</p>",
        count(t.from_events as u64),
        seen.seconds,
        span,
        count(t.from_ancestors as u64),
    );
    let mut cells = Vec::new();
    let mut left = MAX_CELLS;
    collect(rec, &t, &t.roots, 0, MAX_ROOTS, None, &mut cells, &mut left);
    let max = cells.iter().fold(Metrics::default(), |mut m, c| {
        m.cpu = m.cpu.max(c.own.cpu);
        m.msgs = m.msgs.max(c.own.msgs);
        m.mem = m.mem.max(c.own.mem);
        m
    });
    let _ = write!(
        out,
        "<div class=\"sp-tree-bar\"><label>Colour by <select id=\"sp-tree-metric\"><option value=\"cpu\">CPU samples</option>\
         <option value=\"msgs\">Messages sent + received</option><option value=\"mem\">Peak memory</option></select></label>\
         <span class=\"sp-scale\"><span id=\"sp-tree-min\">0</span><span class=\"sp-ramp\"></span><span id=\"sp-tree-max\">{}</span>\
         </span><span class=\"sp-muted\">{} processes in {} trees</span></div><div id=\"sp-tree\" class=\"sp-tree\">",
        count(max.cpu),
        count(t.size.values().len() as u64),
        count(t.roots.len() as u64),
    );
    for c in &cells {
        let share = if max.cpu > 0 { c.own.cpu as f64 / max.cpu as f64 } else { 0.0 };
        let mem = if c.own.mem > 0 { bytes(c.own.mem) } else { "–".into() };
        let name = if c.more > 0 { format!("+{} more", count(c.more as u64)) } else { c.who.clone() };
        let _ = write!(
            out,
            "<div class=\"sp-tn{more}\" style=\"--d:{d}\" data-who=\"{who}\" data-parent=\"{parent}\" data-cpu=\"{cpu}\" \
             data-msgs=\"{msgs}\" data-mem=\"{memn}\" data-mem-text=\"{mem}\"><span class=\"sp-tn-cell\" style=\"background:{bg};\
             color:{fg}\" title=\"{title}\"><span class=\"sp-tn-name\">{name}{exited}</span><span class=\"sp-tn-val\">{val}</span>\
             </span></div>",
            more = if c.more > 0 { " sp-more" } else { "" },
            d = c.depth,
            who = Esc(&c.who),
            parent = Esc(&c.parent),
            cpu = c.own.cpu,
            msgs = c.own.msgs,
            memn = c.own.mem,
            mem = Esc(&mem),
            bg = heat(share),
            fg = if heat_dark(share) { "#fff" } else { "#222" },
            title = Esc(&c.title),
            name = Esc(&name),
            exited = if c.exited { " <span class=\"sp-tn-exit\">exited</span>" } else { "" },
            val = format_args!("{} samples", count(c.own.cpu)),
        );
    }
    out.push_str("</div></section>\n");
}

/// Cells for `list` (siblings, sorted) at `depth`, at most `limit` of them and `left` in all;
/// the rest folded into one.
#[allow(clippy::too_many_arguments)]
fn collect(
    rec: &Recording,
    t: &Tree,
    list: &[u64],
    depth: usize,
    limit: usize,
    parent: Option<u64>,
    cells: &mut Vec<Cell>,
    left: &mut usize,
) {
    let parent_who = parent.map(|p| rec.who(p)).unwrap_or_default();
    // "+1 more" would take the room of the one it folds; deeper than MAX_DEPTH all fold.
    let limit = if depth > MAX_DEPTH {
        0
    } else if list.len() == limit + 1 {
        limit + 1
    } else {
        limit
    };
    let mut shown = 0;
    for &pid in list {
        if shown >= limit || *left == 0 {
            break;
        }
        shown += 1;
        *left -= 1;
        let own = t.own.get(&pid).copied().unwrap_or_default();
        let total = t.total[&pid];
        let mut title = rec.who(pid);
        if let Some(at_t) = t.spawned_at.get(&pid) {
            let _ = write!(title, "\nspawned at {}", at(*at_t));
        }
        if let Some(h) = t.hidden_parent.get(&pid) {
            let _ = write!(title, "\nspawned by {} (hidden: OTP's own)", rec.who(*h));
        }
        if t.exited.contains(&pid) {
            title.push_str("\nexited while recording");
        }
        let _ = write!(
            title,
            "\nCPU samples {} · messages {} · peak memory {}",
            count(own.cpu),
            count(own.msgs),
            if own.mem > 0 { bytes(own.mem) } else { "not read".into() }
        );
        if t.size[&pid] > 1 {
            let _ = write!(
                title,
                "\nwith its {} descendants: CPU samples {} · messages {}",
                count(t.size[&pid] as u64 - 1),
                count(total.cpu),
                count(total.msgs)
            );
        }
        cells.push(Cell { depth, who: rec.who(pid), parent: parent_who.clone(), own, title, more: 0, exited: t.exited.contains(&pid) });
        if let Some(children) = t.children.get(&pid) {
            collect(rec, t, children, depth + 1, MAX_CHILDREN, Some(pid), cells, left);
        }
    }
    let rest = &list[shown..];
    if !rest.is_empty() {
        let mut own = Metrics::default();
        let mut processes = 0;
        let mut exited = 0;
        for p in rest {
            own.add(&t.total[p]);
            processes += t.size[p];
            exited += usize::from(t.exited.contains(p));
        }
        let title = format!(
            "{} more {} ({} processes with their descendants; {} exited while recording)\nCPU samples {} · messages {} · largest \
             peak memory {}",
            count(rest.len() as u64),
            if parent.is_some() { "children" } else { "roots" },
            count(processes as u64),
            count(exited as u64),
            count(own.cpu),
            count(own.msgs),
            if own.mem > 0 { bytes(own.mem) } else { "not read".into() }
        );
        cells.push(Cell { depth, who: String::new(), parent: parent_who, own, title, more: rest.len(), exited: false });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::format::ProcessRow;
    use crate::record::model::{Event, ProcessInfo};

    fn spawn(t: u64, parent: u64, child: u64) -> Event {
        Event { t, tid: 1, what: What::Spawn { parent: Some(parent), child } }
    }

    fn cells(rec: &Recording) -> (Tree, Vec<Cell>) {
        let f = Filter { from: 0, to: rec.end, pids: None, all: true };
        let t = tree(rec, &f);
        let mut cells = Vec::new();
        let mut left = MAX_CELLS;
        collect(rec, &t, &t.roots, 0, MAX_ROOTS, None, &mut cells, &mut left);
        (t, cells)
    }

    #[test]
    fn many_children_fold_into_one_cell_with_their_totals() {
        let mut rec = Recording { end: 100, ..Recording::default() };
        rec.events = (2..=21).map(|c| spawn(c, 1, c)).collect();
        rec.events.push(Event { t: 50, tid: 1, what: What::Send { from: 21, to: 1 } });
        let (t, cells) = cells(&rec);
        assert_eq!(t.roots, vec![1]);
        assert_eq!(cells.len(), 1 + MAX_CHILDREN + 1);
        let more = cells.last().unwrap();
        assert_eq!((more.depth, more.more), (1, 20 - MAX_CHILDREN));
        // The child that sent comes first among its equals; the root received it.
        assert_eq!(cells[1].own.msgs, 1);
        assert_eq!(cells[0].own.msgs, 1);
    }

    #[test]
    fn one_more_child_is_shown_rather_than_folded() {
        let mut rec = Recording { end: 100, ..Recording::default() };
        rec.events = (2..=(MAX_CHILDREN as u64 + 2)).map(|c| spawn(c, 1, c)).collect();
        let (_, cells) = cells(&rec);
        assert_eq!(cells.len(), 1 + MAX_CHILDREN + 1);
        assert!(cells.iter().all(|c| c.more == 0));
    }

    #[test]
    fn ancestors_that_loop_and_deep_chains_still_make_a_bounded_tree() {
        let mut rec = Recording { end: 100, ..Recording::default() };
        for (pid, ancestor) in [(30u64, "<0.31.0>"), (31, "<0.30.0>")] {
            rec.pids.insert(pid, format!("<0.{pid}.0>"));
            rec.processes.insert(pid, ProcessInfo { ancestor: Some(ancestor.into()), ..ProcessInfo::default() });
        }
        let row = |pid: u64| ProcessRow {
            pid,
            name: None,
            label: None,
            initial_call: None,
            ancestor: None,
            current: None,
            message_queue_len: 0,
            memory_bytes: 1000,
            heap_bytes: 0,
            reductions: 0,
            status: 0,
            system: false,
        };
        rec.tables.push(crate::record::model::Table { vm: 0, t: 1, processes: vec![row(30), row(31)], waits: Vec::new() });
        rec.events = (1..1000).map(|c| spawn(c, 1000 + c - 1, 1000 + c)).collect();
        let (t, cells) = cells(&rec);
        assert!(t.roots.contains(&1000));
        assert!(cells.len() <= MAX_DEPTH + 4, "{} cells", cells.len());
        assert!(
            cells.iter().any(|c| c.more > 0 && c.depth == MAX_DEPTH + 1),
            "{:?}",
            cells.iter().map(|c| (c.depth, c.more)).collect::<Vec<_>>()
        );
        // The loop is cut: 30 and 31 are both drawn, one under the other.
        let shown = |pid: &str| cells.iter().any(|c| c.who == pid);
        assert!(shown("<0.30.0>") && shown("<0.31.0>"));
    }
}
