//! Collected stacks: each sample's frames (root first, as display names) counted. The output
//! formats read from here.

use std::collections::HashMap;
use std::sync::Arc;

/// Stacks and their sample counts, plus what the header of every output states.
#[derive(Debug, Default)]
pub struct Profile {
    /// Root-first frame names (interned) -> samples.
    pub stacks: HashMap<Vec<Arc<str>>, u64>,
    pub samples: u64,
    /// Samples attributed to an Erlang process.
    pub attributed: u64,
    /// Of those, samples whose whole Erlang stack was read.
    pub complete: u64,
    /// Samples in JIT code where the JIT's process register was checked against the
    /// scheduler's process, and where it agreed.
    pub register_checked: u64,
    pub register_agreed: u64,
    /// A line for the reader: the target, duration and caveats (e.g. leaf-only stacks).
    pub title: String,
    pub notes: Vec<String>,
}

impl Profile {
    pub fn add(&mut self, stack: Vec<Arc<str>>) {
        self.samples += 1;
        *self.stacks.entry(stack).or_default() += 1;
    }

    /// Stacks sorted by frames, for deterministic output.
    pub fn sorted(&self) -> Vec<(&Vec<Arc<str>>, u64)> {
        let mut v: Vec<(&Vec<Arc<str>>, u64)> = self.stacks.iter().map(|(k, n)| (k, *n)).collect();
        v.sort();
        v
    }
}
