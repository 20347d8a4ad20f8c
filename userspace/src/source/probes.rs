//! The probe thread: owns the BPF programs (libbpf objects stay on one thread), drains the ring
//! buffer into the aggregator in batches, publishes the kernel counters, and takes commands to
//! attach or detach hooks while running. Dropping out of its loop detaches everything.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use beam_probes::{BeamTarget, Capability, CapabilityPlan, ResolvedHook};
use libbpf_rs::RingBufferBuilder;

use crate::aggregate::counts::Aggregator;
use crate::source::bpf::{KernelStats, MonitorProbes};
use crate::aggregate::cpu::CpuWindow;
use crate::source::sampler::SamplerStats;
use crate::event::Event;
use crate::control::mode::Mode;

/// What the probe thread publishes about itself.
#[derive(Debug, Default, Clone)]
pub struct Health {
    pub kernel: KernelStats,
    pub attached: Vec<Capability>,
    /// The source of each capability (uprobe or USDT) and why.
    pub plans: Vec<CapabilityPlan>,
}

pub struct Shared {
    pub agg: Mutex<Aggregator>,
    pub health: Mutex<Health>,
    /// CPU samples over the last minute (empty when the sampler is off).
    pub cpu: Mutex<CpuWindow>,
    /// The sampler's loss counters, when it runs.
    pub sampler: Mutex<Option<Arc<SamplerStats>>>,
}

impl Shared {
    pub fn new(agg: Aggregator) -> Shared {
        Shared {
            agg: Mutex::new(agg),
            health: Mutex::new(Health::default()),
            cpu: Mutex::new(CpuWindow::default()),
            sampler: Mutex::new(None),
        }
    }
}

#[allow(dead_code)] // Attach/Detach are driven by the adaptive mode of a later issue.
pub enum Command {
    Attach(Capability),
    Detach(Capability),
    Stop,
}

/// What was attached, for the attach message.
pub struct AttachReport {
    pub capabilities: Vec<Capability>,
    pub symbols: Vec<String>,
    pub plans: Vec<CapabilityPlan>,
}

pub struct ProbeThread {
    tx: Sender<Command>,
    thread: Option<JoinHandle<Result<()>>>,
}

const POLL: Duration = Duration::from_millis(100);
const STATS_EVERY: Duration = Duration::from_millis(250);

impl ProbeThread {
    /// Loads and attaches on a new thread; returns once the mode's hooks are attached (or
    /// failed, in which case nothing stays attached).
    pub fn start(
        target: Arc<BeamTarget>,
        hooks: Vec<ResolvedHook>,
        plans: Vec<CapabilityPlan>,
        mode: Mode,
        shared: Arc<Shared>,
    ) -> Result<(ProbeThread, AttachReport)> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("scope-probe-bpf".into())
            .spawn(move || run(&target, hooks, plans, mode, &shared, rx, ready_tx))
            .context("starting the probe thread")?;
        match ready_rx.recv() {
            Ok(Ok(report)) => Ok((ProbeThread { tx, thread: Some(thread) }, report)),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(thread.join().map_err(|_| anyhow::anyhow!("probe thread panicked"))?.err().unwrap_or_else(
                || anyhow::anyhow!("probe thread ended before attaching"),
            )),
        }
    }

    #[allow(dead_code)]
    pub fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd);
    }

    /// Detaches everything and waits for the thread.
    pub fn stop(mut self) -> Result<()> {
        let _ = self.tx.send(Command::Stop);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(anyhow::anyhow!("probe thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for ProbeThread {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    target: &BeamTarget,
    hooks: Vec<ResolvedHook>,
    plans: Vec<CapabilityPlan>,
    mode: Mode,
    shared: &Shared,
    rx: Receiver<Command>,
    ready: Sender<Result<AttachReport>>,
) -> Result<()> {
    let attach = || -> Result<MonitorProbes> {
        let probes = MonitorProbes::load(target, hooks, plans)?;
        for &cap in mode.initial_capabilities() {
            if let Err(e) = probes.attach(cap) {
                // Never leave the VM half-instrumented.
                probes.detach_all();
                return Err(e);
            }
        }
        Ok(probes)
    };
    let probes = match attach() {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };

    let batch: Rc<RefCell<Vec<Event>>> = Rc::default();
    let undecodable = Rc::new(Cell::new(0u64));
    let mut builder = RingBufferBuilder::new();
    {
        let batch = batch.clone();
        let undecodable = undecodable.clone();
        builder.add(probes.events_map(), move |data: &[u8]| {
            match Event::decode(data) {
                Some(e) => batch.borrow_mut().push(e),
                None => undecodable.set(undecodable.get() + 1),
            }
            0
        })?;
    }
    let ring = builder.build().context("setting up the event ring buffer")?;
    let flush = || {
        let events = std::mem::take(&mut *batch.borrow_mut());
        let mut agg = shared.agg.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            agg.apply(e);
        }
        agg.undecodable = undecodable.get();
    };
    let publish = || {
        let kernel = probes.kernel_stats().unwrap_or_default();
        let mut h = shared.health.lock().unwrap_or_else(|e| e.into_inner());
        h.kernel = kernel;
        h.attached = probes.attached();
        h.plans = probes.plans();
    };
    // Health (attached hooks, their sources) is published before the caller hears we are
    // ready: the first scrape after attach must already see it.
    publish();
    let _ = ready.send(Ok(AttachReport {
        capabilities: probes.attached(),
        symbols: probes.attached_symbols(),
        plans: probes.plans(),
    }));
    let mut last_stats = Instant::now();
    loop {
        // The probes do not wake us per event (that costs the VM): poll sleeps until the ring is
        // half full or the timeout passes, then consume drains whatever is there.
        // EINTR (a signal) is not an error worth stopping for.
        let _ = ring.poll(POLL);
        let _ = ring.consume();
        flush();
        if last_stats.elapsed() >= STATS_EVERY {
            publish();
            last_stats = Instant::now();
        }
        match rx.try_recv() {
            Ok(Command::Attach(cap)) => {
                if let Err(e) = probes.attach(cap) {
                    eprintln!("scope-probe: warning: {e:#}");
                }
            }
            Ok(Command::Detach(cap)) => probes.detach(cap),
            Ok(Command::Stop) | Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {}
        }
    }
    // Detach first so no new events arrive, then take what is still in the buffer.
    probes.detach_all();
    let _ = ring.consume();
    flush();
    publish();
    drop(ring);
    Ok(())
}
