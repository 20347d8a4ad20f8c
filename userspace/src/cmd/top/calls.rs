//! `top --calls`: call latency in the servers view. `top` reads the process table only; with
//! `--calls` it also attaches the send hooks (the alias-send hook with them) in windows within
//! an overhead budget, when a refresh finds callers blocked in a call, as the monitor's adaptive
//! mode does, and pairs the calls the same way (`aggregate::calls`). No survey window opens:
//! nothing but those sends is observed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use beam_probes::{BeamTarget, Capability, SourcePreference};

use crate::aggregate::calls::Calls;
use crate::aggregate::health::Health;
use crate::control::adaptive::{ControlState, Controller, Escalator, Settings};
use crate::control::calibrate;
use crate::control::mode::Mode;
use crate::pipeline::{FanOut, Sink};
use crate::source::probes::ProbeThread;

/// How long callers found blocked keep asking for windows.
const ASK_FOR: Duration = Duration::from_secs(15);

pub struct CallTiming {
    // Dropped in this order (fields go in declaration order): no window opens while the probe
    // leaves, and leaving detaches every hook.
    _controller: Controller,
    escalator: Escalator,
    _probe: ProbeThread,
    pub calls: Arc<Mutex<Calls>>,
    pub control: Arc<Mutex<ControlState>>,
}

impl CallTiming {
    /// Loads the probes for `target` with nothing attached yet.
    pub fn start(target: Arc<BeamTarget>, budget: f64) -> Result<CallTiming> {
        let hooks = target.resolve_hooks()?;
        let plans = target.plan_sources(SourcePreference::Auto)?;
        let calls: Arc<Mutex<Calls>> = Arc::default();
        let sinks: Vec<Arc<Mutex<dyn Sink>>> = vec![calls.clone()];
        let health: Arc<Mutex<Health>> = Arc::default();
        let hit_seconds = calibrate::hit_seconds(target.table).unwrap_or(calibrate::DEFAULT_HIT_SECONDS);
        let control = Arc::new(Mutex::new(ControlState { mode: Some(Mode::Adaptive), budget, hit_seconds, ..Default::default() }));
        let ring = Mode::Adaptive.event_ring_bytes();
        let pid = target.pid;
        let (probe, _) =
            ProbeThread::start(target, hooks, plans, Mode::Adaptive.initial_capabilities(), FanOut::new(sinks), health.clone(), ring)?;
        let settings = Settings { budget, surveys: false, ..Settings::default() };
        let controller = Controller::start(pid, settings, probe.commands(), health, control.clone())?;
        let escalator = controller.escalator();
        Ok(CallTiming { _controller: controller, escalator, _probe: probe, calls, control })
    }

    /// Callers are blocked in calls now: their calls are worth timing.
    pub fn callers_blocked(&self) {
        self.escalator.escalate("calls", &[Capability::Send], ASK_FOR);
    }

    /// Seconds the send hooks have been attached, and their estimated cost over the VM's CPU.
    pub fn observed(&self) -> (f64, f64) {
        let c = crate::aggregate::lock(&self.control);
        (c.observed_seconds[Capability::Send.index()], c.overhead_ratio)
    }
}
