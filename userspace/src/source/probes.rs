//! The probe thread: owns the BPF programs (libbpf objects stay on one thread), drains the ring
//! buffer in batches into the fan-out, publishes the probes' health, and takes commands to
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

use crate::aggregate::health::Health;
use crate::event::{Event, RemotePid, VmId, What, WindowChange, now_ns};
use crate::pipeline::FanOut;
use crate::source::bpf::{MonitorProbes, monitor::types};

pub enum Command {
    Attach(Vec<Capability>),
    Detach(Vec<Capability>),
    Stop,
}

/// What was attached, for the attach message.
pub struct AttachReport {
    pub capabilities: Vec<Capability>,
    pub symbols: Vec<String>,
    pub plans: Vec<CapabilityPlan>,
}

/// Decodes one ring-buffer record (the shared `struct event` of ebpf/monitor.h); `None` for a
/// record of the wrong size or kind.
fn decode(vm: VmId, bytes: &[u8]) -> Option<Event> {
    if bytes.len() < std::mem::size_of::<types::event>() {
        return None;
    }
    // SAFETY: the record holds at least one `event`, a plain-old-data C struct; the read is
    // unaligned-safe.
    let e: types::event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let what = match types::event_kind(e.kind) {
        types::event_kind::EVENT_SEND => What::Send { from: e.a, to: e.b },
        types::event_kind::EVENT_SCHEDULE => What::Schedule { pid: e.a, run_ns: e.b, reductions: e.c },
        types::event_kind::EVENT_GC => What::Gc { pid: e.a, duration_ns: e.b },
        types::event_kind::EVENT_SPAWN => What::Spawn { parent: (e.a != 0).then_some(e.a), child: e.b },
        types::event_kind::EVENT_EXIT => What::Exit { pid: e.a },
        types::event_kind::EVENT_DIST_SEND => What::DistSend { from: e.a, node: e.b, to: RemotePid(e.c) },
        types::event_kind::EVENT_DIST_RECEIVE => What::DistReceive { to: e.a, node: e.b, from: RemotePid(e.c) },
        _ => return None,
    };
    Some(Event { vm, ts_ns: e.ts_ns, tid: e.tid, what })
}

pub struct ProbeThread {
    tx: Sender<Command>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// How long the thread waits for the ring buffer before it looks at its commands again: short
/// while hooks are attached (an adaptive window ends within this), longer when none is (a
/// window starts within this; the thread costs nothing meanwhile).
const POLL_ATTACHED: Duration = Duration::from_millis(10);
const POLL_IDLE: Duration = Duration::from_millis(50);
/// How often the probes' counters are published while hooks are attached (the overhead
/// controller watches the hits of an open window through them), and otherwise.
const STATS_ATTACHED: Duration = Duration::from_millis(100);
const STATS_IDLE: Duration = Duration::from_secs(1);

impl ProbeThread {
    /// Loads and attaches on a new thread; returns once the mode's hooks are attached (or
    /// failed, in which case nothing stays attached).
    pub fn start(
        target: Arc<BeamTarget>,
        hooks: Vec<ResolvedHook>,
        plans: Vec<CapabilityPlan>,
        initial: &'static [Capability],
        fanout: FanOut,
        health: Arc<Mutex<Health>>,
    ) -> Result<(ProbeThread, AttachReport)> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("scope-probe-bpf".into())
            .spawn(move || run(&target, hooks, plans, initial, &fanout, &health, rx, ready_tx))
            .context("starting the probe thread")?;
        match ready_rx.recv() {
            Ok(Ok(report)) => Ok((ProbeThread { tx, thread: Some(thread) }, report)),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(thread
                .join()
                .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("probe thread ended before attaching"))),
        }
    }

    /// A handle that can send commands from another thread.
    pub fn commands(&self) -> Sender<Command> {
        self.tx.clone()
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

#[allow(clippy::too_many_arguments)]
fn run(
    target: &BeamTarget,
    hooks: Vec<ResolvedHook>,
    plans: Vec<CapabilityPlan>,
    initial: &[Capability],
    fanout: &FanOut,
    health: &Mutex<Health>,
    rx: Receiver<Command>,
    ready: Sender<Result<AttachReport>>,
) -> Result<()> {
    let attach = || -> Result<MonitorProbes> {
        let probes = MonitorProbes::load(target, hooks, plans)?;
        if let Err(e) = probes.attach(initial) {
            // Never leave the VM half-instrumented.
            probes.detach_all();
            return Err(e);
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

    let vm = target.pid;
    let batch: Rc<RefCell<Vec<Event>>> = Rc::default();
    let undecodable = Rc::new(Cell::new(0u64));
    let mut builder = RingBufferBuilder::new();
    {
        let batch = batch.clone();
        let undecodable = undecodable.clone();
        builder.add(probes.events_map(), move |data: &[u8]| {
            match decode(vm, data) {
                Some(e) => batch.borrow_mut().push(e),
                None => undecodable.set(undecodable.get() + 1),
            }
            0
        })?;
    }
    let ring = builder.build().context("setting up the event ring buffer")?;
    let flush = || {
        let events = std::mem::take(&mut *batch.borrow_mut());
        fanout.events(&events);
    };
    let publish = || {
        let kernel = probes.kernel_stats().unwrap_or_default();
        let mut h = health.lock().unwrap_or_else(|e| e.into_inner());
        kernel.into_health(&mut h);
        h.lost.push(("undecodable", undecodable.get()));
        h.attached = probes.attached();
        h.plans = probes.plans();
    };
    // Health (attached hooks, their sources) is published before the caller hears we are
    // ready: the first scrape after attach must already see it.
    publish();
    let window = |capabilities: Vec<Capability>, open: bool, ts_ns: u64| {
        fanout.window(&WindowChange { vm, ts_ns, capabilities, open });
    };
    window(probes.attached(), true, now_ns());
    let _ = ready.send(Ok(AttachReport { capabilities: probes.attached(), symbols: probes.attached_symbols(), plans: probes.plans() }));
    let mut last_stats = Instant::now();
    loop {
        // The probes do not wake us per event (that costs the VM): poll sleeps until the ring is
        // half full or the timeout passes, then consume drains whatever is there.
        // EINTR (a signal) is not an error worth stopping for.
        let attached = !probes.attached().is_empty();
        let _ = ring.poll(if attached { POLL_ATTACHED } else { POLL_IDLE });
        let _ = ring.consume();
        flush();
        if last_stats.elapsed() >= if attached { STATS_ATTACHED } else { STATS_IDLE } {
            publish();
            last_stats = Instant::now();
        }
        // Every command waiting is carried out now: an attach or detach waits at most one poll.
        loop {
            match rx.try_recv() {
                Ok(Command::Attach(caps)) => {
                    let before = probes.attached();
                    if let Err(e) = probes.attach(&caps) {
                        eprintln!("scope-probe: warning: {e:#}");
                    }
                    window(probes.attached().into_iter().filter(|c| !before.contains(c)).collect(), true, now_ns());
                    let now = Instant::now();
                    let mut h = health.lock().unwrap_or_else(|e| e.into_inner());
                    for c in probes.attached().into_iter().filter(|c| caps.contains(c)) {
                        h.attached_at[c.index()] = Some(now);
                    }
                    drop(h);
                    publish();
                }
                Ok(Command::Detach(caps)) => {
                    // What the hooks delivered before they went is still in the ring.
                    let _ = ring.consume();
                    flush();
                    // The breakpoints go as the release starts; the grace period the kernel
                    // waits for after that costs the VM nothing.
                    // The window closes then, not when the release is done (~0.1 s later):
                    // counting that tail as observed read rates low.
                    let (now, ts_ns) = (Instant::now(), now_ns());
                    {
                        let mut h = health.lock().unwrap_or_else(|e| e.into_inner());
                        for c in &caps {
                            h.detached_at[c.index()] = Some(now);
                        }
                    }
                    let before = probes.attached();
                    probes.detach(&caps);
                    window(before.into_iter().filter(|c| caps.contains(c)).collect(), false, ts_ns);
                    publish();
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => {
                    // Detach first so no new events arrive, then take what is still in the buffer.
                    let (before, ts_ns) = (probes.attached(), now_ns());
                    probes.detach_all();
                    let _ = ring.consume();
                    flush();
                    window(before, false, ts_ns);
                    publish();
                    return Ok(());
                }
                Err(TryRecvError::Empty) => break,
            }
        }
    }
}
