//! What the sources deliver, each stamped with the VM it is about and when it happened
//! (CLOCK_MONOTONIC nanoseconds, the clock the BPF programs use): per-event observations from
//! the probes, CPU samples made readable, and reads of the process table with /proc.

use std::collections::BTreeMap;
use std::sync::Arc;

use beam_probes::Capability;
use beam_probes::snapshot::Snapshot;

use crate::enrich::stack::SampleStack;
use crate::source::procstat::ThreadKind;

/// Which VM an observation is about: the OS pid of its beam.smp (host pid namespace). Every
/// observation carries it, for the sinks that keep several VMs apart (recordings, `--pid A
/// --pid B`), though the aggregation of one VM does not need to read it.
pub type VmId = u32;

/// Now, on the clock every stamp uses.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One per-event observation from the VM. Pids are raw pid terms; `beam_probes` decodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub vm: VmId,
    pub ts_ns: u64,
    /// The OS thread (scheduler) it happened on.
    pub tid: u32,
    pub what: What,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// `alias`: sent to an alias of `to` (OTP 24+), which is how calls get their replies.
    Send { from: u64, to: u64, alias: bool },
    Schedule { pid: u64, run_ns: u64, reductions: u64 },
    Gc { pid: u64, duration_ns: u64 },
    Spawn { parent: Option<u64>, child: u64, call: SpawnCall },
    Exit { pid: u64 },
    /// A message from `from` to a process of another node: `node` is that node's name (an atom
    /// term of this VM), `to` the pid as that node prints it.
    DistSend { from: u64, node: u64, to: RemotePid },
    /// A message to `to` from a process of another node.
    DistReceive { to: u64, node: u64, from: RemotePid },
}

/// What a process was spawned to run, as the spawn's probe read it: the call spawned and, when
/// its args carry another (proc_lib's wrapper: module, function and args as 3rd to 5th), that
/// one. `beam_probes::identity::spawned_call` tells which names the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SpawnCall {
    pub call: Option<AtomCall>,
    pub inner: Option<AtomCall>,
}

/// A module and function as atom indices of the VM, and an arity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtomCall {
    pub module: u32,
    pub function: u32,
    pub arity: u8,
}

impl AtomCall {
    /// From the probe's `module << 32 | function` and arity (`None` for the "not known" arity).
    pub fn from_probe(atoms: u64, arity: u32) -> Option<AtomCall> {
        let arity = u8::try_from(arity).ok().filter(|&a| a != u8::MAX)?;
        Some(AtomCall { module: (atoms >> 32) as u32, function: atoms as u32, arity })
    }
}

/// A pid of another node as that node prints it, `<0.N.S>`: N in the low 32 bits, S above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemotePid(pub u64);

impl std::fmt::Display for RemotePid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<0.{}.{}>", self.0 & 0xffff_ffff, self.0 >> 32)
    }
}

impl What {
    /// The capability that observes it.
    pub fn capability(&self) -> Capability {
        match self {
            What::Send { .. } => Capability::Send,
            What::Schedule { .. } => Capability::Schedule,
            What::Gc { .. } => Capability::Gc,
            What::Spawn { .. } => Capability::Spawn,
            What::Exit { .. } => Capability::Exit,
            What::DistSend { .. } | What::DistReceive { .. } => Capability::Distribution,
        }
    }
}

/// A CPU sample, made readable (owner and frames).
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Sample {
    pub vm: VmId,
    pub ts_ns: u64,
    pub tid: u32,
    pub stack: SampleStack,
}

/// The process table, read at one moment.
#[derive(Debug)]
#[allow(dead_code)]
pub struct TableRead {
    pub vm: VmId,
    pub ts_ns: u64,
    /// `None` when the table could not be read (the VM exiting, say).
    pub snapshot: Option<Snapshot>,
    /// The function each process of `snapshot` is in, in the same order (empty when the VM's
    /// code could not be named).
    pub current: Vec<Arc<str>>,
    /// Processes waiting for the reply to a call, and the processes they monitor (whom they
    /// wait on).
    pub waits: Vec<(u64, Vec<u64>)>,
    /// The ETS tables at the same moment (`None` when they could not be read).
    pub ets: Option<beam_probes::ets::EtsSnapshot>,
    /// The ports at the same moment, the fullest queues first (`None`: not read).
    pub ports: Option<beam_probes::ports::PortSnapshot>,
    /// Memory by kind at the same moment, as `erlang:memory()` groups it (`None`: not read).
    pub memory: Option<beam_probes::vm_memory::VmMemory>,
}

pub type SharedTableRead = Arc<TableRead>;

/// The VM's facts from /proc, read at one moment.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct ProcRead {
    pub vm: VmId,
    pub ts_ns: u64,
    /// CPU seconds of the VM's threads by kind and scheduler number.
    pub scheduler_cpu: BTreeMap<(ThreadKind, Option<u32>), f64>,
    pub resident_bytes: Option<u64>,
    /// Whether the VM was alive at the read.
    pub alive: bool,
    /// Processes and ports waiting in each normal scheduler's run queue (empty when unknown).
    pub run_queues: Vec<u32>,
}

/// The per-event hooks of some capabilities were attached (`open`) or detached: events of a
/// capability exist only while its hooks are attached (adaptive mode opens windows; trace mode
/// opens everything once at start).
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct WindowChange {
    pub vm: VmId,
    pub ts_ns: u64,
    pub capabilities: Vec<Capability>,
    pub open: bool,
}
