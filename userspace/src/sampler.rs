//! The CPU sampler (ebpf/profile.bpf.c): a software cpu-clock perf event per online CPU at the
//! chosen frequency, filtered in the kernel to the VM's threads. Runs on its own thread (libbpf
//! objects stay on one thread) and hands samples over a bounded channel; what does not fit is
//! counted, never silently dropped.

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use beam_probes::BeamTarget;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, RingBufferBuilder};

use crate::bpf::sum_per_cpu;

pub mod profile {
    #![allow(clippy::all, unused_imports, dead_code, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/profile.skel.rs"));
}

use profile::{ProfileSkelBuilder, types};

/// One CPU sample of the VM, as the kernel took it. Time, thread and CPU are kept for the
/// timelines and recordings that consume samples besides the flame graph.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Sample {
    pub ts_ns: u64,
    pub tid: u32,
    pub cpu: u32,
    pub ip: u64,
    /// Pid term read through r13; only meaningful when `ip` is in JIT code.
    pub process: Option<u64>,
    pub in_kernel: bool,
    /// User frames, leaf first (the first is normally `ip`).
    pub stack: Vec<u64>,
}

impl Sample {
    fn decode(bytes: &[u8]) -> Option<Sample> {
        if bytes.len() < std::mem::size_of::<types::cpu_sample>() {
            return None;
        }
        // SAFETY: the record holds a `struct sample`, plain old data; unaligned read.
        let s: types::cpu_sample = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let n = s.frames.clamp(0, s.stack.len() as i32) as usize;
        Some(Sample {
            ts_ns: s.ts_ns,
            tid: s.tid,
            cpu: s.cpu,
            ip: s.ip,
            process: (s.process != 0).then_some(s.process),
            in_kernel: s.in_kernel != 0,
            stack: s.stack[..n].to_vec(),
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

const CHANNEL: usize = 65_536;

impl SamplerThread {
    /// Starts sampling `target` at `frequency` Hz per CPU; returns once the perf events are
    /// attached, with the channel the samples arrive on.
    pub fn start(target: &BeamTarget, frequency: u64) -> Result<(SamplerThread, Receiver<Sample>)> {
        let (tx, rx) = mpsc::sync_channel(CHANNEL);
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(SamplerStats::default());
        let cfg = (target.pid, target.table.process.id, target.table.pid.tag_mask, target.table.pid.tag);
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name("scope-probe-sampler".into())
                .spawn(move || run(cfg, frequency, tx, ready_tx, &stop, &stats))
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

fn run(
    (tgid, proc_id_offset, pid_tag_mask, pid_tag): (u32, u64, u64, u64),
    frequency: u64,
    tx: SyncSender<Sample>,
    ready: mpsc::Sender<Result<()>>,
    stop: &AtomicBool,
    stats: &SamplerStats,
) -> Result<()> {
    let attach = || -> Result<_> {
        let object = Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = ProfileSkelBuilder::default().open(object).context("opening the profile BPF object")?;
        let rodata = open.maps.rodata_data.as_deref_mut().context("profile BPF object has no .rodata")?;
        rodata.pcfg.tgid = tgid;
        rodata.pcfg.proc_id_offset = proc_id_offset;
        rodata.pcfg.pid_tag_mask = pid_tag_mask;
        rodata.pcfg.pid_tag = pid_tag;
        let skel = open.load().context("loading the profile BPF program")?;
        let mut links: Vec<(OwnedFd, Link)> = Vec::new();
        for cpu in online_cpus()? {
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
    while !stop.load(Ordering::Relaxed) {
        // Samples do not wake us one by one (see collector.rs): drain on a timer.
        let _ = ring.poll(Duration::from_millis(100));
        let _ = ring.consume();
        read_stats();
    }
    drop(links);
    let _ = ring.consume();
    read_stats();
    Ok(())
}
