//! Hypotheses over a recording, in a small language (README, "Checking hypotheses"):
//!
//! ```text
//! assertion := "no" metric [subject] ("over" | "above" | "longer than" | "more than") value
//!            | [aggregate] metric [subject] op value
//! aggregate := max | min | mean | p50 | p90 | p99 | count | total | rate
//! metric    := gc | schedule | send | spawn | exit | mailbox | memory | heap | cpu
//!            | processes | run_queue
//! subject   := "of" process | "from" process ["to" process] | "to" process
//! op        := < | <= | > | >= | == | !=
//! value     := number [ns | us | µs | ms | s | B | KiB | MiB | GiB | KB | MB | GB | % | /s]
//! process   := a pid (<0.80.0>) or a registered name, label, initial call or module
//!              ("quoted" when it has spaces)
//! ```
//!
//! `no gc of my_repo longer than 5ms` is `max gc of my_repo <= 5ms`. Events (gc, schedule,
//! send, spawn, exit) exist only while their hooks were attached: the verdict says over how
//! much of the recording it holds, and is undecided when the hook never was.

use std::fmt;

use crate::record::format::{Owner, What};
use crate::record::model::Recording;
use crate::units::{at, bytes, count, duration_ns};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Gc,
    Schedule,
    Send,
    Spawn,
    Exit,
    Mailbox,
    Memory,
    Heap,
    Cpu,
    Processes,
    RunQueue,
}

impl Metric {
    const ALL: [(&'static str, Metric); 11] = [
        ("gc", Metric::Gc),
        ("schedule", Metric::Schedule),
        ("send", Metric::Send),
        ("spawn", Metric::Spawn),
        ("exit", Metric::Exit),
        ("mailbox", Metric::Mailbox),
        ("memory", Metric::Memory),
        ("heap", Metric::Heap),
        ("cpu", Metric::Cpu),
        ("processes", Metric::Processes),
        ("run_queue", Metric::RunQueue),
    ];

    /// A metric by its name, singular or plural (`gcs`, `exits`).
    fn parse(s: &str) -> Option<Metric> {
        let singular = s.strip_suffix('s').unwrap_or(s);
        Metric::ALL.iter().find(|(n, _)| *n == s || *n == singular).map(|(_, m)| *m)
    }

    fn name(self) -> &'static str {
        Metric::ALL.iter().find(|(_, m)| *m == self).map(|(n, _)| *n).expect("every metric is named")
    }

    /// The hook its values come from, for the event metrics.
    fn capability(self) -> Option<beam_probes::Capability> {
        use beam_probes::Capability as C;
        match self {
            Metric::Gc => Some(C::Gc),
            Metric::Schedule => Some(C::Schedule),
            Metric::Send => Some(C::Send),
            Metric::Spawn => Some(C::Spawn),
            Metric::Exit => Some(C::Exit),
            _ => None,
        }
    }

    /// Events that are counted, not measured: only count, total and rate mean something.
    fn counted(self) -> bool {
        matches!(self, Metric::Send | Metric::Spawn | Metric::Exit)
    }

    fn kind(self) -> Unit {
        match self {
            Metric::Gc | Metric::Schedule => Unit::Seconds,
            Metric::Memory | Metric::Heap => Unit::Bytes,
            Metric::Cpu => Unit::Share,
            _ => Unit::Count,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Max,
    Min,
    Mean,
    Percentile(u8),
    Count,
    Total,
    Rate,
}

impl Aggregate {
    fn parse(s: &str) -> Option<Aggregate> {
        Some(match s {
            "max" => Aggregate::Max,
            "min" => Aggregate::Min,
            "mean" | "avg" => Aggregate::Mean,
            "count" => Aggregate::Count,
            "total" | "sum" => Aggregate::Total,
            "rate" => Aggregate::Rate,
            p if p.starts_with('p') => Aggregate::Percentile(p[1..].parse().ok().filter(|n: &u8| (1..=99).contains(n))?),
            _ => return None,
        })
    }

    fn name(self) -> String {
        match self {
            Aggregate::Max => "max".into(),
            Aggregate::Min => "min".into(),
            Aggregate::Mean => "mean".into(),
            Aggregate::Percentile(p) => format!("p{p}"),
            Aggregate::Count => "count".into(),
            Aggregate::Total => "total".into(),
            Aggregate::Rate => "rate".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            Op::Ne => (a - b).abs() > 1e-9 * b.abs().max(1.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Bytes,
    Share,
    Count,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    pub text: String,
    pub aggregate: Aggregate,
    pub metric: Metric,
    /// `of` (or `from`) and `to` processes, as the user named them.
    pub of: Option<String>,
    pub to: Option<String>,
    pub op: Op,
    pub value: f64,
}

#[derive(Debug)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Words, with `"quoted strings"` and operators apart.
fn tokens(s: &str) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut t = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => t.push(c),
                    None => return Err(ParseError("a quote is not closed".into())),
                }
            }
            out.push(t);
        } else if "<>=!".contains(c) {
            let mut t = String::new();
            while let Some(&c) = chars.peek().filter(|c| "<>=!".contains(**c)) {
                t.push(c);
                chars.next();
            }
            out.push(t);
        } else {
            let mut t = String::new();
            while let Some(&c) = chars.peek().filter(|c| !c.is_whitespace() && !"<>=!\"".contains(**c)) {
                t.push(c);
                chars.next();
            }
            out.push(t);
        }
    }
    // `<0.80.0>` starting with `<` is read by the operator branch: join it back.
    let mut joined: Vec<String> = Vec::new();
    let mut i = 0;
    while i < out.len() {
        if out[i] == "<" && i + 2 < out.len() && out[i + 2] == ">" && out[i + 1].chars().all(|c| c.is_ascii_digit() || c == '.') {
            joined.push(format!("<{}>", out[i + 1]));
            i += 3;
        } else {
            joined.push(out[i].clone());
            i += 1;
        }
    }
    Ok(joined)
}

fn value(s: &str, metric: Metric) -> Result<f64, ParseError> {
    let t = s.trim().replace(['_', ','], "");
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| ParseError(format!("{s:?} is not a number")))?;
    let unit = unit.trim();
    let scaled = match (metric.kind(), unit) {
        (_, "") => n,
        (Unit::Seconds, "ns") => n / 1e9,
        (Unit::Seconds, "us" | "µs") => n / 1e6,
        (Unit::Seconds, "ms") => n / 1e3,
        (Unit::Seconds, "s") => n,
        (Unit::Bytes, "B") => n,
        (Unit::Bytes, "KiB") => n * 1024.0,
        (Unit::Bytes, "MiB") => n * 1024.0 * 1024.0,
        (Unit::Bytes, "GiB") => n * 1024.0 * 1024.0 * 1024.0,
        (Unit::Bytes, "KB" | "kB") => n * 1e3,
        (Unit::Bytes, "MB") => n * 1e6,
        (Unit::Bytes, "GB") => n * 1e9,
        (Unit::Share, "%") => n / 100.0,
        (_, "/s") => n,
        _ => return Err(ParseError(format!("{s:?}: the unit {unit:?} does not fit {}", metric.name()))),
    };
    Ok(scaled)
}

/// Parses one assertion.
pub fn parse(text: &str) -> Result<Assertion, ParseError> {
    let toks = tokens(text)?;
    let mut i = 0;
    let word = |i: usize| toks.get(i).map(String::as_str).unwrap_or("");
    let negated = word(0) == "no";
    if negated {
        i += 1;
    }
    let mut aggregate = None;
    if !negated && let Some(a) = Aggregate::parse(word(i)) {
        aggregate = Some(a);
        i += 1;
    }
    let metric = Metric::parse(word(i)).ok_or_else(|| {
        let names: Vec<&str> = Metric::ALL.iter().map(|(n, _)| *n).collect();
        ParseError(format!("expected a metric at {:?} (one of {})", word(i), names.join(", ")))
    })?;
    i += 1;
    let (mut of, mut to) = (None, None);
    loop {
        match word(i) {
            "of" | "from" if of.is_none() && !word(i + 1).is_empty() => {
                of = Some(toks[i + 1].clone());
                i += 2;
            }
            "to" if to.is_none() && !word(i + 1).is_empty() && word(i + 1) != "be" => {
                to = Some(toks[i + 1].clone());
                i += 2;
            }
            _ => break,
        }
    }
    let op = if negated {
        let w = word(i);
        let two = format!("{w} {}", word(i + 1));
        if two == "longer than" || two == "more than" || two == "greater than" || two == "bigger than" {
            i += 2;
        } else if w == "over" || w == "above" || w == ">" {
            i += 1;
        } else {
            return Err(ParseError(format!(
                "after `no {}` expected `over`, `above`, `longer than` or `more than`, not {w:?}",
                metric.name()
            )));
        }
        Op::Le
    } else {
        let op = match word(i) {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" | "=" => Op::Eq,
            "!=" => Op::Ne,
            w => return Err(ParseError(format!("expected an operator (<, <=, >, >=, ==, !=) at {w:?}"))),
        };
        i += 1;
        op
    };
    let v = value(word(i), metric)?;
    i += 1;
    if i < toks.len() {
        return Err(ParseError(format!("unexpected {:?} after the value", toks[i..].join(" "))));
    }
    let aggregate = aggregate.unwrap_or(if metric.counted() { Aggregate::Count } else { Aggregate::Max });
    if metric.counted() && !matches!(aggregate, Aggregate::Count | Aggregate::Total | Aggregate::Rate) {
        return Err(ParseError(format!("{} events are counted: use count, total or rate", metric.name())));
    }
    if aggregate == Aggregate::Rate && metric.capability().is_none() {
        return Err(ParseError(format!("rate is for events (gc, schedule, send, spawn, exit), not {}", metric.name())));
    }
    if to.is_some() && metric != Metric::Send {
        return Err(ParseError("`to` is for send: `count send from a to b < 100`".into()));
    }
    Ok(Assertion { text: text.to_owned(), aggregate, metric, of, to, op, value: v })
}

/// One value an assertion looks at, with where it came from.
struct Sample {
    value: f64,
    t: u64,
    pid: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Confirmed,
    Refuted,
    /// The recording cannot tell (the hook was never attached, nothing matched).
    Undecided,
}

#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub evidence: Vec<String>,
}

fn show(metric: Metric, v: f64) -> String {
    match metric.kind() {
        Unit::Seconds => duration_ns((v * 1e9) as u64),
        Unit::Bytes => bytes(v as u64),
        Unit::Share => format!("{:.1}%", v * 100.0),
        Unit::Count if v.fract() == 0.0 => count(v as u64),
        Unit::Count => format!("{v:.2}"),
    }
}

/// Checks an assertion against a recording.
pub fn check(rec: &Recording, a: &Assertion) -> Outcome {
    let resolve = |q: &Option<String>| -> Result<Option<Vec<u64>>, String> {
        match q {
            None => Ok(None),
            Some(q) => {
                let found = rec.matching(q);
                if found.is_empty() { Err(format!("no process in the recording is {q:?}")) } else { Ok(Some(found)) }
            }
        }
    };
    let (of, to) = match (resolve(&a.of), resolve(&a.to)) {
        (Ok(of), Ok(to)) => (of, to),
        (Err(e), _) | (_, Err(e)) => return Outcome { verdict: Verdict::Undecided, evidence: vec![e] },
    };
    let wanted = |set: &Option<Vec<u64>>, pid: u64| set.as_ref().is_none_or(|s| s.contains(&pid));
    let mut samples: Vec<Sample> = Vec::new();
    let mut evidence = Vec::new();
    let observed = a.metric.capability().map(|c| rec.observed_seconds(c.index() as u8));
    if let Some(o) = observed {
        let span = rec.end as f64 / 1e9;
        if o <= 0.0 {
            return Outcome {
                verdict: Verdict::Undecided,
                evidence: vec![format!(
                    "the {} hook was never attached in this recording (mode {}): record with --mode trace, or longer",
                    a.metric.name(),
                    rec.meta().mode
                )],
            };
        }
        if o < span * 0.95 {
            evidence.push(format!(
                "{} events were observed {o:.1} s of the {span:.1} s recorded (the hook's windows); the rest is unseen",
                a.metric.name()
            ));
        }
    }
    match a.metric {
        Metric::Gc | Metric::Schedule | Metric::Send | Metric::Spawn | Metric::Exit => {
            for e in &rec.events {
                let s = match (a.metric, e.what) {
                    (Metric::Gc, What::Gc { pid, duration_ns }) if wanted(&of, pid) => (duration_ns as f64 / 1e9, Some(pid)),
                    (Metric::Schedule, What::Schedule { pid, run_ns, .. }) if wanted(&of, pid) => (run_ns as f64 / 1e9, Some(pid)),
                    (Metric::Send, What::Send { from, to: dest } | What::SendToAlias { from, to: dest })
                        if wanted(&of, from) && wanted(&to, dest) =>
                    {
                        (1.0, Some(from))
                    }
                    (Metric::Spawn, What::Spawn { parent, child }) if parent.is_some_and(|p| wanted(&of, p)) || (of.is_none()) => {
                        (1.0, Some(parent.unwrap_or(child)))
                    }
                    (Metric::Exit, What::Exit { pid }) if wanted(&of, pid) => (1.0, Some(pid)),
                    _ => continue,
                };
                samples.push(Sample { value: s.0, t: e.t, pid: s.1 });
            }
        }
        Metric::Mailbox | Metric::Memory | Metric::Heap => {
            for t in &rec.tables {
                for p in t.processes.iter().filter(|p| wanted(&of, p.pid)) {
                    let v = match a.metric {
                        Metric::Mailbox => p.message_queue_len,
                        Metric::Memory => p.memory_bytes,
                        _ => p.heap_bytes,
                    };
                    samples.push(Sample { value: v as f64, t: t.t, pid: Some(p.pid) });
                }
            }
            evidence.push(format!("from {} process-table reads", rec.tables.len()));
        }
        Metric::Processes => {
            for t in &rec.tables {
                let n = t.processes.iter().filter(|p| wanted(&of, p.pid)).count();
                samples.push(Sample { value: n as f64, t: t.t, pid: None });
            }
        }
        Metric::RunQueue => {
            for p in &rec.procs {
                samples.push(Sample { value: p.run_queues.iter().sum::<u32>() as f64, t: p.t, pid: None });
            }
        }
        Metric::Cpu => {
            let frequency = rec.meta().frequency as f64;
            let span = rec.end as f64 / 1e9;
            if frequency <= 0.0 || span <= 0.0 {
                return Outcome {
                    verdict: Verdict::Undecided,
                    evidence: vec!["the recording has no CPU samples (sampling was off)".into()],
                };
            }
            let mut per: std::collections::HashMap<u64, u64> = Default::default();
            for s in &rec.samples {
                if let Owner::Process(p) = s.owner
                    && wanted(&of, p)
                {
                    *per.entry(p).or_default() += 1;
                }
            }
            // Each process's share of a core over the recording.
            for (pid, n) in per {
                samples.push(Sample { value: n as f64 / frequency / span, t: 0, pid: Some(pid) });
            }
        }
    }
    let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
    let value = match a.aggregate {
        Aggregate::Count => Some(values.len() as f64),
        Aggregate::Total => Some(values.iter().sum()),
        Aggregate::Rate => observed.filter(|o| *o > 0.0).map(|o| values.iter().sum::<f64>() / o),
        _ if values.is_empty() => None,
        Aggregate::Max => values.iter().copied().reduce(f64::max),
        Aggregate::Min => values.iter().copied().reduce(f64::min),
        Aggregate::Mean => Some(values.iter().sum::<f64>() / values.len() as f64),
        Aggregate::Percentile(p) => {
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            let i = ((p as f64 / 100.0) * (v.len() - 1) as f64).round() as usize;
            Some(v[i.min(v.len() - 1)])
        }
    };
    let Some(value) = value else {
        evidence.push(format!("no {} values{}", a.metric.name(), a.of.as_ref().map(|o| format!(" of {o}")).unwrap_or_default()));
        // "No X over V" holds of nothing; any other aggregate of nothing cannot be told.
        let verdict =
            if a.aggregate == Aggregate::Max && matches!(a.op, Op::Lt | Op::Le) { Verdict::Confirmed } else { Verdict::Undecided };
        return Outcome { verdict, evidence };
    };
    let holds = a.op.holds(value, a.value);
    let shown = |v: f64| match a.aggregate {
        Aggregate::Count => count(v as u64),
        Aggregate::Rate => format!("{v:.2}/s"),
        _ => show(a.metric, v),
    };
    let of = match a.aggregate {
        Aggregate::Count => String::new(),
        _ => format!(" ({} values)", count(values.len() as u64)),
    };
    evidence.insert(0, format!("{} {} is {}{of}", a.aggregate.name(), a.metric.name(), shown(value)));
    // The values that break it (or, for max, the largest), with where and when.
    // (A count, total or rate has no one value to blame.)
    let measured = !matches!(a.aggregate, Aggregate::Count | Aggregate::Total | Aggregate::Rate);
    if measured && (matches!(a.aggregate, Aggregate::Max | Aggregate::Min) || !holds) {
        let mut worst: Vec<&Sample> = samples.iter().filter(|s| !a.op.holds(s.value, a.value) || !holds).collect();
        match a.aggregate {
            Aggregate::Min => worst.sort_by(|x, y| x.value.total_cmp(&y.value)),
            _ => worst.sort_by(|x, y| y.value.total_cmp(&x.value)),
        }
        if holds {
            worst.truncate(1);
        }
        // One line per process: its worst.
        let mut seen = std::collections::HashSet::new();
        worst.retain(|s| s.pid.is_none() || seen.insert(s.pid));
        for s in worst.iter().take(5) {
            let who = s.pid.map(|p| format!(" {}", rec.who(p))).unwrap_or_default();
            let when = if s.t > 0 || a.metric != Metric::Cpu { format!(" at {}", at(s.t)) } else { String::new() };
            evidence.push(format!("{}{who}{when}", show(a.metric, s.value)));
        }
    }
    Outcome { verdict: if holds { Verdict::Confirmed } else { Verdict::Refuted }, evidence }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_of_the_readme() {
        let a = parse("no gc of my_repo longer than 5ms").unwrap();
        assert_eq!((a.aggregate, a.metric, a.of.as_deref(), a.op, a.value), (Aggregate::Max, Metric::Gc, Some("my_repo"), Op::Le, 0.005));
        let a = parse("no mailbox over 1000").unwrap();
        assert_eq!((a.aggregate, a.metric, a.op, a.value), (Aggregate::Max, Metric::Mailbox, Op::Le, 1000.0));
        let a = parse("count send from <0.80.0> to sink == 5000").unwrap();
        assert_eq!((a.aggregate, a.of.as_deref(), a.to.as_deref(), a.op), (Aggregate::Count, Some("<0.80.0>"), Some("sink"), Op::Eq));
        let a = parse("p99 schedule < 2ms").unwrap();
        assert_eq!((a.aggregate, a.value), (Aggregate::Percentile(99), 0.002));
        let a = parse("max memory of \"Elixir.MyApp.Repo\" < 50MiB").unwrap();
        assert_eq!((a.of.as_deref(), a.value), (Some("Elixir.MyApp.Repo"), 50.0 * 1024.0 * 1024.0));
        let a = parse("max cpu of burner<50%").unwrap();
        assert_eq!((a.of.as_deref(), a.op, a.value), (Some("burner"), Op::Lt, 0.5));
        assert_eq!(parse("rate spawn < 100/s").unwrap().aggregate, Aggregate::Rate);
        assert_eq!(parse("exits of worker == 0").unwrap().aggregate, Aggregate::Count);
    }

    #[test]
    fn says_what_is_wrong() {
        for (bad, says) in [
            ("max gcs", "expected an operator"),
            ("nothing < 3", "expected a metric"),
            ("max send < 3", "counted"),
            ("no gc of x under 5ms", "expected `over`"),
            ("max gc < 5 parsecs", "unexpected"),
            ("max gc < 5kg", "does not fit"),
            ("rate mailbox < 3", "rate is for events"),
            ("max gc of \"x < 3", "quote"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
