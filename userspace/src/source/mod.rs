//! Sources: where observations come from, each stamped with the VM and the time, each on its
//! own thread: the monitor's BPF probes (per-event hooks), the CPU sampler, the process table
//! and /proc on a timer.

pub mod bpf;
pub mod cpu;
pub mod hub;
pub mod probes;
pub mod procstat;
pub mod sampler;
pub mod skeleton;
pub mod table;
