//! Aggregation: what the sources delivered, summed into the state exporters read. Counters per
//! process and pair, the CPU window, the latest process table, the probes' health, collected
//! stacks for profiles.

pub mod calls;
pub mod counts;
pub mod cpu;
pub mod health;
pub mod requests;
pub mod stacks;
pub mod table;

use std::sync::{Arc, Mutex};

/// Everything the exporters read, each part behind its own lock (the sinks of the fan-out
/// hold the same parts).
#[derive(Clone)]
pub struct State {
    pub counts: Arc<Mutex<counts::Aggregator>>,
    pub cpu: Arc<Mutex<cpu::CpuWindow>>,
    pub table: Arc<Mutex<table::TableState>>,
    pub health: Arc<Mutex<health::Health>>,
    /// Findings of the detectors, active and recent.
    pub findings: Arc<Mutex<crate::detect::Findings>>,
    /// Calls paired from sends: latency per server.
    pub calls: Arc<Mutex<calls::Calls>>,
}

impl State {
    pub fn new(counts: counts::Aggregator) -> State {
        State {
            counts: Arc::new(Mutex::new(counts)),
            cpu: Arc::default(),
            table: Arc::default(),
            health: Arc::default(),
            findings: Arc::default(),
            calls: Arc::default(),
        }
    }
}

/// Locks a part of the state, whatever a panicking holder left (the data stays usable).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
