//! Who a process is, by pid, for views that meet pids one at a time (profiles, flame graph
//! roots): its registered name, else its label, else its initial call, read from a snapshot of
//! the process table taken when an unknown pid shows up (at most every few seconds), and
//! cached (bounded). A process gone before it was seen falls back to "".

use std::collections::HashMap;
use std::time::{Duration, Instant};

use beam_probes::BeamTarget;

const MAX_CACHED: usize = 50_000;
/// How often an unknown pid may cost a snapshot of the process table.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct NameCache {
    names: HashMap<u64, String>,
    last_snapshot: Option<Instant>,
}

impl NameCache {
    /// Who the process of a pid term is; "" when that is not known.
    pub fn name(&mut self, target: &BeamTarget, pid: u64) -> String {
        if let Some(n) = self.names.get(&pid) {
            return n.clone();
        }
        if self.last_snapshot.is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY) {
            self.last_snapshot = Some(Instant::now());
            if let Ok(snap) = beam_probes::snapshot::snapshot(&target.process_table()) {
                if self.names.len() + snap.processes.len() > MAX_CACHED {
                    self.names.clear();
                }
                for p in snap.processes.iter().take(MAX_CACHED) {
                    if let Some(id) = p.identity() {
                        self.names.insert(p.term, id.to_owned());
                    }
                }
                if let Some(n) = self.names.get(&pid) {
                    return n.clone();
                }
            }
        }
        self.registered_name(target, pid)
    }

    /// The registered name of a pid term, without a snapshot (for callers that took one
    /// already); "" when it has none.
    pub fn registered_name(&mut self, target: &BeamTarget, pid: u64) -> String {
        if let Some(n) = self.names.get(&pid) {
            return n.clone();
        }
        match target.process_table().registered_name(pid) {
            Ok(Some(name)) => {
                if self.names.len() >= MAX_CACHED {
                    self.names.clear();
                }
                self.names.insert(pid, name.clone());
                name
            }
            _ => String::new(),
        }
    }
}

/// Pid names for the exporters: who each process is by the latest process-table read (its
/// identity), else its registered name looked up now.
pub struct VmNames {
    target: std::sync::Arc<BeamTarget>,
    table: std::sync::Arc<std::sync::Mutex<crate::aggregate::table::TableState>>,
    inner: std::sync::Mutex<VmNamesCache>,
}

#[derive(Default)]
struct VmNamesCache {
    /// Identities of the read numbered `read` (TableState::reads).
    read: u64,
    identities: HashMap<u64, String>,
    /// The processes of the same read that have a role (few).
    roles: HashMap<u64, beam_probes::roles::Role>,
    registered: NameCache,
    /// Node names by atom: atoms live as long as the VM, and a VM talks to few nodes.
    nodes: HashMap<u64, String>,
    /// What spawns ran, by the probe's atoms: a VM spawns few kinds of process.
    spawned: HashMap<crate::event::SpawnCall, Option<std::sync::Arc<str>>>,
}

impl VmNames {
    pub fn new(
        target: std::sync::Arc<BeamTarget>,
        table: std::sync::Arc<std::sync::Mutex<crate::aggregate::table::TableState>>,
    ) -> VmNames {
        VmNames { target, table, inner: Default::default() }
    }
}

impl crate::export::PidNames for VmNames {
    fn pid(&self, term: u64) -> String {
        self.target.format_pid(term)
    }

    fn node(&self, atom: u64) -> String {
        let mut inner = crate::aggregate::lock(&self.inner);
        if let Some(n) = inner.nodes.get(&atom) {
            return n.clone();
        }
        let name = self.target.process_table().atom_text(atom).unwrap_or_else(|_| format!("unknown node (atom {atom:#x})"));
        if inner.nodes.len() < 10_000 {
            inner.nodes.insert(atom, name.clone());
        }
        name
    }

    fn name(&self, term: u64) -> String {
        let mut inner = self.latest();
        if let Some(n) = inner.identities.get(&term) {
            return n.clone();
        }
        inner.registered.registered_name(&self.target, term)
    }

    fn role(&self, term: u64) -> Option<beam_probes::roles::Role> {
        self.latest().roles.get(&term).copied()
    }

}

/// Names for the sinks that see events (the recorder, the call sink): the exporters' names,
/// and what a spawn ran, from the VM's atom indices in its event (exporters see names only).
pub trait EventNames: crate::export::PidNames {
    /// What a spawned process was spawned to run, as its initial call reads
    /// (`Module:function/arity`); `None` when the spawn's probe could not tell.
    fn spawned_as(&self, call: &crate::event::SpawnCall) -> Option<std::sync::Arc<str>>;
}

/// For the sinks that hold names (their state derives Debug).
impl std::fmt::Debug for dyn EventNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventNames")
    }
}

impl EventNames for VmNames {
    fn spawned_as(&self, call: &crate::event::SpawnCall) -> Option<std::sync::Arc<str>> {
        let mut inner = crate::aggregate::lock(&self.inner);
        if let Some(text) = inner.spawned.get(call) {
            return text.clone();
        }
        let atoms = self.target.table.atom;
        let table = self.target.process_table();
        let mfa = |c: &crate::event::AtomCall| {
            let text = |index: u32| table.atom_text(atoms.term(index.into())).ok();
            Some(beam_probes::identity::Mfa::new(text(c.module)?, text(c.function)?, c.arity.into()))
        };
        let outer = call.call.as_ref().and_then(mfa);
        let text = outer.map(|o| beam_probes::identity::spawned_call(o, call.inner.as_ref().and_then(mfa)).display);
        // Bounded; an atom that could not be read now is tried again next time.
        if inner.spawned.len() < MAX_SPAWN_KINDS && text.is_some() {
            inner.spawned.insert(*call, text.clone());
        }
        text
    }
}

/// Kinds of spawn whose names are kept.
const MAX_SPAWN_KINDS: usize = 10_000;

impl VmNames {
    /// The cache, brought up to the latest read of the process table.
    fn latest(&self) -> std::sync::MutexGuard<'_, VmNamesCache> {
        let mut inner = crate::aggregate::lock(&self.inner);
        let table = crate::aggregate::lock(&self.table);
        if table.reads != inner.read {
            inner.read = table.reads;
            let processes = || table.latest.iter().flat_map(|l| l.snapshot.iter()).flat_map(|s| &s.processes);
            inner.identities = processes().filter_map(|p| Some((p.term, p.identity()?.to_owned()))).collect();
            inner.roles = processes().filter_map(|p| Some((p.term, p.role()?))).collect();
        }
        drop(table);
        inner
    }
}
