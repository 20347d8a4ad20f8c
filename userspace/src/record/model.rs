//! A recording read whole into memory, with its dictionaries resolved: what `replay`,
//! `export`, `report`, `diff`, `why` and `check` work from. Times are nanoseconds since the
//! recording started.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

use super::format::{Entry, Meta, Owner, ProcessRow, What};
use super::reader::Reader;

#[derive(Debug, Clone)]
pub struct Event {
    pub t: u64,
    pub tid: u32,
    pub what: What,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub t: u64,
    pub tid: u32,
    pub owner: Owner,
    pub frames: Vec<u32>,
    pub erlang_leaf: Option<u32>,
    pub native_leaf: Option<u32>,
    pub scheduler: Option<(u8, u32)>,
}

#[derive(Debug, Clone)]
pub struct Table {
    /// The VM (0; in a merged recording, its index in `Meta::vms`, from its pids' top bits).
    pub vm: u32,
    pub t: u64,
    pub processes: Vec<ProcessRow>,
    /// Processes waiting for a call's reply, and whom they monitor.
    pub waits: Vec<(u64, Vec<u64>)>,
}

#[derive(Debug, Clone)]
pub struct Proc {
    /// The VM (0; in a merged recording, its index in `Meta::vms`).
    pub vm: u32,
    pub t: u64,
    pub cpu: Vec<(u8, u32, f64)>,
    pub resident_bytes: Option<u64>,
    pub run_queues: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct Window {
    pub t: u64,
    pub capabilities: Vec<u8>,
    pub open: bool,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub t: u64,
    pub json: serde_json::Value,
}

/// The recording's own string ids.
#[derive(Default)]
struct Ids {
    texts: Vec<String>,
    by_text: HashMap<String, u32>,
}

impl Ids {
    fn intern(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.by_text.get(text) {
            return id;
        }
        let id = self.texts.len() as u32;
        self.texts.push(text.to_owned());
        self.by_text.insert(text.to_owned(), id);
        id
    }
}

/// A recording in memory.
#[derive(Debug, Default)]
pub struct Recording {
    pub meta: Option<Meta>,
    pub names: HashMap<u32, String>,
    pub pids: HashMap<u64, String>,
    pub events: Vec<Event>,
    pub samples: Vec<Sample>,
    pub tables: Vec<Table>,
    pub procs: Vec<Proc>,
    pub windows: Vec<Window>,
    pub findings: Vec<Finding>,
    /// Entries the recorder dropped.
    pub lost: u64,
    /// Damage met while reading: blocks skipped, or where the reading stopped (what is
    /// intact is here).
    pub damage: Vec<String>,
    /// The last time seen.
    pub end: u64,
    /// Who each process was, from the table reads (the latest read that saw it), else what
    /// its spawn ran.
    pub processes: HashMap<u64, ProcessInfo>,
    /// What each process seen spawning was spawned to run (its initial call).
    pub spawned: HashMap<u64, String>,
}

/// A process as the table reads knew it.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub name: Option<String>,
    pub label: Option<String>,
    pub initial_call: Option<String>,
    pub ancestor: Option<String>,
    /// One of OTP's own processes.
    pub system: bool,
}

impl ProcessInfo {
    /// Registered name, else label, else initial call.
    pub fn identity(&self) -> Option<&str> {
        self.name.as_deref().or(self.label.as_deref()).or(self.initial_call.as_deref())
    }
}

impl Recording {
    /// Reads `path` whole. Damage is reported in `damage`, not as an error: what is intact
    /// stays usable. A file that is not a recording at all is an error.
    pub fn open(path: &Path) -> Result<Recording> {
        let reader = Reader::open(path).with_context(|| format!("{}", path.display()))?;
        let start = reader.meta.started_monotonic_ns;
        let mut r = Recording { meta: Some(reader.meta.clone()), ..Recording::default() };
        let rel = |ts: u64| ts.saturating_sub(start);
        // A file's name ids hold until it defines them again (a new segment, a full interner):
        // each is mapped to this recording's own id as it is read.
        let mut ids = Ids::default();
        let mut file_ids: HashMap<u32, u32> = HashMap::new();
        let mut spawned = Vec::new();
        for entry in reader {
            let entry = match entry {
                Ok(e) => e,
                // The reader goes on past a damaged block when it can, and ends otherwise.
                Err(e) => {
                    r.damage.push(e.to_string());
                    continue;
                }
            };
            let mut id = |file_id: u32| *file_ids.entry(file_id).or_insert_with(|| ids.intern("?"));
            match entry {
                Entry::Name { id: file_id, text } => {
                    file_ids.insert(file_id, ids.intern(&text));
                }
                Entry::Pid { term, text } => {
                    r.pids.insert(term, text);
                }
                Entry::Event { ts, tid, what } => r.events.push(Event { t: rel(ts), tid, what }),
                Entry::Sample { ts, tid, owner, frames, erlang_leaf, native_leaf, scheduler, .. } => {
                    let owner = match owner {
                        Owner::Thread(label) => Owner::Thread(id(label)),
                        p => p,
                    };
                    let frames = frames.into_iter().map(&mut id).collect();
                    let (erlang_leaf, native_leaf) = (erlang_leaf.map(&mut id), native_leaf.map(&mut id));
                    r.samples.push(Sample { t: rel(ts), tid, owner, frames, erlang_leaf, native_leaf, scheduler })
                }
                Entry::Table { ts, mut processes, waits } => {
                    for p in &mut processes {
                        for field in [&mut p.name, &mut p.label, &mut p.initial_call, &mut p.ancestor, &mut p.current] {
                            *field = field.map(&mut id);
                        }
                        p.status = id(p.status);
                    }
                    let vm = processes.first().map_or(0, |p| (p.pid >> super::format::VM_SHIFT) as u32);
                    r.tables.push(Table { vm, t: rel(ts), processes, waits })
                }
                Entry::Proc { ts, cpu, resident_bytes, run_queues } => {
                    r.procs.push(Proc { vm: 0, t: rel(ts), cpu, resident_bytes, run_queues })
                }
                Entry::VmProc { vm, ts, cpu, resident_bytes, run_queues } => {
                    r.procs.push(Proc { vm, t: rel(ts), cpu, resident_bytes, run_queues })
                }
                Entry::Window { ts, capabilities, open } => r.windows.push(Window { t: rel(ts), capabilities, open }),
                Entry::Finding { ts, json } => {
                    let json = serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json));
                    r.findings.push(Finding { t: rel(ts), json })
                }
                Entry::Lost { entries, .. } => r.lost += entries,
                Entry::InitialCall { pid, call } => {
                    let call = id(call);
                    spawned.push((pid, call));
                }
            }
        }
        r.names = ids.texts.into_iter().enumerate().map(|(i, t)| (i as u32, t)).collect();
        // Sources drain on their own timers: sort by time.
        r.events.sort_by_key(|e| e.t);
        r.samples.sort_by_key(|s| s.t);
        r.tables.sort_by_key(|t| t.t);
        r.procs.sort_by_key(|p| p.t);
        r.windows.sort_by_key(|w| w.t);
        r.end = [r.events.last().map(|e| e.t), r.samples.last().map(|s| s.t), r.tables.last().map(|t| t.t), r.procs.last().map(|p| p.t)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
        let mut processes: HashMap<u64, ProcessInfo> = HashMap::new();
        for t in &r.tables {
            for p in &t.processes {
                let text = |id: Option<u32>| id.map(|id| r.name(id).to_owned());
                processes.insert(
                    p.pid,
                    ProcessInfo {
                        name: text(p.name),
                        label: text(p.label),
                        initial_call: text(p.initial_call),
                        ancestor: text(p.ancestor),
                        system: p.system,
                    },
                );
            }
        }
        // A process no table read saw (gone too soon) is what it was spawned to run.
        for (pid, call) in spawned {
            let call = r.name(call).to_owned();
            processes.entry(pid).or_insert_with(|| ProcessInfo { initial_call: Some(call.clone()), ..ProcessInfo::default() });
            r.spawned.insert(pid, call);
        }
        r.processes = processes;
        Ok(r)
    }

    pub fn meta(&self) -> &Meta {
        self.meta.as_ref().expect("a recording has its meta")
    }

    pub fn name(&self, id: u32) -> &str {
        self.names.get(&id).map(String::as_str).unwrap_or("?")
    }

    pub fn pid(&self, term: u64) -> String {
        self.pids.get(&term).cloned().unwrap_or_else(|| format!("{term:#x}"))
    }

    /// Who a process was, by the table reads.
    pub fn identity(&self, term: u64) -> Option<&str> {
        self.processes.get(&term).and_then(|p| p.identity())
    }

    /// `<0.80.0> (name)`, or the bare pid; in a merged recording, on which node.
    pub fn who(&self, term: u64) -> String {
        let merged = self.meta.as_ref().is_some_and(|m| !m.vms.is_empty());
        let on = if merged { format!(" on {}", self.node_of(term)) } else { String::new() };
        match self.identity(term) {
            Some(n) if !n.is_empty() => format!("{}{on} ({n})", self.pid(term)),
            _ => format!("{}{on}", self.pid(term)),
        }
    }

    /// The node a process was on: the recording's VM's, or in a merged recording the one its
    /// term names.
    pub fn node_of(&self, term: u64) -> &str {
        let m = self.meta();
        match m.vms.get((term >> super::format::VM_SHIFT) as usize) {
            Some(v) if !m.vms.is_empty() => &v.vm.node,
            _ => &m.vm.node,
        }
    }

    /// Whether a process was one of OTP's own (by the table reads that saw it).
    pub fn is_system(&self, term: u64) -> bool {
        self.processes.get(&term).is_some_and(|p| p.system)
    }

    /// The processes a user names: a pid (`<0.80.0>`), or a name, label, initial call or module
    /// that their identity contains.
    pub fn matching(&self, query: &str) -> Vec<u64> {
        let mut out: Vec<u64> = self.pids.iter().filter(|(_, text)| text.as_str() == query).map(|(t, _)| *t).collect();
        if out.is_empty() {
            let module = format!("{query}:");
            out = self
                .processes
                .iter()
                .filter(|(_, p)| {
                    [&p.name, &p.label, &p.initial_call].into_iter().flatten().any(|v| v == query || v.contains(query))
                        || p.initial_call.as_deref().is_some_and(|i| i.starts_with(&module))
                })
                .map(|(t, _)| *t)
                .collect();
        }
        out.sort_unstable();
        out
    }

    /// The table read at or before `t` (the first one when `t` precedes all).
    pub fn table_at(&self, t: u64) -> Option<&Table> {
        let i = self.tables.partition_point(|x| x.t <= t);
        self.tables.get(i.saturating_sub(1))
    }

    /// The same, of one VM of a merged recording.
    pub fn vm_table_at(&self, vm: u32, t: u64) -> Option<&Table> {
        let of_vm = self.tables.iter().filter(|x| x.vm == vm);
        let first = of_vm.clone().next();
        of_vm.take_while(|x| x.t <= t).last().or(first)
    }

    /// The VM of each thread of a merged recording, from the processes its samples and
    /// schedule events were for (thread ids are the host's, so unique across its VMs).
    pub fn thread_vms(&self) -> HashMap<u32, u32> {
        let vm = |pid: u64| (pid >> super::format::VM_SHIFT) as u32;
        let mut of = HashMap::new();
        for s in &self.samples {
            if let Owner::Process(p) = s.owner {
                of.entry(s.tid).or_insert(vm(p));
            }
        }
        for e in &self.events {
            if let What::Schedule { pid, .. } = e.what {
                of.entry(e.tid).or_insert(vm(pid));
            }
        }
        of
    }

    /// Seconds a capability's hooks were attached (`Capability::index`): its events exist only
    /// then (trace mode: the whole recording; sample mode: never).
    pub fn observed_seconds(&self, capability: u8) -> f64 {
        self.observed_seconds_between(capability, 0, self.end)
    }

    /// The same, within `[from, to]`.
    pub fn observed_seconds_between(&self, capability: u8, from: u64, to: u64) -> f64 {
        self.observed_spans(capability).iter().map(|&(a, b)| b.min(to).saturating_sub(a.max(from))).sum::<u64>() as f64 / 1e9
    }

    /// The spans `[start, end)` a capability's hooks were attached.
    pub fn observed_spans(&self, capability: u8) -> Vec<(u64, u64)> {
        let mut spans = Vec::new();
        let mut open: Option<u64> = None;
        for w in &self.windows {
            if !w.capabilities.contains(&capability) {
                continue;
            }
            match (w.open, open) {
                (true, None) => open = Some(w.t),
                (false, Some(start)) => {
                    spans.push((start, w.t));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(start) = open {
            spans.push((start, self.end));
        }
        spans
    }
}

/// Parses a time given as `12.5s`, `1m`, `250ms` or plain seconds.
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return (secs >= 0.0).then_some((secs * 1e9) as u64).ok_or_else(|| format!("{s:?} is before the start"));
    }
    // humantime does not take fractions ("12.5s"): seconds with a fraction are read by hand.
    if let Some(secs) = s.trim().strip_suffix('s').and_then(|v| v.parse::<f64>().ok()) {
        return Ok((secs.max(0.0) * 1e9) as u64);
    }
    humantime::parse_duration(s).map(|d| d.as_nanos() as u64).map_err(|e| format!("{s:?} is not a time ({e}): write 12.5s, 1m, 250ms"))
}
