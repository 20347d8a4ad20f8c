//! Modes decide which sources run and which per-event hooks are attached when. `trace` is the
//! first; `sample` and `adaptive` (hooks attached in bounded windows) come later and plug in
//! here.

use beam_probes::Capability;
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Every per-event hook (send, schedule, gc, spawn, exit) attached for the whole run.
    /// Exact counts; costs ~1.5 µs in the VM per hook hit.
    Trace,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Trace => "trace",
        }
    }

    /// The hook capabilities attached when the mode starts.
    pub fn initial_capabilities(self) -> &'static [Capability] {
        match self {
            Mode::Trace => &Capability::ALL,
        }
    }
}
