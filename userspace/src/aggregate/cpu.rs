//! CPU samples summarised over a sliding window (the last minute, in one-second buckets), for
//! the always-on metrics: which functions and which processes have the CPU right now, and the
//! stacks behind them (the dashboard's flame graph of the last minute).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::enrich::stack::Owner;
use crate::event::Sample;
use crate::pipeline::Sink;

/// What a sample is ranked under: the Erlang function (or what the thread was doing) and,
/// when the sample was in C, the C function beside it.
pub type FunctionKey = (Arc<str>, Option<Arc<str>>);

pub const WINDOW_SECS: usize = 60;
/// Distinct stacks kept per second (a VM sampled at 99 Hz per thread takes a few hundred
/// samples a second); the rest are counted under one frame that says so.
const STACKS_PER_SECOND: usize = 1000;

/// A stack as the flame graph draws it: the process it was for (`None`: what the thread did is
/// its first frame), then its frames, root first.
pub type StackKey = (Option<u64>, Vec<Arc<str>>);

#[derive(Default)]
struct Bucket {
    second: u64,
    samples: u64,
    by_function: HashMap<FunctionKey, u64>,
    by_process: HashMap<u64, u64>,
    by_stack: HashMap<StackKey, u64>,
}

#[derive(Default)]
pub struct CpuWindow {
    buckets: VecDeque<Bucket>,
    /// Samples consumed since start.
    pub samples_total: u64,
    /// Of those, attributed to an Erlang process.
    pub attributed_total: u64,
}

impl CpuWindow {
    /// Adds a sample taken at `second` (monotonic seconds) ranked under `function`, with its
    /// frames (root first) when it has them.
    pub fn add_stack(&mut self, second: u64, function: FunctionKey, process: Option<u64>, frames: Option<&[Arc<str>]>) {
        self.samples_total += 1;
        if process.is_some() {
            self.attributed_total += 1;
        }
        if self.buckets.back().is_none_or(|b| b.second != second) {
            self.buckets.push_back(Bucket { second, ..Default::default() });
        }
        while self.buckets.front().is_some_and(|b| b.second + (WINDOW_SECS as u64) <= second) {
            self.buckets.pop_front();
        }
        let b = self.buckets.back_mut().expect("just pushed");
        b.samples += 1;
        *b.by_function.entry(function).or_default() += 1;
        if let Some(p) = process {
            *b.by_process.entry(p).or_default() += 1;
        }
        if let Some(frames) = frames {
            let key = (process, frames.to_vec());
            if b.by_stack.len() < STACKS_PER_SECOND || b.by_stack.contains_key(&key) {
                *b.by_stack.entry(key).or_default() += 1;
            } else {
                *b.by_stack.entry((None, vec![Arc::from("[more distinct stacks than kept]")])).or_default() += 1;
            }
        }
    }

    /// Every stack of the window with its samples.
    pub fn stacks(&self) -> HashMap<StackKey, u64> {
        let mut sums: HashMap<StackKey, u64> = HashMap::new();
        for b in &self.buckets {
            for (k, v) in &b.by_stack {
                *sums.entry(k.clone()).or_default() += v;
            }
        }
        sums
    }

    fn window_samples(&self) -> u64 {
        self.buckets.iter().map(|b| b.samples).sum()
    }

    fn top<K: Clone + Eq + std::hash::Hash + Ord>(&self, n: usize, pick: impl Fn(&Bucket) -> &HashMap<K, u64>) -> Vec<(K, f64)> {
        let total = self.window_samples();
        if total == 0 {
            return Vec::new();
        }
        let mut sums: HashMap<K, u64> = HashMap::new();
        for b in &self.buckets {
            for (k, v) in pick(b) {
                *sums.entry(k.clone()).or_default() += v;
            }
        }
        let mut v: Vec<(K, u64)> = sums.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v.into_iter().map(|(k, c)| (k, c as f64 / total as f64)).collect()
    }

    /// The `n` functions with the largest share of the window's samples.
    pub fn top_functions(&self, n: usize) -> Vec<(FunctionKey, f64)> {
        self.top(n, |b| &b.by_function)
    }

    /// The `n` processes with the largest share of the window's samples.
    pub fn top_processes(&self, n: usize) -> Vec<(u64, f64)> {
        self.top(n, |b| &b.by_process)
    }
}

impl Sink for CpuWindow {
    fn sample(&mut self, sample: &Sample) {
        let process = match sample.stack.owner {
            Owner::Process(p) => Some(p),
            Owner::Thread(_) => None,
        };
        self.add_stack(sample.ts_ns / 1_000_000_000, sample.stack.top_function(), process, Some(&sample.stack.frames));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_over_the_window_and_expiry() {
        let key = |e: &str, c: Option<&str>| (Arc::from(e), c.map(Arc::from));
        let mut w = CpuWindow::default();
        for _ in 0..3 {
            w.add_stack(1, key("a:f/0", Some("memcpy")), Some(0x13), None);
        }
        w.add_stack(1, key("b:g/1", None), None, None);
        assert_eq!(w.top_functions(1), vec![(key("a:f/0", Some("memcpy")), 0.75)]);
        assert_eq!(w.top_processes(5), vec![(0x13, 0.75)]);
        w.add_stack(1 + WINDOW_SECS as u64, key("b:g/1", None), None, None);
        assert_eq!(w.top_functions(5), vec![(key("b:g/1", None), 1.0)]);
        assert_eq!(w.samples_total, 5);
    }
}
