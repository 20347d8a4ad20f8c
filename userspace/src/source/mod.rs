//! Sources: where observations come from, each stamped with the VM and the time. The monitor's
//! BPF probes (per-event hooks), the CPU sampler, and /proc.

pub mod bpf;
pub mod probes;
pub mod procstat;
pub mod sampler;
