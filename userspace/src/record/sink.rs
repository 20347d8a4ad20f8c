//! The recorder as a sink of the fan-out: what the sources observe becomes entries of the
//! recording, every string and pid written once per file before the entries that use it (a new
//! file, the next segment of the flight recorder, starts afresh, so each file reads on its own).
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use beam_probes::Capability;
use beam_probes::threads::SchedulerKind;

use super::format::{Entry, Owner, ProcessRow, What};
use super::writer::Writer;
use crate::enrich::stack;
use crate::event::{self, Event, ProcRead, Sample, SharedTableRead, WindowChange};
use crate::enrich::names::EventNames;
use crate::pipeline::Sink;
use crate::source::procstat::ThreadKind;

/// Strings and pids interned at most in a file; past it they are written again as they come.
const MAX_NAMES: usize = 1_000_000;
const MAX_PIDS: usize = 1_000_000;

pub struct Recorder {
    writer: Writer,
    names: Arc<dyn EventNames>,
    /// This file's interned strings and pids: a new file starts them again (each file, each
    /// flight-recorder segment, reads on its own and carries only what it uses).
    ids: HashMap<Arc<str>, u32>,
    pids: HashSet<u64>,
    /// Capabilities whose hooks are attached (a new file starts by saying so).
    open: Vec<Capability>,
}

impl Recorder {
    pub fn new(writer: Writer, names: Arc<dyn EventNames>) -> Recorder {
        Recorder { writer, names, ids: HashMap::new(), pids: HashSet::new(), open: Vec::new() }
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Writes what is queued and closes the file.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.writer.finish()
    }

    /// Continues in a new file, which starts by saying which hooks are attached now. Returns
    /// what to wait on: the caller waits without holding the recorder (sources keep publishing
    /// meanwhile).
    pub fn rotate(&mut self, path: &std::path::Path) -> anyhow::Result<super::writer::Rotation> {
        self.ids.clear();
        self.pids.clear();
        let mut first = Vec::new();
        if !self.open.is_empty() {
            first.push(Entry::Window { ts: event::now_ns(), capabilities: self.open.iter().map(|c| c.index() as u8).collect(), open: true });
        }
        self.writer.rotate(path, first)
    }

    /// Records a finding's change of state (the finding as `/api/findings` shows it).
    pub fn finding(&self, json: String) {
        self.writer.push(vec![Entry::Finding { ts: event::now_ns(), json }]);
    }

    fn name(&mut self, text: &str, out: &mut Vec<Entry>) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        // Bounded: past the limit the ids start over (a reader maps ids as they come).
        if self.ids.len() >= MAX_NAMES {
            self.ids.clear();
        }
        let id = self.ids.len() as u32;
        let text: Arc<str> = Arc::from(text);
        self.ids.insert(text.clone(), id);
        out.push(Entry::Name { id, text: text.to_string() });
        id
    }

    fn pid(&mut self, term: u64, out: &mut Vec<Entry>) -> u64 {
        if self.pids.len() >= MAX_PIDS {
            self.pids.clear();
        }
        if self.pids.insert(term) {
            out.push(Entry::Pid { term, text: self.names.pid(term) });
        }
        term
    }
}

fn thread_kind(k: ThreadKind) -> u8 {
    match k {
        ThreadKind::Normal => 0,
        ThreadKind::DirtyCpu => 1,
        ThreadKind::DirtyIo => 2,
        ThreadKind::Other => 3,
    }
}

impl Sink for Recorder {
    fn events(&mut self, batch: &[Event]) {
        let mut out = Vec::with_capacity(batch.len());
        for e in batch {
            let what = match e.what {
                event::What::Send { from, to, alias: false } => What::Send { from: self.pid(from, &mut out), to: self.pid(to, &mut out) },
                event::What::Send { from, to, alias: true } => {
                    What::SendToAlias { from: self.pid(from, &mut out), to: self.pid(to, &mut out) }
                }
                event::What::Schedule { pid, run_ns, reductions } => What::Schedule { pid: self.pid(pid, &mut out), run_ns, reductions },
                event::What::Gc { pid, duration_ns } => What::Gc { pid: self.pid(pid, &mut out), duration_ns },
                event::What::Spawn { parent, child, call } => {
                    let parent = parent.map(|p| self.pid(p, &mut out));
                    let child = self.pid(child, &mut out);
                    if let Some(text) = self.names.spawned_as(&call) {
                        let call = self.name(&text, &mut out);
                        out.push(Entry::InitialCall { pid: child, call });
                    }
                    What::Spawn { parent, child }
                }
                event::What::Exit { pid } => What::Exit { pid: self.pid(pid, &mut out) },
                event::What::DistSend { from, node, to } => {
                    let node = self.names.node(node);
                    What::DistSend { from: self.pid(from, &mut out), node: self.name(&node, &mut out), to: self.name(&to.to_string(), &mut out) }
                }
                event::What::DistReceive { to, node, from } => {
                    let node = self.names.node(node);
                    What::DistReceive { to: self.pid(to, &mut out), node: self.name(&node, &mut out), from: self.name(&from.to_string(), &mut out) }
                }
            };
            out.push(Entry::Event { ts: e.ts_ns, tid: e.tid, what });
        }
        self.writer.push(out);
    }

    fn sample(&mut self, s: &Sample) {
        let mut out = Vec::new();
        let owner = match &s.stack.owner {
            stack::Owner::Process(p) => Owner::Process(self.pid(*p, &mut out)),
            stack::Owner::Thread(label) => Owner::Thread(self.name(label, &mut out)),
        };
        let frames: Vec<u32> = s.stack.frames.iter().map(|f| self.name(f, &mut out)).collect();
        let erlang_leaf = s.stack.erlang_leaf.as_deref().map(|f| self.name(f, &mut out));
        let native_leaf = s.stack.native_leaf.as_deref().map(|f| self.name(f, &mut out));
        let scheduler = s.stack.scheduler.map(|(kind, n)| {
            let kind = match kind {
                SchedulerKind::Normal => 0,
                SchedulerKind::DirtyCpu => 1,
                SchedulerKind::DirtyIo => 2,
            };
            (kind, n)
        });
        out.push(Entry::Sample { ts: s.ts_ns, tid: s.tid, owner, frames, erlang_leaf, native_leaf, scheduler, working: s.stack.working });
        self.writer.push(out);
    }

    fn table(&mut self, read: &SharedTableRead) {
        let Some(snap) = &read.snapshot else { return };
        let mut out = Vec::new();
        let mut processes = Vec::with_capacity(snap.processes.len());
        for (i, p) in snap.processes.iter().enumerate() {
            let pid = self.pid(p.term, &mut out);
            let mut name = |v: Option<&str>| v.map(|v| self.name(v, &mut out));
            let (name, label, initial_call, ancestor) =
                (name(p.name.as_deref()), name(p.label.as_deref()), name(p.initial_call.as_deref()), name(p.ancestor.as_deref()));
            let current = read.current.get(i).map(|c| self.name(c, &mut out));
            let status = self.name(p.status.label(), &mut out);
            processes.push(ProcessRow {
                pid,
                name,
                label,
                initial_call,
                ancestor,
                current,
                message_queue_len: p.message_queue_len,
                memory_bytes: p.memory_bytes,
                heap_bytes: p.total_heap_words * 8,
                reductions: p.reductions,
                status,
                system: p.system,
            });
        }
        let waits = read.waits.iter().map(|(p, on)| (self.pid(*p, &mut out), on.iter().map(|o| self.pid(*o, &mut out)).collect())).collect();
        out.push(Entry::Table { ts: read.ts_ns, processes, waits });
        self.writer.push(out);
    }

    fn proc(&mut self, read: &ProcRead) {
        let cpu = read.scheduler_cpu.iter().map(|((k, n), s)| (thread_kind(*k), n.unwrap_or(0), *s)).collect();
        self.writer.push(vec![Entry::Proc {
            ts: read.ts_ns,
            cpu,
            resident_bytes: read.resident_bytes,
            run_queues: read.run_queues.clone(),
        }]);
    }

    fn window(&mut self, change: &WindowChange) {
        for c in &change.capabilities {
            if change.open && !self.open.contains(c) {
                self.open.push(*c);
            } else if !change.open {
                self.open.retain(|o| o != c);
            }
        }
        let capabilities = change.capabilities.iter().map(|c| c.index() as u8).collect();
        self.writer.push(vec![Entry::Window { ts: change.ts_ns, capabilities, open: change.open }]);
    }
}
