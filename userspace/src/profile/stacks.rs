//! Collected stacks: each sample's frames (root first, as display names) counted. The output
//! formats read from here.

use std::collections::HashMap;

/// Stacks and their sample counts, plus what the header of every output states.
#[derive(Debug, Default)]
pub struct Profile {
    /// Root-first frame names -> samples.
    pub stacks: HashMap<Vec<String>, u64>,
    pub samples: u64,
    /// Samples attributed to an Erlang process (r13 checked against JIT code).
    pub attributed: u64,
    /// A line for the reader: the target, duration and caveats (e.g. leaf-only stacks).
    pub title: String,
    pub notes: Vec<String>,
}

impl Profile {
    pub fn add(&mut self, stack: Vec<String>) {
        self.samples += 1;
        *self.stacks.entry(stack).or_default() += 1;
    }

    /// Stacks sorted by frames, for deterministic output.
    pub fn sorted(&self) -> Vec<(&Vec<String>, u64)> {
        let mut v: Vec<(&Vec<String>, u64)> = self.stacks.iter().map(|(k, n)| (k, *n)).collect();
        v.sort();
        v
    }
}
