//! Exporters: Prometheus metrics and the HTTP endpoint, and the profile's output formats (one
//! module each). They read aggregated state only: no BPF type and no `BeamTarget` in here; pids
//! are named through [`PidNames`].

pub mod alertmanager;
pub mod flamegraph;
pub mod folded;
pub mod http;
pub mod metrics;
pub mod speedscope;

/// Names pids for the exporters, which know nothing of the VM (implemented over it in
/// `enrich::names`).
pub trait PidNames: Send + Sync {
    /// `<0.N.S>`, as Erlang prints the pid.
    fn pid(&self, term: u64) -> String;
    /// Who the process is: its registered name, else its label, else its initial call; ""
    /// when that is not known.
    fn name(&self, term: u64) -> String;
}
