//! Command-line interface.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::mode::Mode;

/// Observe a running Erlang/Elixir VM (BEAM) with eBPF: no code change, no restart.
///
/// Attaches to the beam.smp process PID, serves Prometheus metrics until Ctrl-C, SIGTERM or
/// --duration, then detaches. Needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE).
#[derive(Debug, Parser)]
#[command(name = "scope-probe", version, about, long_about)]
pub struct Cli {
    /// OS pid of the beam.smp process to observe (e.g. `pgrep -f beam.smp`).
    #[arg(long, short = 'p', value_name = "PID")]
    pub pid: u32,

    /// What to observe and how: `trace` attaches every per-event hook (exact counts).
    #[arg(long, value_enum, default_value_t = Mode::Trace)]
    pub mode: Mode,

    /// Address of the metrics endpoint (/metrics). Loopback by default; expose with care.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9568")]
    pub listen: SocketAddr,

    /// Stop after this long (e.g. 30s, 5m, 1h). Default: run until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Most processes kept in the per-process table (the least active are evicted, counted).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_processes: usize,

    /// Most sender/receiver pairs kept (the smallest are evicted, counted).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_pairs: usize,
}
