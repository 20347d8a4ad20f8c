//! The CPU sampler (ebpf/profile.bpf.c): a software cpu-clock perf event per online CPU at the
//! chosen frequency, filtered in the kernel to the threads of the VMs sampled (one sampler for
//! all of them). Runs on its own thread (libbpf objects stay on one thread) and hands each VM's
//! samples over a bounded channel of its own; what does not fit is counted, never silently
//! dropped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use beam_probes::BeamTarget;
use beam_probes::builds::Register;
use beam_probes::threads::vm_threads;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, RingBufferBuilder};

use crate::source::bpf::{bytes_of, per_cpu_counter, zeroed_per_cpu};
use crate::source::hub::{Hub, Hubs};
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
    /// The VM (its OS pid).
    pub tgid: u32,
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
            tgid: s.tgid,
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

/// Counters of the sampler for one VM, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct SamplerStats {
    /// Samples the kernel took of the VM's threads.
    pub taken: AtomicU64,
    /// Lost because the ring buffer was full.
    pub lost_ring_buffer: AtomicU64,
    /// Lost because the consumer fell behind (channel full).
    pub lost_channel: AtomicU64,
}

/// One VM's subscription to the sampler: its samples arrive on the channel `start` returned
/// until it stops. One sampler (one BPF object, one perf event per CPU, one ring buffer) serves
/// every VM sampled at the same frequency; it starts with the first and ends with the last.
pub struct SamplerThread {
    hub: Option<Arc<Hub<HubCommand>>>,
    tgid: u32,
    pub stats: Arc<SamplerStats>,
}

/// Samples waiting for the consumer (each carries up to ~10 KiB of stack).
const CHANNEL: usize = 4096;
/// How often the scheduler threads are listed again.
const THREADS_EVERY: Duration = Duration::from_secs(5);

/// What the sampler's thread is asked to do.
enum HubCommand {
    Add(Subscriber, mpsc::Sender<Result<()>>),
    Remove(u32, mpsc::Sender<()>),
    Stop,
}

struct Subscriber {
    target: Arc<BeamTarget>,
    tx: SyncSender<Sample>,
    stats: Arc<SamplerStats>,
    known: SchedulerMap,
}

/// The samplers running, by frequency.
static HUBS: Hubs<u64, HubCommand> = Hubs::new();

impl SamplerThread {
    /// Starts sampling `target` at `frequency` Hz per CPU; returns once its samples are being
    /// taken, with the channel they arrive on.
    pub fn start(target: Arc<BeamTarget>, frequency: u64) -> Result<(SamplerThread, Receiver<Sample>)> {
        let (tx, rx) = mpsc::sync_channel(CHANNEL);
        let stats = Arc::new(SamplerStats::default());
        let tgid = target.pid;
        let sub = Subscriber { target, tx, stats: stats.clone(), known: SchedulerMap::default() };
        let (hub, ()) = HUBS.join(
            frequency,
            || Hub::spawn("scope-probe-sampler", || HubCommand::Stop, move |rx, ready| run(frequency, rx, ready)),
            |hub| hub.request(|reply| HubCommand::Add(sub, reply)).unwrap_or_else(|| Err(anyhow::anyhow!("the sampler thread ended"))),
        )?;
        Ok((SamplerThread { hub: Some(hub), tgid, stats }, rx))
    }

    /// Stops sampling this VM (the samples taken are on the channel, which then ends).
    pub fn stop(mut self) -> Result<()> {
        self.leave()
    }

    fn leave(&mut self) -> Result<()> {
        let Some(hub) = self.hub.take() else { return Ok(()) };
        let tgid = self.tgid;
        HUBS.leave(&hub, |hub| {
            hub.request(|done| HubCommand::Remove(tgid, done));
        })
    }
}

impl Drop for SamplerThread {
    fn drop(&mut self) {
        let _ = self.leave();
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

/// The JIT's process register as the BPF program names it.
fn jit_register(reg: Register) -> u64 {
    let r = match reg {
        Register::R13 => types::jit_register::JIT_REG_R13,
        Register::Rbx => types::jit_register::JIT_REG_RBX,
        Register::Rbp => types::jit_register::JIT_REG_RBP,
        Register::Rsp => types::jit_register::JIT_REG_RSP,
    };
    r.0 as u64
}

/// Build facts the BPF program reads a VM's samples by (its entry in `vms`).
fn config(target: &BeamTarget) -> types::profile_config {
    let t = target.table;
    types::profile_config {
        jit_register: jit_register(t.jit.process_register),
        proc_id_offset: t.process.id,
        pid_tag_mask: t.pid.tag_mask,
        pid_tag: t.pid.tag,
        proc_htop: t.process.htop,
        proc_stop: t.process.stop,
        proc_hend: t.process.hend,
        esd_current_process: t.scheduler.current_process,
        esd_current_port: t.scheduler.current_port,
        esd_ssi: t.scheduler.ssi,
        ssi_flags: t.scheduler.ssi_flags,
    }
}

fn run(frequency: u64, commands: Receiver<HubCommand>, ready: mpsc::Sender<Result<()>>) -> Result<()> {
    let attach = || -> Result<_> {
        let cpus = online_cpus()?;
        let skel = Owned::new(|object| {
            let mut open = ProfileSkelBuilder::default().open(object).context("opening the profile BPF object")?;
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
    let subscribers: Rc<RefCell<HashMap<u32, Subscriber>>> = Rc::default();
    let mut builder = RingBufferBuilder::new();
    {
        let subscribers = subscribers.clone();
        builder.add(&skel.maps.samples, move |data: &[u8]| {
            if let Some(s) = Sample::decode(data)
                && let Some(sub) = subscribers.borrow().get(&s.tgid)
                && let Err(TrySendError::Full(_)) = sub.tx.try_send(s)
            {
                sub.stats.lost_channel.fetch_add(1, Ordering::Relaxed);
            }
            0
        })?;
    }
    let ring = builder.build()?;
    let _ = ready.send(Ok(()));
    let read_stats = |sub: &Subscriber| {
        let per_cpu = skel.maps.profile_stats.lookup_percpu(&sub.target.pid.to_ne_bytes(), MapFlags::ANY).ok().flatten().unwrap_or_default();
        let sum = |id: types::profile_stat_id| per_cpu_counter(&per_cpu, id.0 as usize);
        sub.stats.taken.store(sum(types::profile_stat_id::PSTAT_SAMPLES), Ordering::Relaxed);
        sub.stats.lost_ring_buffer.store(sum(types::profile_stat_id::PSTAT_LOST_RINGBUF), Ordering::Relaxed);
    };
    let mut listed = Instant::now();
    loop {
        // Samples do not wake us one by one (see collector.rs): drain on a timer.
        let _ = ring.poll(Duration::from_millis(100));
        let _ = ring.consume();
        subscribers.borrow().values().for_each(read_stats);
        if listed.elapsed() >= THREADS_EVERY {
            listed = Instant::now();
            for sub in subscribers.borrow_mut().values_mut() {
                sub.known.update(&skel.maps.sched_threads, &sub.target);
            }
        }
        loop {
            match commands.try_recv() {
                Ok(HubCommand::Add(mut sub, reply)) => {
                    let tgid = sub.target.pid;
                    let added = zeroed_per_cpu::<types::profile_counts>()
                        .and_then(|zero| Ok(skel.maps.profile_stats.update_percpu(&tgid.to_ne_bytes(), &zero, MapFlags::ANY)?))
                        .and_then(|_| Ok(skel.maps.vms.update(&tgid.to_ne_bytes(), bytes_of(&config(&sub.target)), MapFlags::ANY)?))
                        .with_context(|| format!("adding pid {tgid} to the sampler (it takes {} VMs)", skel.maps.vms.max_entries()));
                    if added.is_ok() {
                        sub.known.update(&skel.maps.sched_threads, &sub.target);
                        subscribers.borrow_mut().insert(tgid, sub);
                    }
                    let _ = reply.send(added);
                }
                Ok(HubCommand::Remove(tgid, done)) => {
                    // What it sampled before it left is still in the ring.
                    let _ = skel.maps.vms.delete(&tgid.to_ne_bytes());
                    let _ = ring.consume();
                    if let Some(mut sub) = subscribers.borrow_mut().remove(&tgid) {
                        read_stats(&sub);
                        sub.known.clear(&skel.maps.sched_threads);
                    }
                    let _ = skel.maps.profile_stats.delete(&tgid.to_ne_bytes());
                    let _ = done.send(());
                }
                Ok(HubCommand::Stop) | Err(TryRecvError::Disconnected) => {
                    drop(links);
                    return Ok(());
                }
                Err(TryRecvError::Empty) => break,
            }
        }
    }
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
                let _ = map.update(&tid.to_ne_bytes(), bytes_of(&types::sched_thread { data: *data }), MapFlags::ANY);
            }
        }
        self.entries = now;
    }

    /// Forgets the VM's threads (it is no longer sampled).
    fn clear(&mut self, map: &dyn MapCore) {
        for tid in std::mem::take(&mut self.entries).keys() {
            let _ = map.delete(&tid.to_ne_bytes());
        }
    }
}
