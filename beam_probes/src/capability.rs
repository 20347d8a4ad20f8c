//! What scope-probe can observe per event, one name for each: the monitor's modes, the BPF
//! attach and detach, the source planner (uprobe or USDT), the events and the metrics all speak
//! of capabilities by this enum, so a misspelt one cannot exist.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Local process-to-process sends.
    Send,
    /// Schedule slices: a process scheduled in, then out, with its run time and reductions.
    Schedule,
    /// Garbage collections and their durations.
    Gc,
    /// Process creations, with their parents.
    Spawn,
    /// Processes leaving the process table.
    Exit,
    /// Messages to and from other nodes (Erlang distribution): sends handed to a connection,
    /// and messages from a connection queued to a local process.
    Distribution,
}

impl Capability {
    /// Every capability, in the order they are listed and reported.
    pub const ALL: [Capability; 6] =
        [Capability::Send, Capability::Schedule, Capability::Gc, Capability::Spawn, Capability::Exit, Capability::Distribution];

    /// As shown to users and in metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Send => "send",
            Capability::Schedule => "schedule",
            Capability::Gc => "gc",
            Capability::Spawn => "spawn",
            Capability::Exit => "exit",
            Capability::Distribution => "distribution",
        }
    }

    /// Position in [`Capability::ALL`], for tables indexed by capability.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The capability of a name, as users spell it.
    pub fn parse(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices_round_trip() {
        for (i, c) in Capability::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(Capability::parse(c.name()), Some(c));
        }
        assert_eq!(Capability::parse("sends"), None);
    }
}
