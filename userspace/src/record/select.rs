//! What of a recording a user asked to see: a time span, some processes, and whether OTP's own
//! processes count (hidden by default, as in the live views).

use std::collections::HashSet;

use anyhow::{Result, bail};

use super::format::What;
use super::model::{Recording, parse_time};
use crate::cli::Selection;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Nanoseconds since the recording started.
    pub from: u64,
    pub to: u64,
    /// The processes asked for (`None`: all).
    pub pids: Option<HashSet<u64>>,
    /// OTP's own processes shown too.
    pub all: bool,
}

impl Filter {
    /// Everything (OTP's own processes hidden unless `all`).
    pub fn everything(rec: &Recording, all: bool) -> Filter {
        Filter { from: 0, to: rec.end, pids: None, all }
    }

    pub fn new(rec: &Recording, sel: &Selection) -> Result<Filter> {
        let time = |s: &Option<String>, default: u64| -> Result<u64> {
            match s {
                Some(s) => parse_time(s).map_err(anyhow::Error::msg),
                None => Ok(default),
            }
        };
        let from = time(&sel.from, 0)?;
        let to = time(&sel.to, rec.end)?;
        if to < from {
            bail!("--to is before --from");
        }
        let pids = if sel.processes.is_empty() {
            None
        } else {
            let mut set = HashSet::new();
            for q in &sel.processes {
                let found = rec.matching(q);
                if found.is_empty() {
                    bail!(
                        "no process in the recording is {q:?} (give a pid as <0.80.0>, or part of a registered name, label, initial call or module)"
                    );
                }
                set.extend(found);
            }
            Some(set)
        };
        // A process asked for by name is shown even when it is one of OTP's own.
        Ok(Filter { from, to, pids, all: sel.all || !sel.processes.is_empty() })
    }

    pub fn time(&self, t: u64) -> bool {
        t >= self.from && t <= self.to
    }

    /// Whether a process is shown.
    pub fn process(&self, rec: &Recording, pid: u64) -> bool {
        self.pids.as_ref().is_none_or(|s| s.contains(&pid)) && (self.all || !rec.is_system(pid))
    }

    /// Whether an event is shown: in the span, and about a process shown (for a send, either
    /// end: the other may be one of OTP's own).
    pub fn event(&self, rec: &Recording, t: u64, what: &What) -> bool {
        self.time(t) && involved(what).iter().flatten().any(|p| self.process(rec, *p))
    }
}

/// The processes an event is about.
pub fn involved(what: &What) -> [Option<u64>; 2] {
    match *what {
        What::Send { from, to } | What::SendToAlias { from, to } => [Some(from), Some(to)],
        What::Schedule { pid, .. } | What::Gc { pid, .. } | What::Exit { pid } => [Some(pid), None],
        What::Spawn { parent, child } => [parent, Some(child)],
        What::DistSend { from: pid, .. } | What::DistReceive { to: pid, .. } => [Some(pid), None],
    }
}
