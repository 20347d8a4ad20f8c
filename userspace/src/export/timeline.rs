//! A recording laid out as a timeline, once, for every timeline format (Perfetto's protobuf
//! trace, Chrome's JSON): the VM as a process named by its node; each scheduler thread a track
//! with the processes it ran (their schedule slices when the hook was attached, and who the
//! CPU samples found running otherwise); each Erlang process a track with its run slices,
//! collections, spawns and exits; an arrow for each message from the sender to the receiver;
//! counters for mailbox lengths and memory (the processes that held the most), the VM's
//! resident memory and its schedulers' CPU; findings as instants on the VM's track.

use std::collections::{BTreeMap, HashMap};

use crate::record::format::{Owner, What};
use crate::record::model::Recording;
use crate::record::select::Filter;

/// Message arrows drawn at most (a busy VM sends millions); the rest are counted.
pub const MAX_FLOWS: usize = 200_000;
/// Processes given mailbox and memory counters (those that held the most).
const COUNTED: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub enum TrackKind {
    /// A VM (one per timeline; a merged recording's, one per node), by its OS pid.
    Vm { os_pid: u32 },
    /// An OS thread of the VM.
    Thread { tid: u32 },
    /// An Erlang process.
    Process { pid: u64 },
    /// Values over time, in this unit.
    Counter { unit: &'static str },
}

#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    pub name: String,
    /// The track it is grouped under.
    pub parent: Option<u64>,
    pub kind: TrackKind,
}

#[derive(Debug, Clone)]
pub enum Item {
    Slice {
        track: u64,
        start: u64,
        end: u64,
        name: String,
        category: &'static str,
        args: Vec<(String, String)>,
    },
    Instant {
        track: u64,
        t: u64,
        name: String,
        category: &'static str,
        args: Vec<(String, String)>,
    },
    Counter {
        track: u64,
        t: u64,
        value: f64,
    },
    /// A message: an arrow from the sender's track at `t` to the receiver's at `t_end` (a
    /// local send arrives at once; one between nodes when the other node queues it).
    Flow {
        id: u64,
        from: u64,
        to: u64,
        t: u64,
        t_end: u64,
        name: String,
    },
}

impl Item {
    pub fn time(&self) -> u64 {
        match self {
            Item::Slice { start, .. } => *start,
            Item::Instant { t, .. } | Item::Counter { t, .. } | Item::Flow { t, .. } => *t,
        }
    }
}

pub struct Timeline {
    pub vm_pid: u32,
    pub vm_name: String,
    pub tracks: Vec<Track>,
    /// In time order.
    pub items: Vec<Item>,
    /// Messages past [`MAX_FLOWS`], not drawn.
    pub flows_dropped: u64,
}

struct Tracks {
    tracks: Vec<Track>,
    threads: HashMap<u32, u64>,
    sampled: HashMap<u32, u64>,
    processes: HashMap<u64, u64>,
}

impl Tracks {
    fn add(&mut self, name: String, parent: Option<u64>, kind: TrackKind) -> u64 {
        let id = self.tracks.len() as u64 + 1;
        self.tracks.push(Track { id, name, parent, kind });
        id
    }
}

/// What a thread is, from its samples' labels (`[scheduler 1: idle]` -> `scheduler 1`).
fn thread_names(r: &Recording) -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    for s in &r.samples {
        if names.contains_key(&s.tid) {
            continue;
        }
        if let Some((kind, n)) = s.scheduler {
            let kind = match kind {
                0 => "scheduler",
                1 => "dirty CPU scheduler",
                _ => "dirty I/O scheduler",
            };
            names.insert(s.tid, format!("{kind} {n}"));
        } else if let Owner::Thread(label) = s.owner {
            let label = r.name(label);
            if let Some(name) = label.strip_prefix('[').and_then(|l| l.split([':', ']']).next()) {
                names.insert(s.tid, name.to_owned());
            }
        }
    }
    names
}

pub fn build(r: &Recording, f: &Filter) -> Timeline {
    let meta = r.meta();
    let mut t = Tracks { tracks: Vec::new(), threads: HashMap::new(), sampled: HashMap::new(), processes: HashMap::new() };
    // One VM, or in a merged recording each node's; processes and threads go under theirs.
    let vms: Vec<&crate::record::format::VmMeta> =
        if meta.vms.is_empty() { vec![&meta.vm] } else { meta.vms.iter().map(|v| &v.vm).collect() };
    let vm_tracks: Vec<u64> = vms
        .iter()
        .map(|v| t.add(format!("{} (OTP {})", v.node, v.otp_release), None, TrackKind::Vm { os_pid: v.os_pid }))
        .collect();
    let vm = vm_tracks[0];
    let vm_of = |pid: u64| vm_tracks.get((pid >> crate::record::format::VM_SHIFT) as usize).copied().unwrap_or(vm);
    // A thread is its VM's: the VM of the processes seen on it.
    let mut thread_vm: HashMap<u32, u64> = HashMap::new();
    for (tid, pid) in r.events.iter().filter_map(|e| crate::record::select::involved(&e.what)[0].map(|p| (e.tid, p))).chain(
        r.samples.iter().filter_map(|s| match s.owner {
            Owner::Process(p) => Some((s.tid, p)),
            Owner::Thread(_) => None,
        }),
    ) {
        thread_vm.entry(tid).or_insert_with(|| vm_of(pid));
    }
    let names = thread_names(r);
    let thread = |t: &mut Tracks, tid: u32| -> u64 {
        if let Some(&id) = t.threads.get(&tid) {
            return id;
        }
        let name = names.get(&tid).cloned().unwrap_or_else(|| format!("thread {tid}"));
        let id = t.add(name, Some(thread_vm.get(&tid).copied().unwrap_or(vm)), TrackKind::Thread { tid });
        t.threads.insert(tid, id);
        id
    };
    let process = |t: &mut Tracks, pid: u64| -> u64 {
        if let Some(&id) = t.processes.get(&pid) {
            return id;
        }
        let id = t.add(r.who(pid), Some(vm_of(pid)), TrackKind::Process { pid });
        t.processes.insert(pid, id);
        id
    };
    let mut items = Vec::new();
    let mut flows = 0usize;
    let mut flows_dropped = 0u64;
    // Sends to other nodes not yet matched with their receive (time, sender's track), by
    // (node, pid, node, pid).
    type Pair = (String, String, String, String);
    let mut in_flight: HashMap<Pair, std::collections::VecDeque<(u64, u64)>> = HashMap::new();
    let mut pending_sends = 0usize;
    for (i, e) in r.events.iter().enumerate() {
        if !f.event(r, e.t, &e.what) {
            continue;
        }
        match e.what {
            What::Schedule { pid, run_ns, reductions } => {
                let start = e.t.saturating_sub(run_ns);
                let args = vec![("reductions".to_owned(), reductions.to_string())];
                let on_thread = thread(&mut t, e.tid);
                let on_process = process(&mut t, pid);
                items.push(Item::Slice { track: on_thread, start, end: e.t, name: r.who(pid), category: "schedule", args: args.clone() });
                items.push(Item::Slice { track: on_process, start, end: e.t, name: "running".into(), category: "schedule", args });
            }
            What::Gc { pid, duration_ns } => {
                let track = process(&mut t, pid);
                items.push(Item::Slice {
                    track,
                    start: e.t.saturating_sub(duration_ns),
                    end: e.t,
                    name: "garbage collection".into(),
                    category: "gc",
                    args: Vec::new(),
                });
            }
            What::Spawn { parent, child } => {
                let track = process(&mut t, parent.unwrap_or(child));
                items.push(Item::Instant { track, t: e.t, name: format!("spawn {}", r.who(child)), category: "spawn", args: Vec::new() });
            }
            What::Exit { pid } => {
                let track = process(&mut t, pid);
                items.push(Item::Instant { track, t: e.t, name: "exit".into(), category: "exit", args: Vec::new() });
            }
            // An instant on this side; in a merged recording that holds the other node too, the
            // k-th receive of a pair is its k-th send (Erlang keeps a pair's order): one arrow.
            What::DistSend { from, node, to } => {
                let track = process(&mut t, from);
                let name = format!("send to {} on {}", r.name(to), r.name(node));
                items.push(Item::Instant { track, t: e.t, name, category: "distribution", args: Vec::new() });
                if pending_sends < MAX_FLOWS {
                    pending_sends += 1;
                    let key = (r.node_of(from).to_owned(), r.pid(from), r.name(node).to_owned(), r.name(to).to_owned());
                    in_flight.entry(key).or_default().push_back((e.t, track));
                }
            }
            What::DistReceive { to, node, from } => {
                let track = process(&mut t, to);
                let name = format!("message from {} on {}", r.name(from), r.name(node));
                items.push(Item::Instant { track, t: e.t, name, category: "distribution", args: Vec::new() });
                let key = (r.name(node).to_owned(), r.name(from).to_owned(), r.node_of(to).to_owned(), r.pid(to));
                if let Some((sent, from_track)) = in_flight.get_mut(&key).and_then(|q| q.pop_front()) {
                    if flows >= MAX_FLOWS {
                        flows_dropped += 1;
                        continue;
                    }
                    flows += 1;
                    let name = format!("{} on {} -> {} on {}", key.1, key.0, key.3, key.2);
                    items.push(Item::Flow { id: i as u64 + 1, from: from_track, to: track, t: sent, t_end: e.t.max(sent + 1), name });
                }
            }
            What::Send { from, to } | What::SendToAlias { from, to } => {
                if flows >= MAX_FLOWS {
                    flows_dropped += 1;
                    continue;
                }
                flows += 1;
                let (from_track, to_track) = (process(&mut t, from), process(&mut t, to));
                items.push(Item::Flow {
                    id: i as u64 + 1,
                    from: from_track,
                    to: to_track,
                    t: e.t,
                    t_end: e.t + 1,
                    name: format!("{} -> {}", r.pid(from), r.pid(to)),
                });
            }
        }
    }

    // Who the CPU samples found on each scheduler: runs of samples of one process on one
    // thread become a slice (a sample stands for one sampling period), on a track of its own
    // beside the thread's exact slices.
    let frequency = meta.frequency.max(1);
    let period = 1_000_000_000 / frequency;
    let mut open: HashMap<u32, (u64, u64, u64, u64)> = HashMap::new(); // tid -> (pid, start, last, samples)
    let close = |t: &mut Tracks, items: &mut Vec<Item>, tid: u32, (pid, start, last, n): (u64, u64, u64, u64)| {
        let track = match t.sampled.get(&tid) {
            Some(&id) => id,
            None => {
                let name = format!("{} (sampled)", names.get(&tid).cloned().unwrap_or_else(|| format!("thread {tid}")));
                let id = t.add(name, Some(thread_vm.get(&tid).copied().unwrap_or(vm)), TrackKind::Thread { tid });
                t.sampled.insert(tid, id);
                id
            }
        };
        items.push(Item::Slice {
            track,
            start,
            end: last + period,
            name: r.who(pid),
            category: "sample",
            args: vec![("samples".into(), n.to_string())],
        });
    };
    for s in r.samples.iter().filter(|s| f.time(s.t)) {
        let pid = match s.owner {
            Owner::Process(p) if f.process(r, p) => Some(p),
            _ => None,
        };
        match (open.get_mut(&s.tid), pid) {
            (Some(run), Some(p)) if run.0 == p && s.t <= run.2 + 2 * period => {
                run.2 = s.t;
                run.3 += 1;
            }
            (_, pid) => {
                if let Some(run) = open.remove(&s.tid) {
                    close(&mut t, &mut items, s.tid, run);
                }
                if let Some(p) = pid {
                    open.insert(s.tid, (p, s.t, s.t, 1));
                }
            }
        }
    }
    let mut rest: Vec<(u32, (u64, u64, u64, u64))> = open.into_iter().collect();
    rest.sort_unstable();
    for (tid, run) in rest {
        close(&mut t, &mut items, tid, run);
    }

    // Mailboxes and memory of the processes that held the most.
    let mut peak: HashMap<u64, (u64, u64)> = HashMap::new();
    for table in r.tables.iter().filter(|x| f.time(x.t)) {
        for p in table.processes.iter().filter(|p| f.process(r, p.pid)) {
            let e = peak.entry(p.pid).or_default();
            e.0 = e.0.max(p.message_queue_len);
            e.1 = e.1.max(p.memory_bytes);
        }
    }
    let mut by_queue: Vec<(u64, (u64, u64))> = peak.into_iter().collect();
    by_queue.sort_by(|a, b| (b.1.0, b.1.1, a.0).cmp(&(a.1.0, a.1.1, b.0)));
    let mut by_memory = by_queue.clone();
    by_memory.sort_by(|a, b| (b.1.1, a.0).cmp(&(a.1.1, b.0)));
    let mut counted: Vec<u64> = by_queue.iter().take(COUNTED / 2).chain(by_memory.iter().take(COUNTED / 2)).map(|(p, _)| *p).collect();
    counted.sort_unstable();
    counted.dedup();
    for pid in counted {
        let parent = process(&mut t, pid);
        let queue = t.add(format!("mailbox {}", r.who(pid)), Some(parent), TrackKind::Counter { unit: "messages" });
        let memory = t.add(format!("memory {}", r.who(pid)), Some(parent), TrackKind::Counter { unit: "bytes" });
        for table in r.tables.iter().filter(|x| f.time(x.t)) {
            if let Some(p) = table.processes.iter().find(|p| p.pid == pid) {
                items.push(Item::Counter { track: queue, t: table.t, value: p.message_queue_len as f64 });
                items.push(Item::Counter { track: memory, t: table.t, value: p.memory_bytes as f64 });
            }
        }
    }
    // Each VM's memory and its schedulers' CPU (cores busy between reads).
    for (i, &vm) in vm_tracks.iter().enumerate() {
        let rss = t.add("resident memory".into(), Some(vm), TrackKind::Counter { unit: "bytes" });
        let cpu = t.add("scheduler CPU".into(), Some(vm), TrackKind::Counter { unit: "cores" });
        let mut last: Option<(u64, f64)> = None;
        for p in r.procs.iter().filter(|p| p.vm as usize == i && f.time(p.t)) {
            if let Some(bytes) = p.resident_bytes {
                items.push(Item::Counter { track: rss, t: p.t, value: bytes as f64 });
            }
            // Scheduler threads (normal, dirty CPU, dirty I/O); the VM's other threads apart.
            let total: f64 = p.cpu.iter().filter(|c| c.0 < 3).map(|c| c.2).sum();
            if let Some((t0, c0)) = last
                && p.t > t0
            {
                let cores = (total - c0) / ((p.t - t0) as f64 / 1e9);
                items.push(Item::Counter { track: cpu, t: p.t, value: cores.max(0.0) });
            }
            last = Some((p.t, total));
        }
    }
    // Findings, with their evidence.
    for finding in r.findings.iter().filter(|x| f.time(x.t)) {
        let j = &finding.json;
        let text = |k: &str| j[k].as_str().unwrap_or("").to_owned();
        let mut args = vec![("summary".to_owned(), text("summary")), ("state".to_owned(), text("state"))];
        for e in j["evidence"].as_array().into_iter().flatten() {
            args.push((e["what"].as_str().unwrap_or("?").to_owned(), e["value"].as_str().unwrap_or("").to_owned()));
        }
        items.push(Item::Instant {
            track: vm,
            t: finding.t,
            name: format!("{} ({})", text("kind"), text("state")),
            category: "finding",
            args,
        });
    }
    items.sort_by_key(Item::time);
    Timeline { vm_pid: meta.vm.os_pid, vm_name: t.tracks[0].name.clone(), tracks: t.tracks, items, flows_dropped }
}
