//! One fan-out after the sources: each source publishes what it observed once, and every sink
//! (aggregation, detectors, the recorder) sees it. Sources run on their own threads and
//! timers; a sink's state sits behind its own lock, so exporters read it without touching any
//! source.

use std::sync::{Arc, Mutex};

use crate::event::{Event, ProcRead, Sample, SharedTableRead, WindowChange};

/// Something that consumes observations. Each method has a default that ignores them.
pub trait Sink: Send {
    /// A batch of per-event observations, in the order the probes delivered them.
    fn events(&mut self, _batch: &[Event]) {}
    /// One CPU sample.
    fn sample(&mut self, _sample: &Sample) {}
    /// A read of the process table.
    fn table(&mut self, _read: &SharedTableRead) {}
    /// A read of the VM's /proc facts.
    fn proc(&mut self, _read: &ProcRead) {}
    /// Hooks attached or detached.
    fn window(&mut self, _change: &WindowChange) {}
}

/// The fan-out: cheap to clone, shared by every source.
#[derive(Clone, Default)]
pub struct FanOut {
    sinks: Arc<Vec<Arc<Mutex<dyn Sink>>>>,
}

impl FanOut {
    pub fn new(sinks: Vec<Arc<Mutex<dyn Sink>>>) -> FanOut {
        FanOut { sinks: Arc::new(sinks) }
    }

    fn each(&self, mut f: impl FnMut(&mut dyn Sink)) {
        for sink in self.sinks.iter() {
            f(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    pub fn events(&self, batch: &[Event]) {
        if !batch.is_empty() {
            self.each(|s| s.events(batch));
        }
    }

    pub fn sample(&self, sample: &Sample) {
        self.each(|s| s.sample(sample));
    }

    pub fn table(&self, read: &SharedTableRead) {
        self.each(|s| s.table(read));
    }

    pub fn proc(&self, read: &ProcRead) {
        self.each(|s| s.proc(read));
    }

    pub fn window(&self, change: &WindowChange) {
        if !change.capabilities.is_empty() {
            self.each(|s| s.window(change));
        }
    }
}
