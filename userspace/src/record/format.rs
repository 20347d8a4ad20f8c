//! The recording file format, version 1: self-describing and streamed.
//!
//! ```text
//! file   := header block*
//! header := "SCOPEREC" | version: u16 LE | meta length: u32 LE | meta (JSON, UTF-8)
//! block  := "BLK1" | raw length: u32 LE | packed length: u32 LE | CRC-32 of packed: u32 LE
//!           | packed (zstd of raw)
//! raw    := (entry length: u32 LE | entry (postcard))*
//! ```
//!
//! A block is written whole with one write, so a recorder killed midway leaves a file that
//! reads up to its last complete block. Everything a reader needs travels inside: the meta
//! (the VM, its node and build, the clock), the names of frames and processes (interned:
//! [`Entry::Name`], [`Entry::Pid`]) before the entries that use them.

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"SCOPEREC";
pub const BLOCK_MAGIC: &[u8; 4] = b"BLK1";
pub const VERSION: u16 = 1;
/// Bounds a reader holds every length to (a corrupt length must not make it allocate the
/// world).
pub const MAX_META: u32 = 1 << 20;
pub const MAX_BLOCK: u32 = 64 << 20;
pub const MAX_ENTRY: u32 = 16 << 20;

/// What a recording says about itself (the header's JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    /// "scope-probe recording": a file that says something else is not one.
    pub format: String,
    pub scope_probe: String,
    /// Wall time at the start (Unix seconds) and the monotonic clock then (ns): entries carry
    /// monotonic time; with these a reader puts them on the wall clock.
    pub started_unix: f64,
    pub started_monotonic_ns: u64,
    pub vm: VmMeta,
    pub mode: String,
    pub overhead_budget: f64,
    pub frequency: u64,
    /// The VM's functions that garbage-collect (samples in them are GC).
    #[serde(default)]
    pub gc_functions: Vec<String>,
    /// The recording host's boot (`/proc/sys/kernel/random/boot_id`): recordings of one boot
    /// share the monotonic clock, so `merge` aligns them exactly.
    #[serde(default)]
    pub boot_id: String,
    /// A merged recording (`scope-probe merge`): the VMs it holds, in order. A pid term's top
    /// bits ([`VM_SHIFT`]) say which (`vm` above is the first's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<MergedVm>,
    /// How a merged recording's clocks were aligned, and the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<String>,
}

/// Where a merged recording's pid terms keep the index of their VM (pid terms of 64-bit VMs
/// leave these bits clear).
pub const VM_SHIFT: u32 = 60;

/// One VM of a merged recording.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergedVm {
    pub vm: VmMeta,
    /// The recording it came from.
    pub file: String,
    /// When it started, after the earliest start of the merged ones.
    pub offset_ns: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmMeta {
    pub os_pid: u32,
    pub node: String,
    pub otp_release: String,
    pub erts_version: String,
    pub build: String,
}

/// One recorded thing. Times are CLOCK_MONOTONIC nanoseconds; strings travel once as
/// [`Entry::Name`] and are referred to by id afterwards; pids travel as the VM's terms, with
/// their text once as [`Entry::Pid`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Entry {
    /// An interned string: frame names, identities, thread states, functions.
    Name { id: u32, text: String },
    /// A pid term and how Erlang prints it.
    Pid { term: u64, text: String },
    /// A per-event observation.
    Event { ts: u64, tid: u32, what: What },
    /// A CPU sample: whom for and its frames (root first, as name ids).
    Sample {
        ts: u64,
        tid: u32,
        owner: Owner,
        frames: Vec<u32>,
        erlang_leaf: Option<u32>,
        native_leaf: Option<u32>,
        /// The scheduler the thread is: kind (0 normal, 1 dirty CPU, 2 dirty I/O) and number.
        scheduler: Option<(u8, u32)>,
        /// At work (running a process or port, or scheduling) rather than spinning or idle.
        working: bool,
    },
    /// A read of the process table, and the processes waiting for a call's reply with the
    /// processes they monitor (whom they wait on).
    Table { ts: u64, processes: Vec<ProcessRow>, waits: Vec<(u64, Vec<u64>)> },
    /// A read of /proc: CPU seconds per scheduler thread kind and number, memory, run queues.
    Proc { ts: u64, cpu: Vec<(u8, u32, f64)>, resident_bytes: Option<u64>, run_queues: Vec<u32> },
    /// The adaptive controller attached (`open`) or detached hooks of these capabilities
    /// (`Capability::index`): events of a capability exist only while it is open.
    Window { ts: u64, capabilities: Vec<u8>, open: bool },
    /// A finding changed state (the finding as `/api/findings` shows it, JSON).
    Finding { ts: u64, json: String },
    /// Entries the recorder had to drop (its queue was full), counted.
    Lost { ts: u64, entries: u64 },
    /// A read of /proc of VM `vm` of a merged recording (its index in [`Meta::vms`]).
    VmProc { vm: u32, ts: u64, cpu: Vec<(u8, u32, f64)>, resident_bytes: Option<u64>, run_queues: Vec<u32> },
    /// What a process was spawned to run (a name id), from its spawn's probe, just before that
    /// spawn's event: short-lived processes gone before any table read keep an identity. Last,
    /// so files written before it existed read the same.
    InitialCall { pid: u64, call: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum What {
    Send { from: u64, to: u64 },
    Schedule { pid: u64, run_ns: u64, reductions: u64 },
    Gc { pid: u64, duration_ns: u64 },
    Spawn { parent: Option<u64>, child: u64 },
    Exit { pid: u64 },
    /// To a process of another node: `node` and `to` (as that node prints the pid) are name
    /// ids.
    DistSend { from: u64, node: u32, to: u32 },
    /// From a process of another node.
    DistReceive { to: u64, node: u32, from: u32 },
    /// A send to an alias of `to` (OTP 24+: how calls get their answers). Last, so files
    /// written before it existed read the same.
    SendToAlias { from: u64, to: u64 },
}

impl What {
    /// Sender and receiver of a send, to a pid or to an alias.
    pub fn send(&self) -> Option<(u64, u64)> {
        match *self {
            What::Send { from, to } | What::SendToAlias { from, to } => Some((from, to)),
            _ => None,
        }
    }

    /// The capability that observes it (as the live events say theirs).
    pub fn capability(&self) -> beam_probes::Capability {
        use beam_probes::Capability;
        match self {
            What::Send { .. } | What::SendToAlias { .. } => Capability::Send,
            What::Schedule { .. } => Capability::Schedule,
            What::Gc { .. } => Capability::Gc,
            What::Spawn { .. } => Capability::Spawn,
            What::Exit { .. } => Capability::Exit,
            What::DistSend { .. } | What::DistReceive { .. } => Capability::Distribution,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Owner {
    Process(u64),
    /// What the thread was doing (a name id: `[scheduler 1: spin]`).
    Thread(u32),
}

/// A process as a table read saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRow {
    pub pid: u64,
    /// Registered name, `$process_label`, initial call and first ancestor (name ids).
    pub name: Option<u32>,
    pub label: Option<u32>,
    pub initial_call: Option<u32>,
    pub ancestor: Option<u32>,
    /// Where it is (name id).
    pub current: Option<u32>,
    pub message_queue_len: u64,
    pub memory_bytes: u64,
    pub heap_bytes: u64,
    pub reductions: u64,
    /// `process_info(P, status)` as a name id (`waiting`, `running`...).
    pub status: u32,
    /// One of OTP's own processes.
    pub system: bool,
}

/// Encodes one entry as it sits in a block: its length, then the entry.
pub fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    let body = postcard::to_allocvec(e).expect("entries always encode");
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
}

/// The header bytes for `meta`.
pub fn header(meta: &Meta) -> Vec<u8> {
    let json = serde_json::to_vec(meta).expect("meta always encodes");
    let mut out = Vec::with_capacity(14 + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// A block's bytes for `raw` (encoded entries).
pub fn block(raw: &[u8]) -> Vec<u8> {
    let packed = zstd::bulk::compress(raw, 3).expect("compressing into memory");
    let mut out = Vec::with_capacity(16 + packed.len());
    out.extend_from_slice(BLOCK_MAGIC);
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&packed).to_le_bytes());
    out.extend_from_slice(&packed);
    out
}
