//! The CPU sampler (ebpf/profile.bpf.c): a software cpu-clock perf event per online CPU at the
//! chosen frequency, filtered in the kernel to the VM's threads. Runs on its own thread (libbpf
//! objects stay on one thread) and hands samples over a bounded channel; what does not fit is
//! counted, never silently dropped.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use beam_probes::BeamTarget;
use beam_probes::builds::Register;
use beam_probes::threads::vm_threads;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, RingBufferBuilder};

use crate::source::bpf::sum_per_cpu;
use crate::source::skeleton::Owned;

pub mod profile {
    #![allow(clippy::all, unused_imports, dead_code, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/profile.skel.rs"));
}

use profile::{ProfileSkelBuilder, types};

/// One CPU sample of the VM, as the kernel took it (see ebpf/profile.bpf.c). Time and CPU are
/// kept for the timelines and recordings that consume samples besides the flame graph.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Sample {
    pub ts_ns: u64,
    pub tid: u32,
    pub cpu: u32,
    /// The thread's user registers.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Whether the thread is a scheduler whose data was read: then `process` and `port` say
    /// what it runs, and `sleep_flags` whether it waits for work.
    pub scheduler: bool,
    /// Pid term of the process the thread's scheduler runs.
    pub process: Option<u64>,
    /// Pid term read through the JIT's process register; only meaningful when `ip` is in
    /// JIT code (the cross-check, and the attribution on threads the sampler does not know).
    pub process_reg: Option<u64>,
    /// Port id term when the scheduler runs a port's tasks.
    pub port: Option<u64>,
    pub sleep_flags: u32,
    pub in_kernel: bool,
    /// User frames by frame pointers, leaf first (JIT frame pointers under +JPperf).
    pub stack: Vec<u64>,
    /// Kernel frames, leaf first (when the CPU was in the kernel).
    pub kstack: Vec<u64>,
    /// The top of the Erlang stack of the process, innermost word first.
    pub estack: Vec<u64>,
    /// Whether `estack` reaches the Erlang stack's bottom.
    pub estack_complete: bool,
    /// The native stack from `sp` up, for unwinding C frames.
    pub ustack: Box<[u8]>,
}

impl Sample {
    fn decode(bytes: &[u8]) -> Option<Sample> {
        if bytes.len() < std::mem::size_of::<types::cpu_sample>() {
            return None;
        }
        // SAFETY: the record holds a `struct cpu_sample`, plain old data; unaligned read.
        let s: types::cpu_sample = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let n = s.frames.clamp(0, s.stack.len() as i32) as usize;
        let kn = s.kframes.clamp(0, s.kstack.len() as i32) as usize;
        let en = (s.estack_words as usize).min(s.estack.len());
        let un = (s.ustack_bytes as usize).min(s.ustack.len());
        let some = |v: u64| (v != 0).then_some(v);
        Some(Sample {
            ts_ns: s.ts_ns,
            tid: s.tid,
            cpu: s.cpu,
            ip: s.ip,
            sp: s.sp,
            bp: s.bp,
            scheduler: s.scheduler != 0,
            process: some(s.process),
            process_reg: some(s.process_reg),
            port: some(s.port),
            sleep_flags: s.sleep_flags,
            in_kernel: s.in_kernel != 0,
            stack: s.stack[..n].to_vec(),
            kstack: s.kstack[..kn].to_vec(),
            estack: s.estack[..en].to_vec(),
            estack_complete: en > 0 && s.estack_addr + 8 * en as u64 >= s.estack_end,
            ustack: s.ustack[..un].into(),
        })
    }
}

/// Counters of the sampler, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct SamplerStats {
    /// Samples the kernel took of the VM's threads.
    pub taken: AtomicU64,
    /// Lost because the ring buffer was full.
    pub lost_ring_buffer: AtomicU64,
    /// Lost because the consumer fell behind (channel full).
    pub lost_channel: AtomicU64,
}

pub struct SamplerThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
    pub stats: Arc<SamplerStats>,
}

/// Samples waiting for the consumer (each carries up to ~10 KiB of stack).
const CHANNEL: usize = 4096;
/// How often the scheduler threads are listed again.
const THREADS_EVERY: Duration = Duration::from_secs(5);

impl SamplerThread {
    /// Starts sampling `target` at `frequency` Hz per CPU; returns once the perf events are
    /// attached, with the channel the samples arrive on.
    pub fn start(target: Arc<BeamTarget>, frequency: u64) -> Result<(SamplerThread, Receiver<Sample>)> {
        let (tx, rx) = mpsc::sync_channel(CHANNEL);
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(SamplerStats::default());
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name("scope-probe-sampler".into())
                .spawn(move || run(&target, frequency, tx, ready_tx, &stop, &stats))
                .context("starting the sampler thread")?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((SamplerThread { stop, thread: Some(thread), stats }, rx)),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => anyhow::bail!("the sampler thread ended before attaching"),
            },
        }
    }

    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => anyhow::bail!("the sampler thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for SamplerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn online_cpus() -> Result<Vec<i32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").context("reading online CPUs")?;
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (i32, i32) = (a.parse()?, b.parse()?);
        cpus.extend(a..=b);
    }
    Ok(cpus)
}

/// A software cpu-clock event on one CPU, sampling at `frequency` Hz.
fn open_cpu_clock(cpu: i32, frequency: u64) -> Result<OwnedFd> {
    let mut attr = libbpf_sys::perf_event_attr {
        type_: libbpf_sys::PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        config: libbpf_sys::PERF_COUNT_SW_CPU_CLOCK as u64,
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_freq = frequency;
    attr.set_freq(1);
    // SAFETY: perf_event_open with a fully initialised attr; pid -1 + cpu = every task there.
    let fd = unsafe {
        libc::syscall(libc::SYS_perf_event_open, &attr as *const _, -1, cpu, -1, libbpf_sys::PERF_FLAG_FD_CLOEXEC as libc::c_ulong)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("perf_event_open(cpu-clock) on CPU {cpu}"));
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The sample ring buffer's size: what the CPUs sample between two drains (every 100 ms),
/// eight times over, as a power of two of at least 1 MiB. Its pages count in scope-probe's
/// resident memory once written, so it is not made larger than the load needs.
fn ring_bytes(cpus: usize, frequency: u64) -> u32 {
    let per_drain = (cpus as u64 * frequency).div_ceil(10).max(1);
    let bytes = per_drain * std::mem::size_of::<types::cpu_sample>() as u64 * 8;
    bytes.clamp(1 << 20, 1 << 30).next_power_of_two() as u32
}

/// Offset of a user register in the kernel's `struct pt_regs` (x86-64, asm/ptrace.h).
fn pt_regs_offset(reg: Register) -> u64 {
    match reg {
        Register::Rbp => 32,
        Register::Rbx => 40,
        Register::R13 => 16,
        Register::Rsp => 152,
    }
}

fn run(
    target: &BeamTarget,
    frequency: u64,
    tx: SyncSender<Sample>,
    ready: mpsc::Sender<Result<()>>,
    stop: &AtomicBool,
    stats: &SamplerStats,
) -> Result<()> {
    let attach = || -> Result<_> {
        let t = target.table;
        let cpus = online_cpus()?;
        let skel = Owned::new(|object| {
            let mut open = ProfileSkelBuilder::default().open(object).context("opening the profile BPF object")?;
            let rodata = open.maps.rodata_data.as_deref_mut().context("profile BPF object has no .rodata")?;
            let c = &mut rodata.pcfg;
            c.tgid = target.pid;
            c.reg_offset = pt_regs_offset(t.jit.process_register);
            c.proc_id_offset = t.process.id;
            c.pid_tag_mask = t.pid.tag_mask;
            c.pid_tag = t.pid.tag;
            c.proc_htop = t.process.htop;
            c.proc_stop = t.process.stop;
            c.proc_hend = t.process.hend;
            c.esd_current_process = t.scheduler.current_process;
            c.esd_current_port = t.scheduler.current_port;
            c.esd_ssi = t.scheduler.ssi;
            c.ssi_flags = t.scheduler.ssi_flags;
            open.maps.samples.set_max_entries(ring_bytes(cpus.len(), frequency)).context("sizing the sample ring buffer")?;
            open.load().context("loading the profile BPF program")
        })?;
        let mut links: Vec<(OwnedFd, Link)> = Vec::new();
        for cpu in cpus {
            let fd = open_cpu_clock(cpu, frequency)?;
            let link = skel.progs.on_cpu_sample.attach_perf_event(fd.as_raw_fd()).context("attaching the sampler")?;
            links.push((fd, link));
        }
        Ok((skel, links))
    };
    let (skel, links) = match attach() {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let mut known = SchedulerMap::default();
    known.update(&skel.maps.sched_threads, target);
    let mut builder = RingBufferBuilder::new();
    builder.add(&skel.maps.samples, |data: &[u8]| {
        if let Some(s) = Sample::decode(data)
            && let Err(TrySendError::Full(_)) = tx.try_send(s) {
                stats.lost_channel.fetch_add(1, Ordering::Relaxed);
            }
        0
    })?;
    let ring = builder.build()?;
    let _ = ready.send(Ok(()));
    let read_stats = || {
        let sum = |id: types::profile_stat_id| sum_per_cpu(&skel.maps.profile_stats, id.0).unwrap_or(0);
        stats.taken.store(sum(types::profile_stat_id::PSTAT_SAMPLES), Ordering::Relaxed);
        stats.lost_ring_buffer.store(sum(types::profile_stat_id::PSTAT_LOST_RINGBUF), Ordering::Relaxed);
    };
    let mut listed = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Samples do not wake us one by one (see collector.rs): drain on a timer.
        let _ = ring.poll(Duration::from_millis(100));
        let _ = ring.consume();
        read_stats();
        if listed.elapsed() >= THREADS_EVERY {
            listed = Instant::now();
            known.update(&skel.maps.sched_threads, target);
        }
    }
    drop(links);
    let _ = ring.consume();
    read_stats();
    Ok(())
}

/// The scheduler threads the BPF program knows (`sched_threads`: thread id -> scheduler data).
#[derive(Default)]
struct SchedulerMap {
    entries: HashMap<u32, u64>,
}

impl SchedulerMap {
    /// Makes the map hold the VM's scheduler threads as they are now.
    fn update(&mut self, map: &dyn MapCore, target: &BeamTarget) {
        let now: HashMap<u32, u64> =
            vm_threads(target).into_iter().filter_map(|t| Some((t.tid, t.scheduler_data?))).collect();
        for tid in self.entries.keys().filter(|t| !now.contains_key(t)) {
            let _ = map.delete(&tid.to_ne_bytes());
        }
        for (tid, data) in &now {
            if self.entries.get(tid) != Some(data) {
                let value = types::sched_thread { data: *data };
                // SAFETY: sched_thread is plain old data; its bytes are what the map stores.
                let bytes = unsafe {
                    std::slice::from_raw_parts((&value as *const types::sched_thread).cast::<u8>(), std::mem::size_of_val(&value))
                };
                let _ = map.update(&tid.to_ne_bytes(), bytes, MapFlags::ANY);
            }
        }
        self.entries = now;
    }
}
