//! A snapshot of the process table read from outside while the VM runs: for each process its
//! pid, registered name, message queue length, heap size, reductions, status and resume
//! address. Nothing is stopped; every record is validated (its pid must be the pid of the slot
//! it came from, sizes must be sane) and torn records are skipped and counted. The work per
//! snapshot is bounded by the table size and batched (one syscall per 512 processes).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::builds::{BuildTable, ProcessStatusFlags};
use crate::error::Result;
use crate::memory::RemoteMemory;
use crate::proctab::ProcessTable;
use crate::terms::{Pid, PidDecoder};

/// Processes read per `process_vm_readv` call (each a separate iovec; IOV_MAX is 1024).
const BATCH: usize = 512;
/// Slots of the process table read per call.
const SLOT_CHUNK: u64 = 64 * 1024;
/// A queue or heap beyond these is a torn read, not a real process.
const MAX_QUEUE: u64 = 1 << 40;
const MAX_HEAP_WORDS: u64 = 1 << 44;

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
    pub message_queue_len: u64,
    /// Young + old heap + heap fragments, in words (`process_info(P, total_heap_size)`).
    pub total_heap_words: u64,
    pub reductions: u64,
    pub status: ProcessStatus,
    /// Where the process resumes (its instruction pointer into JIT code).
    #[serde(skip)]
    pub resume_address: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    pub processes: Vec<ProcessRecord>,
    /// Slots of the process table.
    pub slots: u64,
    /// Records skipped because they changed or vanished while being read.
    pub torn: u64,
    #[serde(skip)]
    pub elapsed: Duration,
}

/// The span of `Process` a record needs, from the first to the last field read.
fn record_span(t: &BuildTable) -> u64 {
    let p = &t.process;
    [p.id, p.reg, p.heap_sz, p.old_heap, p.old_hend, p.mbuf_sz, p.i, p.reds, p.state, p.sig_qs_len, p.sig_qs_cont_len, p.sig_inq_len]
        .into_iter()
        .max()
        .unwrap_or(0)
        + 8
}

fn u64_at(buf: &[u8], off: u64) -> u64 {
    let o = off as usize;
    buf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).unwrap_or(0)
}

fn u32_at(buf: &[u8], off: u64) -> u32 {
    let o = off as usize;
    buf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))).unwrap_or(0)
}

/// Reads several remote ranges into one buffer with one syscall; returns, per range, whether
/// it was read completely (process_vm_readv stops at the first range that faults).
fn read_many(mem: &RemoteMemory, addrs: &[u64], len: usize, buf: &mut [u8]) -> Vec<bool> {
    let mut ok = vec![false; addrs.len()];
    let mut start = 0;
    while start < addrs.len() {
        let local: Vec<libc::iovec> = (start..addrs.len())
            .map(|i| libc::iovec { iov_base: buf[i * len..].as_mut_ptr().cast(), iov_len: len })
            .collect();
        let remote: Vec<libc::iovec> =
            addrs[start..].iter().map(|&a| libc::iovec { iov_base: a as *mut libc::c_void, iov_len: len }).collect();
        // SAFETY: every local iovec points into `buf` at a distinct, in-bounds `len`-byte slot.
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
        let whole = if n <= 0 { 0 } else { n as usize / len };
        for flag in ok.iter_mut().skip(start).take(whole) {
            *flag = true;
        }
        // Skip the range that faulted (or was short) and go on with the next.
        start += whole + 1;
    }
    ok
}

/// Takes a snapshot of every live process.
pub fn snapshot(table: &ProcessTable<'_>) -> Result<Snapshot> {
    let started = Instant::now();
    let t = table.build();
    let mem = table.memory();
    let (tab, max) = table.slots()?;
    let pids = table.pid_decoder()?;
    let span = record_span(t);
    let mut snap = Snapshot { slots: u64::from(max), ..Default::default() };
    let mut names: HashMap<u64, Option<String>> = HashMap::new();
    let mut buf = vec![0u8; BATCH * span as usize];

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
            let addrs: Vec<u64> = batch.iter().map(|(_, p)| *p).collect();
            let ok = read_many(&mem, &addrs, span as usize, &mut buf);
            for (i, &(ix, _)) in batch.iter().enumerate() {
                let rec = &buf[i * span as usize..(i + 1) * span as usize];
                match ok[i].then(|| decode(t, &pids, rec, ix)).flatten() {
                    Some(mut r) => {
                        let reg = u64_at(rec, t.process.reg);
                        if reg != 0 {
                            r.name = names
                                .entry(reg)
                                .or_insert_with(|| table.reg_name(reg).ok())
                                .clone();
                        }
                        snap.processes.push(r);
                    }
                    None => snap.torn += 1,
                }
            }
        }
        slot += n;
    }
    snap.elapsed = started.elapsed();
    Ok(snap)
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
        message_queue_len: queue,
        total_heap_words: heap,
        reductions: u64_at(rec, p.reds),
        status: ProcessStatus::from_state(u32_at(rec, p.state), &t.status_flags),
        resume_address: u64_at(rec, p.i),
    })
}
