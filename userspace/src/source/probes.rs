//! The probe thread: owns the monitor's BPF programs, one set for every VM observed (libbpf
//! objects stay on one thread), drains the shared ring buffer in batches into each VM's
//! fan-out, publishes each VM's probe health, and takes commands to add and remove VMs and to
//! attach or detach their hooks while running.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use beam_probes::{BeamTarget, Capability, CapabilityPlan, ResolvedHook};
use libbpf_rs::RingBufferBuilder;

use crate::aggregate::health::Health;
use crate::event::{AtomCall, Event, RemotePid, SpawnCall, VmId, What, WindowChange, now_ns};
use crate::pipeline::FanOut;
use crate::source::bpf::{MonitorObject, MonitorProbes, load_monitor, monitor::types};
use crate::source::hub::{Hub, Hubs};

/// What the overhead controller asks of one VM's hooks.
pub enum Command {
    Attach(Vec<Capability>),
    Detach(Vec<Capability>),
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
        types::event_kind::EVENT_SEND => What::Send { from: e.a, to: e.b, alias: e.c == 1 },
        types::event_kind::EVENT_SCHEDULE => What::Schedule { pid: e.a, run_ns: e.b, reductions: e.c },
        types::event_kind::EVENT_GC => What::Gc { pid: e.a, duration_ns: e.b },
        types::event_kind::EVENT_SPAWN => What::Spawn {
            parent: (e.a != 0).then_some(e.a),
            child: e.b,
            call: SpawnCall { call: AtomCall::from_probe(e.c, e.arities & 0xff), inner: AtomCall::from_probe(e.d, (e.arities >> 8) & 0xff) },
        },
        types::event_kind::EVENT_EXIT => What::Exit { pid: e.a },
        types::event_kind::EVENT_DIST_SEND => What::DistSend { from: e.a, node: e.b, to: RemotePid(e.c) },
        types::event_kind::EVENT_DIST_RECEIVE => What::DistReceive { to: e.a, node: e.b, from: RemotePid(e.c) },
        _ => return None,
    };
    Some(Event { vm, ts_ns: e.ts_ns, tid: e.tid, what })
}

/// One VM's probes, as the session holds them: its hooks live in the probe hub (one BPF
/// object, one ring buffer and one thread for every VM observed), which starts with the first
/// VM and ends with the last.
pub struct ProbeThread {
    hub: Option<Arc<Hub<HubCommand>>>,
    vm: VmId,
}

/// Sends one VM's attach and detach commands to the hub.
#[derive(Clone)]
pub struct ProbeCommands {
    vm: VmId,
    tx: Sender<HubCommand>,
}

impl ProbeCommands {
    pub fn send(&self, command: Command) -> Result<()> {
        self.tx.send(HubCommand::Vm(self.vm, command)).map_err(|_| anyhow::anyhow!("the probe thread has ended"))
    }
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

/// What the probe hub's thread is asked to do.
enum HubCommand {
    Add(Box<NewVm>, Sender<Result<AttachReport>>),
    Vm(VmId, Command),
    Remove(VmId, Sender<()>),
    Stop,
}

struct NewVm {
    target: Arc<BeamTarget>,
    hooks: Vec<ResolvedHook>,
    plans: Vec<CapabilityPlan>,
    initial: &'static [Capability],
    fanout: FanOut,
    health: Arc<Mutex<Health>>,
}

/// The hub, while one runs (one for all VMs; keyed by its events ring size, which the mode
/// sets and every VM of a run shares).
static HUB: Hubs<u32, HubCommand> = Hubs::new();

impl ProbeThread {
    /// Adds the VM to the probe hub (starting it for the first VM) and attaches the mode's
    /// hooks; returns once they are attached (or failed, in which case nothing stays attached).
    pub fn start(
        target: Arc<BeamTarget>,
        hooks: Vec<ResolvedHook>,
        plans: Vec<CapabilityPlan>,
        initial: &'static [Capability],
        fanout: FanOut,
        health: Arc<Mutex<Health>>,
        ring_bytes: u32,
    ) -> Result<(ProbeThread, AttachReport)> {
        let vm = target.pid;
        let new = Box::new(NewVm { target, hooks, plans, initial, fanout, health });
        let (hub, report) = HUB.join(
            ring_bytes,
            || Hub::spawn("scope-probe-bpf", || HubCommand::Stop, move |rx, ready| run(rx, ready, ring_bytes)),
            |hub| hub.request(|reply| HubCommand::Add(new, reply)).unwrap_or_else(|| Err(anyhow::anyhow!("the probe thread ended"))),
        )?;
        Ok((ProbeThread { hub: Some(hub), vm }, report))
    }

    /// A handle that can send this VM's commands from another thread.
    pub fn commands(&self) -> ProbeCommands {
        let tx = match &self.hub {
            Some(h) => h.sender(),
            None => mpsc::channel().0,
        };
        ProbeCommands { vm: self.vm, tx }
    }

    /// Detaches the VM's hooks, publishes what they delivered, and lets the VM go.
    pub fn stop(mut self) -> Result<()> {
        self.leave()
    }

    fn leave(&mut self) -> Result<()> {
        let Some(hub) = self.hub.take() else { return Ok(()) };
        let vm = self.vm;
        HUB.leave(&hub, |hub| {
            hub.request(|done| HubCommand::Remove(vm, done));
        })
    }
}

impl Drop for ProbeThread {
    fn drop(&mut self) {
        let _ = self.leave();
    }
}

/// One VM on the hub's thread.
struct VmProbes {
    probes: MonitorProbes,
    fanout: FanOut,
    health: Arc<Mutex<Health>>,
    /// Events drained from the ring, not yet handed to the fan-out.
    batch: Vec<Event>,
    /// Records of this VM whose kind was unknown.
    undecodable: u64,
}

impl VmProbes {
    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let events = std::mem::take(&mut self.batch);
            self.fanout.events(&events);
        }
    }

    /// `unreadable`: records of no VM at all (too short to say whose), told to every VM.
    fn publish(&self, unreadable: u64) {
        let kernel = self.probes.kernel_stats().unwrap_or_default();
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        kernel.into_health(&mut h);
        h.lost.push(("undecodable", self.undecodable + unreadable));
        h.attached = self.probes.attached();
        h.plans = self.probes.plans();
    }

    fn window(&self, capabilities: Vec<Capability>, open: bool, ts_ns: u64) {
        self.fanout.window(&WindowChange { vm: self.probes.vm(), ts_ns, capabilities, open });
    }
}

/// A ring-buffer record: its VM and what it says (`None` for an unknown kind).
fn decode_record(bytes: &[u8]) -> Option<(VmId, Option<Event>)> {
    if bytes.len() < std::mem::size_of::<types::event>() {
        return None;
    }
    // SAFETY: the record holds at least one `event`, plain old data; unaligned read.
    let e: types::event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Some((e.tgid, decode(e.tgid, bytes)))
}

fn run(rx: Receiver<HubCommand>, ready: Sender<Result<()>>, ring_bytes: u32) -> Result<()> {
    let skel = match load_monitor(ring_bytes) {
        Ok(s) => Rc::new(s),
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let vms: Rc<RefCell<HashMap<VmId, VmProbes>>> = Rc::default();
    let unreadable = Rc::new(Cell::new(0u64));
    let mut builder = RingBufferBuilder::new();
    {
        let (vms, unreadable) = (vms.clone(), unreadable.clone());
        builder.add(&skel.maps.events, move |data: &[u8]| {
            match decode_record(data) {
                Some((vm, event)) => {
                    if let Some(v) = vms.borrow_mut().get_mut(&vm) {
                        match event {
                            Some(e) => v.batch.push(e),
                            None => v.undecodable += 1,
                        }
                    }
                }
                None => unreadable.set(unreadable.get() + 1),
            }
            0
        })?;
    }
    let ring = match builder.build().context("setting up the event ring buffer") {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(()));
    let drain = || {
        let _ = ring.consume();
        vms.borrow_mut().values_mut().for_each(VmProbes::flush);
    };
    let mut last_stats = Instant::now();
    loop {
        // The probes do not wake us per event (that costs the VM): poll sleeps until the ring is
        // half full or the timeout passes, then consume drains whatever is there.
        // EINTR (a signal) is not an error worth stopping for.
        let attached = vms.borrow().values().any(|v| !v.probes.attached().is_empty());
        let _ = ring.poll(if attached { POLL_ATTACHED } else { POLL_IDLE });
        drain();
        if last_stats.elapsed() >= if attached { STATS_ATTACHED } else { STATS_IDLE } {
            vms.borrow().values().for_each(|v| v.publish(unreadable.get()));
            last_stats = Instant::now();
        }
        // Every command waiting is carried out now: an attach or detach waits at most one poll.
        loop {
            match rx.try_recv() {
                Ok(HubCommand::Add(new, reply)) => {
                    let vm = new.target.pid;
                    match add(&skel, *new) {
                        Ok(v) => {
                            // Health (attached hooks, their sources) is published before the
                            // caller hears we are ready: the first scrape must already see it.
                            v.publish(unreadable.get());
                            v.window(v.probes.attached(), true, now_ns());
                            let p = &v.probes;
                            let report = AttachReport { capabilities: p.attached(), symbols: p.attached_symbols(), plans: p.plans() };
                            vms.borrow_mut().insert(vm, v);
                            let _ = reply.send(Ok(report));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Ok(HubCommand::Vm(vm, Command::Attach(caps))) => {
                    let vms = vms.borrow();
                    let Some(v) = vms.get(&vm) else { continue };
                    let before = v.probes.attached();
                    if let Err(e) = v.probes.attach(&caps) {
                        eprintln!("scope-probe: warning: {e:#}");
                    }
                    v.window(v.probes.attached().into_iter().filter(|c| !before.contains(c)).collect(), true, now_ns());
                    let now = Instant::now();
                    let mut h = v.health.lock().unwrap_or_else(|e| e.into_inner());
                    for c in v.probes.attached().into_iter().filter(|c| caps.contains(c)) {
                        h.attached_at[c.index()] = Some(now);
                    }
                    drop(h);
                    v.publish(unreadable.get());
                }
                Ok(HubCommand::Vm(vm, Command::Detach(caps))) => {
                    if !vms.borrow().contains_key(&vm) {
                        continue;
                    }
                    // What the hooks delivered before they went is still in the ring.
                    drain();
                    let vms = vms.borrow();
                    let v = &vms[&vm];
                    // The breakpoints go as the release starts; the grace period the kernel
                    // waits for after that costs the VM nothing.
                    // The window closes then, not when the release is done (~0.1 s later):
                    // counting that tail as observed read rates low.
                    let (now, ts_ns) = (Instant::now(), now_ns());
                    {
                        let mut h = v.health.lock().unwrap_or_else(|e| e.into_inner());
                        for c in &caps {
                            h.detached_at[c.index()] = Some(now);
                        }
                    }
                    let before = v.probes.attached();
                    v.probes.detach(&caps);
                    v.window(before.into_iter().filter(|c| caps.contains(c)).collect(), false, ts_ns);
                    v.publish(unreadable.get());
                }
                Ok(HubCommand::Remove(vm, done)) => {
                    if vms.borrow().contains_key(&vm) {
                        // Detach first so no new events arrive, then take what is still in
                        // the buffer.
                        let ts_ns = now_ns();
                        let before = {
                            let vms = vms.borrow();
                            let v = &vms[&vm];
                            let before = v.probes.attached();
                            v.probes.detach_all();
                            before
                        };
                        drain();
                        if let Some(v) = vms.borrow_mut().remove(&vm) {
                            v.window(before, false, ts_ns);
                            v.publish(unreadable.get());
                        }
                    }
                    let _ = done.send(());
                }
                Ok(HubCommand::Stop) | Err(TryRecvError::Disconnected) => {
                    // Every VM has left by now; any left over is detached as it drops.
                    vms.borrow_mut().clear();
                    return Ok(());
                }
                Err(TryRecvError::Empty) => break,
            }
        }
    }
}

/// Adds a VM to the monitor object and attaches the mode's hooks.
fn add(skel: &Rc<MonitorObject>, new: NewVm) -> Result<VmProbes> {
    let probes = MonitorProbes::add(skel.clone(), &new.target, new.hooks, new.plans)?;
    // Never leave the VM half-instrumented: dropped on failure, it detaches what it attached.
    probes.attach(new.initial)?;
    Ok(VmProbes { probes, fanout: new.fanout, health: new.health, batch: Vec::new(), undecodable: 0 })
}
