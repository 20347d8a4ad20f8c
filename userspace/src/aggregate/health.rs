//! The probes' own health as exporters read it: what is attached and from where, how often the
//! hooks hit the VM, and what was lost. Plain data: the BPF side converts its counters into it.

use std::sync::Arc;

use beam_probes::{Capability, CapabilityPlan};

use crate::source::sampler::SamplerStats;

#[derive(Debug, Default, Clone)]
pub struct Health {
    pub attached: Vec<Capability>,
    /// The source of each capability (uprobe or USDT) and why.
    pub plans: Vec<CapabilityPlan>,
    /// Probe hits in the VM since attach, per hook (as metrics label them).
    pub hits: Vec<(&'static str, u64)>,
    /// The same per capability (all of its hooks).
    pub hits_by_capability: [u64; Capability::ALL.len()],
    /// Events lost before aggregation, per reason (as metrics label them).
    pub lost: Vec<(&'static str, u64)>,
    /// Of those, spans cut by attach or detach (an end without its start): not a loss of
    /// anything that was observed whole.
    pub unpaired: u64,
    /// When each capability's hooks last went in and last came out (their breakpoints armed,
    /// then removed): what observed time is measured by.
    pub attached_at: [Option<std::time::Instant>; Capability::ALL.len()],
    pub detached_at: [Option<std::time::Instant>; Capability::ALL.len()],
    /// The CPU sampler's counters, when it runs.
    pub sampler: Option<Arc<SamplerStats>>,
}

impl Health {
    /// Events lost, all reasons except spans cut by attach/detach.
    pub fn lost_total(&self) -> u64 {
        self.lost.iter().map(|(_, n)| n).sum::<u64>() - self.unpaired
    }
}
