//! A snapshot of the process table read from outside while the VM runs: for each process its
//! pid, registered name, identity (initial call, first ancestor, label), message queue length
//! (counted in the queues themselves, see [`crate::mailbox`]), heap and memory, reductions,
//! status and resume address, and whether it is one of OTP's own. Nothing is stopped; every
//! record is validated (its pid must be the pid of the slot it came from, sizes must be sane)
//! and torn records are skipped and counted. The work per snapshot is bounded by the table
//! size and batched (one syscall per 512 processes); what it reads beyond the `Process`
//! structs (queues, dictionaries) goes through a bounded page cache and a budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::builds::{BuildTable, ProcessStatusFlags};
use crate::error::Result;
use crate::identity::{self, DictIdentity, Mfa, Mfas};
use crate::mailbox::{self, WalkError};
use crate::memory::{PageCache, RemoteMemory};
use crate::proctab::ProcessTable;
use crate::remote_terms::TermReader;
use crate::terms::{Pid, PidDecoder};

/// Processes with no ancestors whose links are read per snapshot (a tree walk each), at most.
const LINKS_BUDGET: usize = 10_000;
/// Processes read per `process_vm_readv` call (each a separate iovec; IOV_MAX is 1024).
const BATCH: usize = 512;
/// Slots of the process table read per call.
const SLOT_CHUNK: u64 = 64 * 1024;
/// A queue or heap beyond these is a torn read, not a real process.
const MAX_QUEUE: u64 = 1 << 40;
const MAX_HEAP_WORDS: u64 = 1 << 44;
/// Queue elements walked per snapshot, all processes together (each one small read through
/// the page cache): past it, queue lengths come from the VM's counters.
const QUEUE_BUDGET: u64 = 20_000_000;
/// Bytes the cache keeps (4 MiB): enough for any one process's dictionary terms; a long
/// queue walks through it in order, so a small cache serves as well as a large one.
const CACHE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessStatus {
    Exiting,
    GarbageCollecting,
    Suspended,
    Running,
    Runnable,
    Waiting,
}

impl ProcessStatus {
    pub fn label(self) -> &'static str {
        match self {
            ProcessStatus::Exiting => "exiting",
            ProcessStatus::GarbageCollecting => "garbage_collecting",
            ProcessStatus::Suspended => "suspended",
            ProcessStatus::Running => "running",
            ProcessStatus::Runnable => "runnable",
            ProcessStatus::Waiting => "waiting",
        }
    }

    /// The status `erlang:process_info(P, status)` would report for these state flags, in the
    /// same order of precedence.
    pub fn from_state(state: u32, f: &ProcessStatusFlags) -> ProcessStatus {
        if state & (f.free | f.exiting) != 0 {
            ProcessStatus::Exiting
        } else if state & f.gc != 0 {
            ProcessStatus::GarbageCollecting
        } else if state & f.suspended != 0 {
            ProcessStatus::Suspended
        } else if state & f.running != 0 {
            ProcessStatus::Running
        } else if state & f.active != 0 {
            ProcessStatus::Runnable
        } else {
            ProcessStatus::Waiting
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessRecord {
    /// Raw pid term.
    #[serde(skip)]
    pub term: u64,
    pub pid: Pid,
    pub name: Option<String>,
    /// `$initial_call` when proc_lib set it, else the MFA the process was spawned with.
    pub initial_call: Option<Arc<str>>,
    /// The first of `$ancestors`: a pid or a registered name.
    pub ancestor: Option<String>,
    /// For a process with no ancestors: a supervisor it is linked to (a child started with a
    /// bare `spawn_link`), as Erlang prints its pid.
    pub linked_supervisor: Option<String>,
    /// `$process_label` (OTP 27+), rendered and shortened.
    pub label: Option<String>,
    /// One of OTP's own processes (see [`identity::is_otp`]).
    pub system: bool,
    /// Messages in its queues and in transit to it (see [`crate::mailbox`]).
    pub message_queue_len: u64,
    /// Whether the queues were walked; `false`: the length is the VM's counters' (the walk
    /// broke off or the snapshot's budget ran out).
    pub message_queue_exact: bool,
    /// Young + old heap + heap fragments, in words (`process_info(P, total_heap_size)` for an
    /// empty mailbox).
    pub total_heap_words: u64,
    /// Bytes as `process_info(P, memory)` counts them: the process struct, heaps, the data of
    /// queued messages held outside the heap, the dictionary (links and monitors excepted).
    pub memory_bytes: u64,
    pub reductions: u64,
    pub status: ProcessStatus,
    /// Where the process resumes (its instruction pointer into JIT code).
    #[serde(skip)]
    pub resume_address: u64,
    /// The function the VM says it is in, when it has set one (`Process.current`: a dirty
    /// NIF running); else `resume_address` tells.
    pub current: Option<Arc<str>>,
    #[serde(skip)]
    pub group_leader: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    pub processes: Vec<ProcessRecord>,
    /// Slots of the process table.
    pub slots: u64,
    /// Records skipped because they changed or vanished while being read.
    pub torn: u64,
    /// Processes whose queues could not be walked to the end (their length is the counters').
    pub queues_not_walked: u64,
    /// Memory lines read for queues and dictionaries.
    pub lines_read: u64,
    #[serde(skip)]
    pub elapsed: Duration,
}

/// The span of `Process` a record needs, from the first to the last field read.
fn record_span(t: &BuildTable) -> u64 {
    let p = &t.process;
    let words = [
        p.id, p.reg, p.heap_sz, p.old_heap, p.old_hend, p.mbuf_sz, p.i, p.reds, p.state, p.sig_qs_len,
        p.sig_qs_cont_len, p.sig_inq_len, p.sig_qs_first, p.sig_qs_cont, p.sig_inq_first, p.sig_inq_buffers,
        p.group_leader, p.dictionary, p.current, p.htop, p.arg_reg, p.heap, p.hend, p.abandoned_heap, p.psd,
    ];
    // u.initial is three words; arity may be narrower than a word but is read as one.
    words.into_iter().map(|o| o + 8).chain([p.initial + 24, p.arity + 8]).max().unwrap_or(0)
}

pub(crate) fn u64_at(buf: &[u8], off: u64) -> u64 {
    let o = off as usize;
    buf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).unwrap_or(0)
}

pub(crate) fn u16_at(buf: &[u8], off: u64) -> u16 {
    let o = off as usize;
    buf.get(o..o + 2).map(|b| u16::from_le_bytes(b.try_into().unwrap_or([0; 2]))).unwrap_or(0)
}

pub(crate) fn u32_at(buf: &[u8], off: u64) -> u32 {
    let o = off as usize;
    buf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))).unwrap_or(0)
}

/// Reads several remote ranges (address, length) back to back into one buffer, in as few
/// syscalls as the kernel allows; returns, per range, whether it was read completely
/// (process_vm_readv stops at the first range that faults).
pub(crate) fn read_many(mem: &RemoteMemory, ranges: &[(u64, usize)], buf: &mut [u8]) -> Vec<bool> {
    let mut ok = vec![false; ranges.len()];
    let offsets: Vec<usize> = ranges.iter().scan(0, |at, r| {
        let o = *at;
        *at += r.1;
        Some(o)
    }).collect();
    let mut start = 0;
    while start < ranges.len() {
        // IOV_MAX is 1024.
        let end = ranges.len().min(start + 1024);
        let local: Vec<libc::iovec> = (start..end)
            .map(|i| libc::iovec { iov_base: buf[offsets[i]..].as_mut_ptr().cast(), iov_len: ranges[i].1 })
            .collect();
        let remote: Vec<libc::iovec> = ranges[start..end]
            .iter()
            .map(|&(a, len)| libc::iovec { iov_base: a as *mut libc::c_void, iov_len: len })
            .collect();
        // SAFETY: every local iovec points into `buf` at a distinct, in-bounds slot of its
        // range's length (`offsets` are the running sums of the lengths).
        let n = unsafe {
            libc::process_vm_readv(
                mem.pid() as libc::pid_t,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        // Whole ranges read, from `start` on.
        let mut left = n.max(0) as usize;
        let mut i = start;
        while i < end && left >= ranges[i].1 {
            left -= ranges[i].1;
            ok[i] = true;
            i += 1;
        }
        // Skip the range that faulted (or was short) and go on with the next; a batch read
        // whole goes on with the next batch.
        start = if i == end { end } else { i + 1 };
    }
    ok
}

impl ProcessRecord {
    /// Who the process is, for people: its registered name, else its label, else its initial
    /// call (the way observer and etop name unregistered processes).
    pub fn identity(&self) -> Option<&str> {
        self.name.as_deref().or(self.label.as_deref()).or(self.initial_call.as_deref())
    }

    /// What the process is for, when it is a library process scope-probe knows.
    pub fn role(&self) -> Option<crate::roles::Role> {
        self.initial_call.as_deref().and_then(crate::roles::role)
    }
}

/// Bytes of a dictionary read ahead with its process: the header and its first 16 slots.
const DICT_AHEAD: u64 = 160;
/// Bytes of a young heap read ahead (where proc_lib's identity terms are): the used part, up
/// to this much.
const HEAP_AHEAD: u64 = 4096;

/// What a snapshot keeps while it reads, across processes.
struct Reading<'a, 't> {
    t: &'a BuildTable,
    table: &'a ProcessTable<'t>,
    pids: PidDecoder,
    cache: PageCache,
    budget: u64,
    names: HashMap<u64, Option<String>>,
    atoms: HashMap<u64, Option<String>>,
    mfas: Mfas,
    spawned: Vec<Option<Arc<Mfa>>>,
    dicts: Vec<DictIdentity>,
}

/// Takes a snapshot of every live process.
pub fn snapshot(table: &ProcessTable<'_>) -> Result<Snapshot> {
    let started = Instant::now();
    let t = table.build();
    let mem = table.memory();
    let (tab, max) = table.slots()?;
    let span = record_span(t);
    let mut snap = Snapshot { slots: u64::from(max), ..Default::default() };
    let mut reading = Reading {
        t,
        table,
        pids: table.pid_decoder()?,
        cache: PageCache::new(mem, CACHE_BYTES),
        budget: QUEUE_BUDGET,
        names: HashMap::new(),
        atoms: HashMap::new(),
        mfas: Mfas::default(),
        spawned: Vec::new(),
        dicts: Vec::new(),
    };
    let mut buf = vec![0u8; BATCH * span as usize];
    let mut addresses: Vec<u64> = Vec::new();

    let mut slot = 0u64;
    while slot < u64::from(max) {
        let n = SLOT_CHUNK.min(u64::from(max) - slot);
        let ptrs = mem.read_vec(tab + slot * 8, n as usize * 8, "process table")?;
        let live: Vec<(u64, u64)> = ptrs
            .chunks_exact(8)
            .enumerate()
            .map(|(i, c)| (slot + i as u64, u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
            .filter(|(_, p)| *p != 0)
            .collect();
        for batch in live.chunks(BATCH) {
            let addrs: Vec<(u64, usize)> = batch.iter().map(|(_, p)| (*p, span as usize)).collect();
            let ok = read_many(&mem, &addrs, &mut buf);
            let records: Vec<Option<ProcessRecord>> = batch
                .iter()
                .enumerate()
                .map(|(i, &(ix, _))| ok[i].then(|| decode(t, &reading.pids, &buf[i * span as usize..][..span as usize], ix)).flatten())
                .collect();
            // The dictionaries and young heaps of this batch in one syscall (most of what
            // identity reads is there), instead of a few small reads per process.
            let ahead: Vec<(usize, Vec<(u64, usize)>)> = records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_some())
                .filter_map(|(i, _)| {
                    let rec = &buf[i * span as usize..][..span as usize];
                    let dict = u64_at(rec, t.process.dictionary);
                    let (heap, htop) = (u64_at(rec, t.process.heap), u64_at(rec, t.process.htop));
                    (dict != 0).then(|| {
                        let heap_len = htop.saturating_sub(heap).min(HEAP_AHEAD) as usize;
                        (i, vec![(dict, DICT_AHEAD as usize), (heap, heap_len)])
                    })
                })
                .collect();
            let ranges: Vec<(u64, usize)> = ahead.iter().flat_map(|(_, r)| r.iter().copied()).filter(|r| r.1 > 0).collect();
            let mut ahead_buf = vec![0u8; ranges.iter().map(|r| r.1).sum()];
            let ahead_ok = read_many(&mem, &ranges, &mut ahead_buf);
            let mut regions: HashMap<usize, Vec<(u64, Vec<u8>)>> = HashMap::new();
            let (mut k, mut at) = (0, 0);
            for (i, wanted) in &ahead {
                for &(addr, len) in wanted.iter().filter(|r| r.1 > 0) {
                    if ahead_ok[k] {
                        regions.entry(*i).or_default().push((addr, ahead_buf[at..at + len].to_vec()));
                    }
                    at += len;
                    k += 1;
                }
            }
            for (i, record) in records.into_iter().enumerate() {
                let Some(r) = record else {
                    snap.torn += 1;
                    continue;
                };
                let rec = &buf[i * span as usize..][..span as usize];
                reading.cache.set_regions(regions.remove(&i).unwrap_or_default());
                let r = reading.complete(r, rec, batch[i].1, &mut snap);
                snap.processes.push(r);
                addresses.push(batch[i].1);
            }
            reading.cache.set_regions(Vec::new());
        }
        slot += n;
    }
    classify(t, &mut snap.processes, &reading.spawned, &reading.dicts);
    link_to_supervisors(t, &mem, &mut snap.processes, &addresses);
    snap.lines_read = reading.cache.reads;
    snap.elapsed = started.elapsed();
    Ok(snap)
}

impl Reading<'_, '_> {
    /// A decoded record with what takes more reads: its name, queues, identity and memory.
    fn complete(&mut self, mut r: ProcessRecord, rec: &[u8], addr: u64, snap: &mut Snapshot) -> ProcessRecord {
        let t = self.t;
        let p = &t.process;
        let reg = u64_at(rec, p.reg);
        if reg != 0 {
            let table = self.table;
            r.name = self.names.entry(reg).or_insert_with(|| table.reg_name(reg).ok()).clone();
        }
        let mem = self.table.memory();
        // The lists change while they are walked: a walk that breaks off is tried once more
        // with nothing cached.
        let walked = mailbox::walk(t, &mut self.cache, &mem, addr, rec, &mut self.budget).or_else(|e| match e {
            WalkError::Torn => {
                self.cache.clear();
                mailbox::walk(t, &mut self.cache, &mem, addr, rec, &mut self.budget)
            }
            WalkError::Budget => Err(e),
        });
        match walked {
            Ok(mb) => {
                r.message_queue_len = mb.messages;
                r.message_queue_exact = true;
                r.memory_bytes += mb.bytes;
            }
            Err(WalkError::Torn | WalkError::Budget) => snap.queues_not_walked += 1,
        }
        let mut reader =
            TermReader { t, cache: &mut self.cache, table: self.table, pids: &self.pids, atoms: &mut self.atoms };
        let current = u64_at(rec, p.current);
        if current != 0 && current.is_multiple_of(8) {
            let mut mfa = [0u8; 24];
            if reader.cache.read(current, &mut mfa).is_some() {
                let w = |i: usize| u64::from_le_bytes(mfa[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
                r.current = self.mfas.get(&mut reader, w(0), w(1), w(2)).map(|m| m.display.clone());
            }
        }
        let initial = |i: u64| u64_at(rec, p.initial + 8 * i);
        self.spawned.push(self.mfas.get(&mut reader, initial(0), initial(1), initial(2)));
        let dict = u64_at(rec, p.dictionary);
        let id = if dict == 0 { DictIdentity::default() } else { identity::read_dictionary(&mut reader, &mut self.mfas, dict) };
        if dict != 0 {
            let array = self.cache.u32(dict + t.proc_dict.array_size).map_or(0, u64::from);
            r.memory_bytes += t.proc_dict.size + array.saturating_sub(1) * 8;
        }
        r.memory_bytes += extra_memory(t, rec, addr);
        self.dicts.push(id);
        r
    }
}

/// Fills in identity and the OTP/user split, which needs every record: a fun-spawned
/// process is OTP's when its group leader is that of init, kernel_sup or sasl_sup.
fn classify(t: &BuildTable, procs: &mut [ProcessRecord], spawned: &[Option<Arc<Mfa>>], dicts: &[DictIdentity]) {
    let otp_leaders: std::collections::HashSet<u64> = procs
        .iter()
        .filter(|p| p.name.as_deref().is_some_and(|n| t.otp.group_leaders_of.contains(&n)))
        .map(|p| p.group_leader)
        .collect();
    for ((p, spawned), dict) in procs.iter_mut().zip(spawned).zip(dicts) {
        p.system = identity::is_otp(
            t,
            p.name.as_deref(),
            dict.initial_call.as_deref(),
            spawned.as_deref(),
            otp_leaders.contains(&p.group_leader),
        );
        p.initial_call = dict.initial_call.as_ref().or(spawned.as_ref()).map(|m| m.display.clone());
        p.ancestor = dict.ancestor.clone();
        p.label = dict.label.clone();
    }
}

/// Gives each process without ancestors (a bare `spawn_link` from a supervisor's start
/// function) the supervisor it is linked to, if any: the supervision tree's other source.
fn link_to_supervisors(t: &BuildTable, mem: &RemoteMemory, procs: &mut [ProcessRecord], addresses: &[u64]) {
    // Each supervisor with who started it: a process is not adopted by a supervisor it started
    // itself (an application master is linked to its top supervisor).
    let supervisors: HashMap<u64, (String, Option<String>)> = procs
        .iter()
        .filter(|p| p.initial_call.as_deref().is_some_and(crate::supervision::is_supervisor))
        .map(|p| (p.term, (p.pid.to_string(), p.ancestor.clone())))
        .collect();
    if supervisors.is_empty() {
        return;
    }
    let orphans = procs.iter().enumerate().filter(|(_, p)| p.ancestor.is_none() && !supervisors.contains_key(&p.term)).map(|(i, _)| i);
    let orphans: Vec<usize> = orphans.take(LINKS_BUDGET).collect();
    for i in orphans {
        let Some(linked) = crate::monitors::linked_processes(mem, t, addresses[i]) else { continue };
        let me = (procs[i].pid.to_string(), procs[i].name.clone());
        let started_by_me = |a: &Option<String>| a.as_ref().is_some_and(|a| *a == me.0 || me.1.as_ref() == Some(a));
        procs[i].linked_supervisor =
            linked.iter().filter_map(|l| supervisors.get(l)).find(|(_, ancestor)| !started_by_me(ancestor)).map(|(pid, _)| pid.clone());
    }
}

/// What else `process_info(P, memory)` counts beyond heaps and messages
/// (`erts_process_memory`): the struct itself, argument registers moved off the struct, an
/// abandoned heap, the process-specific data block. Links and monitors are not counted.
fn extra_memory(t: &BuildTable, rec: &[u8], addr: u64) -> u64 {
    let p = &t.process;
    let mut bytes = p.size;
    let arg_reg = u64_at(rec, p.arg_reg);
    if arg_reg != 0 && arg_reg != addr + p.def_arg_reg {
        let arity = u64_at(rec, p.arity) & if p.arity_bytes >= 8 { u64::MAX } else { (1 << (8 * p.arity_bytes)) - 1 };
        bytes += arity.min(255) * 8;
    }
    if u64_at(rec, p.abandoned_heap) != 0 {
        bytes += u64_at(rec, p.hend).saturating_sub(u64_at(rec, p.heap)).min(MAX_HEAP_WORDS * 8);
    }
    if u64_at(rec, p.psd) != 0 {
        bytes += p.psd_size;
    }
    bytes
}

/// Decodes one `Process` image read from table slot `ix`; `None` when it does not hold
/// together (the slot was freed or reused while we read).
fn decode(t: &BuildTable, pids: &PidDecoder, rec: &[u8], ix: u64) -> Option<ProcessRecord> {
    let p = &t.process;
    let term = u64_at(rec, p.id);
    let pid = pids.decode(term)?;
    if pids.table_index(term) != ix {
        return None;
    }
    // A build without the middle counter has 0 there: offset 0 is the pid term, not a count.
    let cont = if p.sig_qs_cont_len == 0 { 0 } else { u64_at(rec, p.sig_qs_cont_len) };
    let queue = u64_at(rec, p.sig_qs_len).checked_add(cont)?.checked_add(u64_at(rec, p.sig_inq_len))?;
    let old = u64_at(rec, p.old_hend).checked_sub(u64_at(rec, p.old_heap))? / 8;
    let heap = u64_at(rec, p.heap_sz).checked_add(old)?.checked_add(u64_at(rec, p.mbuf_sz))?;
    if queue > MAX_QUEUE || heap > MAX_HEAP_WORDS {
        return None;
    }
    Some(ProcessRecord {
        term,
        pid,
        name: None,
        initial_call: None,
        ancestor: None,
        linked_supervisor: None,
        label: None,
        system: false,
        message_queue_len: queue,
        message_queue_exact: false,
        total_heap_words: heap,
        memory_bytes: heap * 8,
        reductions: u64_at(rec, p.reds),
        status: ProcessStatus::from_state(u32_at(rec, p.state), &t.status_flags),
        resume_address: u64_at(rec, p.i),
        current: None,
        group_leader: u64_at(rec, p.group_leader),
    })
}
