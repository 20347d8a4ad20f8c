//! Aggregation: what the sources delivered, summed into the state exporters read. Counters per
//! process and pair, the CPU window, collected stacks.

pub mod counts;
pub mod cpu;
pub mod stacks;
