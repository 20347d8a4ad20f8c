//! Modes decide which sources run and which per-event hooks are attached when.

use beam_probes::Capability;
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Cheap sources always (CPU sampling, process-table reads, /proc); per-event hooks only in
    /// windows whose cost stays within --overhead-budget, and when a detector asks for
    /// evidence. Safe to leave running.
    Adaptive,
    /// Cheap sources only: no per-event hook is ever attached.
    Sample,
    /// Every per-event hook (send, schedule, gc, spawn, exit) attached for the whole run.
    /// Exact counts; costs ~1.5 µs in the VM per hook hit.
    Trace,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Adaptive => "adaptive",
            Mode::Sample => "sample",
            Mode::Trace => "trace",
        }
    }

    /// The hook capabilities attached when the mode starts (adaptive attaches its own later).
    pub fn initial_capabilities(self) -> &'static [Capability] {
        match self {
            Mode::Trace => &Capability::ALL,
            Mode::Sample | Mode::Adaptive => &[],
        }
    }

    /// The events ring buffer's size. Trace mode takes every hit of a message-bound VM (16 MiB
    /// is about 300,000 events of slack); adaptive windows come as fast but are short, and a
    /// ring's pages count twice in the probe's resident memory (the kernel maps its data twice,
    /// for reads across the wrap), so adaptive mode keeps 4 MiB. Sample mode attaches no hook.
    pub fn event_ring_bytes(self) -> u32 {
        match self {
            Mode::Trace => 16 << 20,
            Mode::Adaptive | Mode::Sample => 4 << 20,
        }
    }

    pub const ALL: [Mode; 3] = [Mode::Adaptive, Mode::Sample, Mode::Trace];
}
