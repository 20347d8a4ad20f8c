//! The configuration file (`--config FILE`, TOML): the monitor's mode, budget, intervals, the
//! detectors' thresholds and hold times, the Alertmanager URLs and labels, the listen address.
//! Flags given on the command line override it. A bad file is one error naming the line and
//! the key, before anything is attached. `scope-probe config --default` prints [`DEFAULT`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::{Deserialize, Deserializer};

use crate::cli::MonitorArgs;
use crate::control::mode::Mode;
use crate::detect;

/// The file, every key optional (absent: the flag's default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub mode: Option<Mode>,
    #[serde(default, deserialize_with = "share")]
    pub overhead_budget: Option<f64>,
    pub listen: Option<SocketAddr>,
    /// TLS and basic auth for the endpoint (`--web-config`), relative to this file.
    pub web_config: Option<std::path::PathBuf>,
    /// Where the file is (relative paths in it are from there).
    #[serde(skip)]
    pub dir: std::path::PathBuf,
    pub frequency: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    pub snapshot_interval: Option<Duration>,
    pub max_processes: Option<usize>,
    pub max_pairs: Option<usize>,
    #[serde(default)]
    pub alerts: Alerts,
    #[serde(default)]
    pub detectors: detect::Settings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    #[serde(default)]
    pub alertmanager: Vec<String>,
    #[serde(default, deserialize_with = "duration")]
    pub resend: Option<Duration>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn share<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Share {
        Text(String),
        Number(f64),
    }
    let v = match Share::deserialize(d)? {
        Share::Text(s) => crate::cli::parse_share(&s).map_err(serde::de::Error::custom)?,
        Share::Number(n) => crate::cli::parse_share(&n.to_string()).map_err(serde::de::Error::custom)?,
    };
    Ok(Some(v))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    detect::settings::duration(d).map(Some)
}

/// A TOML error on one line: where (line and column) and what (toml's own text draws the line
/// with a caret under it, over several lines).
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        let mut file = Self::parse(&text).with_context(|| format!("in the configuration file {}", path.display()))?;
        file.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(file)
    }

    pub fn parse(text: &str) -> Result<ConfigFile> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", one_line(text, &e)))?;
        for url in &file.alerts.alertmanager {
            crate::cli::parse_url(url).map_err(|e| anyhow::anyhow!("alerts.alertmanager {url:?}: {e}"))?;
        }
        for name in file.alerts.labels.keys() {
            crate::cli::parse_label(&format!("{name}=")).map_err(|e| anyhow::anyhow!("alerts.labels: {e}"))?;
        }
        Ok(file)
    }

    /// Applies the file to `args`, except what the command line set (`matches` tells).
    pub fn apply(self, args: &mut MonitorArgs, matches: &ArgMatches) {
        let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        macro_rules! take {
            ($field:ident) => {
                if let Some(v) = self.$field
                    && !given(stringify!($field))
                {
                    args.$field = v;
                }
            };
        }
        take!(mode);
        take!(overhead_budget);
        if let Some(v) = self.listen
            && !given("listen")
        {
            args.listen = Some(v);
        }
        if let Some(v) = &self.web_config
            && !given("web_config")
        {
            args.web_config = Some(self.dir.join(v));
        }
        take!(frequency);
        take!(snapshot_interval);
        take!(max_processes);
        take!(max_pairs);
        if !given("alertmanagers") && !self.alerts.alertmanager.is_empty() {
            args.alertmanagers = self.alerts.alertmanager;
        }
        if let Some(r) = self.alerts.resend
            && !given("alert_resend")
        {
            args.alert_resend = r;
        }
        // Labels add up; one given on the command line wins over the file's.
        for (k, v) in self.alerts.labels {
            if !args.alert_labels.iter().any(|(name, _)| *name == k) {
                args.alert_labels.push((k, v));
            }
        }
        args.detectors = self.detectors;
    }
}

/// The default configuration, commented: what `scope-probe config --default` prints.
pub const DEFAULT: &str = r#"# scope-probe configuration (scope-probe --pid PID --config FILE).
# Every key is optional: an absent key keeps its default (the values below); a flag given on
# the command line wins over the file.

# adaptive: cheap sources always (CPU sampling, process-table reads, /proc), per-event hooks
#   only in windows within overhead_budget, and when a detector asks for evidence;
# sample: cheap sources only; trace: every per-event hook all the time (exact, expensive).
mode = "adaptive"
# Share of the VM's CPU time the per-event hooks may cost (adaptive mode).
overhead_budget = "1%"
# The endpoint (/metrics, /api/...). Loopback unless you mean otherwise.
listen = "127.0.0.1:9568"
# TLS and basic auth for it: a web configuration file as Prometheus exporters read it.
# web_config = "web.yml"
# CPU samples per second per CPU (0: no sampling; the CPU detectors then do not run).
frequency = 99
# How often the process table is read (slower on large tables: a read takes at most a
# twentieth of the time).
snapshot_interval = "5s"
# Bounds of the per-process and per-pair tables (the least active are evicted, counted).
max_processes = 100000
max_pairs = 100000

[alerts]
# Alertmanager base URLs; findings are sent to each as alerts (none: no alerts).
alertmanager = []
# Active alerts are sent again this often (Alertmanager ends an alert it stops hearing of).
resend = "30s"

[alerts.labels]
# Labels added to every alert, e.g.:
# team = "payments"

# Each detector: enabled, hold (seen this long before it fires), clear (not seen this long
# before it resolves), and its own thresholds.

[detectors.mailbox_buildup]
# A process whose mailbox is over enable_length and growing; it resolves below
# disable_length. limit: the length "time until the limit" counts to.
enabled = true
hold = "10s"
clear = "30s"
enable_length = 10000
disable_length = 1000
limit = 1000000

[detectors.memory_growth]
# A process of at least min_bytes whose memory grew by growth_ratio over window, setting a
# new high at least min_new_highs times (heaps grow in steps).
enabled = true
hold = "30s"
clear = "1m"
min_bytes = 52428800
growth_ratio = 0.5
min_new_highs = 3
window = "5m"

[detectors.gc_storm]
# This share of the processes' CPU samples in the garbage collector, over window.
enabled = true
hold = "30s"
clear = "1m"
enable_share = 0.3
disable_share = 0.15
window = "30s"

[detectors.scheduler_saturation]
# The normal schedulers at work this share of the time with processes waiting in their run
# queues (min_run_queue on average), over window.
enabled = true
hold = "30s"
clear = "1m"
enable_utilisation = 0.9
min_run_queue = 1.0
disable_utilisation = 0.75
window = "30s"

[detectors.long_schedule]
# A process running this long without yielding (measured by the schedule hook, which the
# samples ask for when they see a candidate).
enabled = true
hold = "0s"
clear = "1m"
threshold = "100ms"

[detectors.hot_process]
# A process using this share of one core, over window.
enabled = true
hold = "30s"
clear = "1m"
enable_share = 0.8
disable_share = 0.5
window = "30s"

[detectors.message_cycle]
# Messages round three or more processes, each edge at least min_rate a second (observed).
enabled = true
hold = "10s"
clear = "1m"
min_rate = 10.0
window = "1m"
max_length = 8

[detectors.deadlock]
# Processes each blocked in a call (gen:do_call) to the next, round a cycle.
enabled = true
hold = "10s"
clear = "10s"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The printed default file is the defaults: it parses, and every value equals the one
    /// scope-probe uses without it.
    #[test]
    fn the_default_file_is_the_defaults() {
        let f = ConfigFile::parse(DEFAULT).expect("the default file parses");
        assert_eq!(format!("{:?}", f.detectors), format!("{:?}", detect::Settings::default()));
        assert_eq!(f.mode, Some(Mode::Adaptive));
        assert_eq!(f.overhead_budget, Some(0.01));
        assert_eq!(f.frequency, Some(99));
        assert_eq!(f.snapshot_interval, Some(Duration::from_secs(5)));
        assert_eq!(f.alerts.resend, Some(Duration::from_secs(30)));
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let e = ConfigFile::parse("mode = \"adaptive\"\n\n[detectors.mailbox_buildup]\nenable_lenght = 5\n").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("line 4") && msg.contains("enable_lenght"), "{msg}");
        let e = ConfigFile::parse("overhead_budget = \"150%\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 1"), "{e:#}");
        let e = ConfigFile::parse("[detectors.hot_process]\nwindow = \"soon\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2") && format!("{e:#}").contains("soon"), "{e:#}");
        let e = ConfigFile::parse("[alerts.labels]\n\"9x\" = \"a\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("9x"), "{e:#}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, failure_persistence: None, ..Default::default() })]

        /// Fuzzing on stable Rust: no text makes the parser panic, and its errors are one line.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            if let Err(e) = ConfigFile::parse(&text) {
                proptest::prop_assert!(!format!("{e:#}").contains('\n'), "{e:#}");
            }
        }

        /// Nor do the file's keys with arbitrary values.
        #[test]
        fn arbitrary_values_never_panic(key in proptest::sample::select(vec!["mode", "overhead_budget", "listen", "frequency", "snapshot_interval", "web_config", "max_processes"]), value in "\\PC{0,40}") {
            let _ = ConfigFile::parse(&format!("{key} = {value:?}\n"));
            let _ = ConfigFile::parse(&format!("{key} = {value}\n"));
        }
    }
}
