//! Command-line interface. `scope-probe --pid PID` monitors (the main job); subcommands do
//! one-off work (`profile`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::control::mode::Mode;

/// Observe a running Erlang/Elixir VM (BEAM) with eBPF: no code change, no restart.
///
/// `scope-probe --pid PID` attaches to the beam.smp process PID and serves Prometheus metrics
/// until Ctrl-C, SIGTERM or --duration, then detaches (`--pid A --pid B` or `--all` for several
/// VMs). `scope-probe profile --pid PID` writes a
/// CPU flame graph in Erlang terms; `scope-probe record --pid PID -o run.scope` records for
/// replay, export, report, diff, why and check. Needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE).
#[derive(Debug, Parser)]
#[command(name = "scope-probe", version, about, long_about, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub monitor: MonitorArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Monitor the VM and serve metrics (the default when no subcommand is given).
    Monitor(MonitorArgs),
    /// Sample the VM's CPU and write a flame graph in Erlang terms (Module:function/arity).
    Profile(ProfileArgs),
    /// Print the VM's process table once (pid, name, current function, mailbox, heap, ...).
    Snapshot(SnapshotArgs),
    /// A live view of the VM's processes, like observer or htop.
    Top(TopArgs),
    /// Record everything observed (events, CPU samples, process-table reads, findings) to a
    /// file for replay, export, report, diff, why and check.
    Record(RecordArgs),
    /// List what a recording holds (events, findings), or the VM's state at a moment (--at).
    Replay(ReplayArgs),
    /// Convert a recording for a timeline viewer (Perfetto's protobuf trace, Chrome JSON).
    Export(ExportArgs),
    /// One self-contained HTML report of a recording: flame graph, message flow, spawn tree,
    /// mailbox and memory timelines, findings.
    Report(ReportArgs),
    /// What changed between two recordings (before and after a deploy), biggest first.
    Diff(DiffArgs),
    /// Recordings of several nodes (hosts) as one, on one clock: replay, export and report then
    /// show them together, messages between the nodes as one flow each.
    Merge(MergeArgs),
    /// Where a process's time went in a recording, ranked, with the evidence.
    Why(WhyArgs),
    /// Check hypotheses (`--assert 'no gc of my_repo longer than 5ms'`) against a recording or a
    /// live VM: exit 0 when all hold, 1 when one is refuted or cannot be told.
    Check(CheckArgs),
    /// The configuration file (--config): `config --default` prints the defaults, commented;
    /// `config --check FILE` reads one and says what is wrong with it.
    Config(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Where to write the recording.
    #[arg(long, short = 'o', value_name = "FILE", default_value = "scope.scope")]
    pub output: PathBuf,

    /// Stop recording when the file reaches this size (e.g. 100MiB, 2GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,

    #[command(flatten)]
    pub session: MonitorArgs,
}

/// A recording's processes chosen by the user, and its time span.
#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// From this time in the recording (12.5s, 1m, 250ms).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Up to this time in the recording.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Only what concerns this process: a pid (<0.80.0>), or a registered name, label, initial
    /// call or module its identity contains. Repeat for several.
    #[arg(long = "process", value_name = "PROCESS")]
    pub processes: Vec<String>,
    /// Include OTP's own processes (kernel, logger, application controller...), hidden by
    /// default.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording.
    pub recording: PathBuf,
    #[command(flatten)]
    pub select: Selection,
    /// Only these kinds: send, schedule, gc, spawn, exit, dist_send, dist_receive, sample, table,
    /// proc, window, finding.
    /// Repeat or separate with commas.
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Print the VM's state at this moment instead (live processes, mailboxes, memory, who
    /// ran where).
    #[arg(long, value_name = "TIME", conflicts_with_all = ["kind"])]
    pub at: Option<String>,
    /// Most lines printed (0: all).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub limit: usize,
    /// A summary of the recording only (what it holds, how long, how observed).
    #[arg(long, conflicts_with_all = ["at", "kind"])]
    pub summary: bool,
    /// One JSON object per line (for jq and scripts): the listing's entries, or with --summary
    /// the recording's header.
    #[arg(long, conflicts_with = "at")]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Perfetto's protobuf trace (open in https://ui.perfetto.dev).
    Perfetto,
    /// Chrome's JSON trace event format (legacy; large recordings make large files).
    ChromeJson,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The recording.
    pub recording: PathBuf,
    #[arg(long, value_enum, default_value_t = ExportFormat::Perfetto)]
    pub format: ExportFormat,
    /// Where to write (default: the recording's name with .perfetto-trace or .json).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub select: Selection,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The recording.
    pub recording: PathBuf,
    /// Where to write the HTML report.
    #[arg(long, short = 'o', value_name = "FILE", default_value = "report.html")]
    pub output: PathBuf,
    /// Time each process with this initial call as one request (as the monitor's flag).
    #[arg(long = "request-process", value_name = "MODULE:FUNCTION/ARITY", value_parser = parse_initial_call)]
    pub request_processes: Vec<String>,
    #[command(flatten)]
    pub select: Selection,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The recording before (the baseline).
    pub before: PathBuf,
    /// The recording after.
    pub after: PathBuf,
    /// Most changes listed per section.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Also write a differential flame graph (SVG: red grew, blue shrank).
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,
    /// Include OTP's own processes.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The recordings, one per VM (`scope-probe record` on each node; at most 16).
    #[arg(required = true, num_args = 2..=16)]
    pub recordings: Vec<PathBuf>,
    /// The merged recording to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct WhyArgs {
    /// The recording.
    pub recording: PathBuf,
    /// The process: a pid (<0.80.0>), a registered name, label, initial call or module.
    pub target: String,
    /// Time each process with this initial call as one request (as the monitor's flag).
    #[arg(long = "request-process", value_name = "MODULE:FUNCTION/ARITY", value_parser = parse_initial_call)]
    pub request_processes: Vec<String>,
    #[command(flatten)]
    pub select: Selection,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The recording (or --pid for a live VM).
    #[arg(required_unless_present = "pid", conflicts_with = "pid")]
    pub recording: Option<PathBuf>,
    /// Check a live VM instead: record it for --duration, then check.
    #[arg(long, short = 'p', value_name = "PID")]
    pub pid: Option<u32>,
    /// How long to observe a live VM.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, requires = "pid")]
    pub duration: Duration,
    /// Observe a live VM in this mode (trace gives exact counts).
    #[arg(long, value_enum, default_value_t = Mode::Adaptive, requires = "pid")]
    pub mode: Mode,
    /// A hypothesis, repeatable: `[max|min|mean|p50|p90|p99|count|total|rate] METRIC [of P]
    /// [from P] [to P] OP VALUE` or `no METRIC [of P] over VALUE`; metrics gc, schedule, send,
    /// spawn, exit, mailbox, memory, heap, cpu, processes, run_queue (README, "Checking
    /// hypotheses"). E.g. `no mailbox over 1000`, `p99 schedule < 2ms`.
    #[arg(long = "assert", value_name = "EXPR", required = true)]
    pub asserts: Vec<String>,
    #[command(flatten)]
    pub debug_info: DebugInfoArgs,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the default configuration file, commented.
    #[arg(long, conflicts_with = "check")]
    pub default: bool,
    /// Check a configuration file.
    #[arg(long, value_name = "FILE")]
    pub check: Option<PathBuf>,
}

/// Where the VM's debug info is, for stripped beam.smp builds (they export too few symbols).
#[derive(Debug, Clone, Args)]
pub struct DebugInfoArgs {
    /// The beam.smp's separate debug file (DWARF and symbol table, e.g. from a -dbgsym package
    /// or `objcopy --only-keep-debug`). Default: look where gdb does (the build-id directory and
    /// .gnu_debuglink, inside the VM's root), then ask the debuginfod servers of DEBUGINFOD_URLS.
    #[arg(long, value_name = "FILE")]
    pub debug_file: Option<PathBuf>,
    /// Never ask debuginfod servers, even when DEBUGINFOD_URLS is set.
    #[arg(long)]
    pub no_debuginfod: bool,
}

impl DebugInfoArgs {
    /// Opens the target VM, finding its debug info as asked; a debuginfod download prints a
    /// progress line.
    pub fn open(&self, pid: u32) -> beam_probes::Result<beam_probes::BeamTarget> {
        let options = beam_probes::target::OpenOptions {
            debug_file: self.debug_file.clone(),
            no_debuginfod: self.no_debuginfod,
            progress: Some(|msg| eprintln!("scope-probe: {msg}")),
        };
        beam_probes::BeamTarget::open_with(pid, &options)
    }
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// OS pid of the beam.smp process; repeat for several VMs (one table each; JSON: an array).
    #[arg(long, short = 'p', value_name = "PID", required_unless_present = "all_vms", conflicts_with = "all_vms")]
    pub pid: Vec<u32>,
    /// Every BEAM on the host (containers' too), one table each (JSON: an array).
    #[arg(long)]
    pub all_vms: bool,
    #[command(flatten)]
    pub debug_info: DebugInfoArgs,
    /// JSON for scripts instead of a text table.
    #[arg(long)]
    pub json: bool,
    /// Include OTP's own (system) processes.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// OS pid of the beam.smp process; repeat for several VMs (grouped by node, a table each).
    #[arg(long, short = 'p', value_name = "PID", required_unless_present = "all_vms", conflicts_with = "all_vms")]
    pub pid: Vec<u32>,
    /// Every BEAM on the host (containers' too), grouped by node.
    #[arg(long)]
    pub all_vms: bool,
    #[command(flatten)]
    pub debug_info: DebugInfoArgs,
    /// Refresh interval (e.g. 1s, 500ms); `+`/`-` change it while running.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Show OTP's own (system) processes from the start (`a` toggles them).
    #[arg(long)]
    pub all: bool,
    /// Time the calls of servers in the servers view (`tab`): attaches the send hooks in
    /// windows, when callers are found blocked in a call, within --overhead-budget (top
    /// otherwise attaches nothing; this needs what the monitor needs).
    #[arg(long)]
    pub calls: bool,
    /// With --calls: the share of the VM's CPU time the send hooks may cost (e.g. 1%, 0.5%).
    #[arg(long, value_name = "SHARE", default_value = "1%", value_parser = parse_share, requires = "calls")]
    pub overhead_budget: f64,
}

/// A duration (`30s`, `5m`, `500ms`), more than zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

/// An HTTP(S) base URL (`http://host:port`, with a path if the server sits under one).
pub fn parse_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://")).ok_or("not an http:// or https:// URL")?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("no host in the URL".into());
    }
    Ok(s.to_owned())
}

/// A count of at least 1.
pub fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `name=value`, the name a Prometheus label name.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    let valid =
        k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("{k:?} is not a label name (letters, digits and _, not starting with a digit)"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// A share as `1%` or `0.01`, between 0 (exclusive) and 1.
pub fn parse_share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a share (write 1% or 0.01)"))?;
    if v > 0.0 && v <= 1.0 { Ok(v) } else { Err(format!("{s:?} is not between 0 and 100%")) }
}

#[derive(Debug, Clone, Args)]
pub struct MonitorArgs {
    /// OS pid of a beam.smp process to observe (e.g. `pgrep -f beam.smp`); repeat for several
    /// VMs (--pid A --pid B): every metric carries the VM's node name and OS pid.
    #[arg(long, short = 'p', value_name = "PID", required_unless_present = "all", conflicts_with = "all")]
    pub pid: Vec<u32>,

    /// Observe every BEAM on the host (containers' too, by their host pid), picking up VMs that
    /// start later and letting go of those that stop.
    #[arg(long)]
    pub all: bool,

    /// A configuration file (TOML; `scope-probe config --default` prints one): mode, budget,
    /// detectors' thresholds, Alertmanager URLs and labels. Flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub debug_info: DebugInfoArgs,

    /// What to observe and how: `adaptive` (cheap sources always, per-event hooks in windows
    /// within --overhead-budget), `sample` (cheap sources only), `trace` (every per-event hook
    /// all the time: exact counts, expensive for message-heavy VMs).
    #[arg(long, value_enum, default_value_t = Mode::Adaptive)]
    pub mode: Mode,

    /// In adaptive mode, the share of the VM's CPU time per-event hooks may cost (e.g. 1%,
    /// 0.5%, 0.02).
    #[arg(long, value_name = "SHARE", default_value = "1%", value_parser = parse_share)]
    pub overhead_budget: f64,

    /// How often the process table is read (mailboxes, memory, identities); reads of a large
    /// table space themselves out further (a read takes at most a twentieth of the time).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub snapshot_interval: Duration,

    /// Where per-event hooks come from: `auto` uses the VM's USDT probes (a beam.smp built
    /// --with-dynamic-trace=systemtap) for each capability they serve without loss, uprobes
    /// elsewhere; `usdt` uses USDT wherever a probe exists; `uprobe` never uses USDT.
    #[arg(long, value_enum, default_value_t = ProbeSourceArg::Auto)]
    pub probe_source: ProbeSourceArg,

    /// Address of the metrics endpoint (/metrics). Loopback by default (127.0.0.1:9568);
    /// expose with care. `record` serves nothing unless given.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// TLS and basic auth for the endpoint: a web configuration file as Prometheus and its
    /// exporters read it (tls_server_config: cert_file, key_file, client_ca_file,
    /// client_auth_type, min_version; basic_auth_users: name -> bcrypt hash).
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<PathBuf>,

    /// Stop after this long (e.g. 30s, 5m, 1h). Default: run until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// CPU sampling frequency per CPU, in Hz (0 turns the sampler off).
    #[arg(long, value_name = "HZ", default_value_t = 99, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub frequency: u64,

    /// Alertmanager to send findings to as alerts (its base URL, e.g. http://127.0.0.1:9093);
    /// repeat for several.
    #[arg(long = "alertmanager", value_name = "URL", value_parser = parse_url)]
    pub alertmanagers: Vec<String>,

    /// A label added to every alert (`--alert-label team=payments`); repeat for several.
    #[arg(long = "alert-label", value_name = "NAME=VALUE", value_parser = parse_label)]
    pub alert_labels: Vec<(String, String)>,

    /// How often active alerts are sent again (Alertmanager ends an alert it stops hearing of).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub alert_resend: Duration,

    /// Flight recorder: keep the last --flight-window of everything observed in DIR (rotating
    /// segments, bounded by --flight-max-size); when a detector fires, the window around it is
    /// kept as DIR/<time>-<kind>.scope and the alert names the file.
    #[arg(long, value_name = "DIR")]
    pub flight_recorder: Option<PathBuf>,

    /// How much the flight recorder keeps before a finding.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration, requires = "flight_recorder")]
    pub flight_window: Duration,

    /// Most disk the flight recorder's segments take (e.g. 256MiB, 1GiB); kept recordings
    /// come on top, at most --flight-keep of them.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size, requires = "flight_recorder")]
    pub flight_max_size: u64,

    /// Most kept recordings in the flight recorder's directory (the oldest are deleted).
    #[arg(long, value_name = "N", default_value_t = 20, requires = "flight_recorder")]
    pub flight_keep: usize,

    /// The detectors' thresholds and hold times (from --config; the defaults otherwise).
    #[arg(skip)]
    pub detectors: crate::detect::Settings,

    /// Most processes kept in the per-process table (the least active are evicted, counted).
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = parse_count)]
    pub max_processes: usize,

    /// Most sender/receiver pairs kept (the smallest are evicted, counted).
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = parse_count)]
    pub max_pairs: usize,

    /// Time the life of each process with this initial call as one request
    /// (`my_handler:handle/2`, Elixir modules as `MyApp.Handler.run/1`); repeat for several.
    /// Cowboy's request processes and yaws' acceptors are known without it.
    #[arg(long = "request-process", value_name = "MODULE:FUNCTION/ARITY", value_parser = parse_initial_call)]
    pub request_processes: Vec<String>,
}

/// An initial call as identities print it: `module:function/arity`.
fn parse_initial_call(s: &str) -> Result<String, String> {
    let bad = || format!("`{s}` is not MODULE:FUNCTION/ARITY (e.g. my_handler:handle/2)");
    let (mf, arity) = s.rsplit_once('/').ok_or_else(bad)?;
    let (m, f) = mf.split_once(':').ok_or_else(bad)?;
    if m.is_empty() || f.is_empty() || arity.parse::<u8>().is_err() {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// A size: `256MiB`, `1GiB`, `500MB`, `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size (write 256MiB, 1GiB, 500MB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!("{s:?}: unknown unit {unit:?} (write 256MiB, 1GiB, 500MB)"));
        }
    };
    let v = n * mult;
    if v >= 1.0 { Ok(v as u64) } else { Err(format!("{s:?} is not a size above zero")) }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeSourceArg {
    Auto,
    Usdt,
    Uprobe,
}

impl ProbeSourceArg {
    pub fn preference(self) -> beam_probes::SourcePreference {
        match self {
            ProbeSourceArg::Auto => beam_probes::SourcePreference::Auto,
            ProbeSourceArg::Usdt => beam_probes::SourcePreference::Usdt,
            ProbeSourceArg::Uprobe => beam_probes::SourcePreference::Uprobe,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileFormat {
    /// Folded stacks (`frame;frame;frame count`), for flamegraph.pl, inferno, speedscope.
    Folded,
    /// An interactive SVG flame graph.
    Svg,
    /// speedscope JSON (https://www.speedscope.app/file-format-schema.json).
    Speedscope,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// OS pid of the beam.smp process to profile; repeat for several VMs (one graph, a root
    /// frame per node).
    #[arg(long, short = 'p', value_name = "PID", required_unless_present = "all_vms", conflicts_with = "all_vms")]
    pub pid: Vec<u32>,
    /// Every BEAM on the host (containers' too), one graph with a root frame per node.
    #[arg(long)]
    pub all_vms: bool,
    #[command(flatten)]
    pub debug_info: DebugInfoArgs,

    /// How long to sample (e.g. 30s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Sampling frequency per CPU, in Hz.
    #[arg(long, value_name = "HZ", default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: u64,

    /// Output file; `-` for standard output. The format follows the extension (.svg, .json,
    /// else folded) unless --format says otherwise.
    #[arg(long, short = 'o', value_name = "FILE", default_value = "-")]
    pub output: PathBuf,

    /// Output format.
    #[arg(long, value_enum)]
    pub format: Option<ProfileFormat>,

    /// One root per Erlang process (pid and registered name) instead of one graph.
    #[arg(long)]
    pub by_process: bool,
}

impl ProfileFormat {
    pub fn name(self) -> &'static str {
        match self {
            ProfileFormat::Folded => "folded stacks",
            ProfileFormat::Svg => "SVG flame graph",
            ProfileFormat::Speedscope => "speedscope JSON",
        }
    }
}

impl ProfileArgs {
    pub fn format(&self) -> ProfileFormat {
        self.format.unwrap_or_else(|| match self.output.extension().and_then(|e| e.to_str()) {
            Some("svg") => ProfileFormat::Svg,
            Some("json") => ProfileFormat::Speedscope,
            _ => ProfileFormat::Folded,
        })
    }
}
