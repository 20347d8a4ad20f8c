//! What changed between two recordings, ranked. Each change is scored by how much of its
//! section's whole it moved: CPU by the cores of the busier run, messages by the busier run's
//! total rate, and so on, so that changes of different kinds rank against each other and a
//! function that went from 5% to 60% of the CPU outranks one that went from 0.1% to 0.4%.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use super::stats::Stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    Cpu,
    Messages,
    Gc,
    Scheduling,
    Mailbox,
    Memory,
}

impl Section {
    pub fn title(self) -> &'static str {
        match self {
            Section::Cpu => "CPU by function (cores)",
            Section::Messages => "Messages per pair (per second the send hook was attached)",
            Section::Gc => "Garbage collection by process (seconds collecting per second observed)",
            Section::Scheduling => "Time scheduled in by process (seconds per second observed)",
            Section::Mailbox => "Mailbox peaks (messages, at the process-table reads)",
            Section::Memory => "Memory peaks (bytes, at the process-table reads)",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Section::Cpu => "CPU",
            Section::Messages => "messages",
            Section::Gc => "GC",
            Section::Scheduling => "scheduled",
            Section::Mailbox => "mailbox",
            Section::Memory => "memory",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Change {
    pub section: Section,
    pub what: String,
    pub before: f64,
    pub after: f64,
    /// The share of its section's whole that moved (0..1).
    pub score: f64,
}

/// Changes of one section: every key of either side, scored against the larger whole.
fn section<K: Eq + Hash + Clone>(
    section: Section,
    before: &HashMap<K, f64>,
    after: &HashMap<K, f64>,
    whole: f64,
    name: impl Fn(&K) -> String,
) -> Vec<Change> {
    let keys: HashSet<&K> = before.keys().chain(after.keys()).collect();
    let whole = whole.max(f64::MIN_POSITIVE);
    let mut out: Vec<Change> = keys
        .into_iter()
        .map(|k| {
            let (b, a) = (before.get(k).copied().unwrap_or(0.0), after.get(k).copied().unwrap_or(0.0));
            Change { section, what: name(k), before: b, after: a, score: (a - b).abs() / whole }
        })
        .filter(|c| c.before != c.after)
        .collect();
    out.sort_by(|x, y| y.score.total_cmp(&x.score).then_with(|| x.what.cmp(&y.what)));
    out
}

fn total<K>(m: &HashMap<K, f64>) -> f64 {
    m.values().sum()
}

fn floats<K: Clone + Eq + Hash>(m: &HashMap<K, u64>) -> HashMap<K, f64> {
    m.iter().map(|(k, v)| (k.clone(), *v as f64)).collect()
}

pub struct Diff {
    pub sections: Vec<Vec<Change>>,
    /// Sections that could not be compared, and why (no hook windows on one side...).
    pub notes: Vec<String>,
}

impl Diff {
    pub fn of(before: &Stats, after: &Stats) -> Diff {
        use beam_probes::Capability;
        let mut sections = Vec::new();
        let mut notes = Vec::new();
        let (cb, ca) = (total(&before.cpu_functions), total(&after.cpu_functions));
        sections.push(section(Section::Cpu, &before.cpu_functions, &after.cpu_functions, cb.max(ca), |k| k.clone()));
        let observed = |c: Capability| (before.observed.get(&c).copied().unwrap_or(0.0), after.observed.get(&c).copied().unwrap_or(0.0));
        let mut events = |s: Section, c: Capability, push: &mut dyn FnMut()| {
            let (b, a) = observed(c);
            if b > 0.0 && a > 0.0 {
                push();
            } else {
                notes.push(format!(
                    "{} not compared: the {} hook was attached {:.1} s before and {:.1} s after",
                    s.label(),
                    c.name(),
                    b,
                    a
                ));
            }
        };
        let mut pushed = Vec::new();
        events(Section::Messages, Capability::Send, &mut || {
            let whole = total(&before.pairs).max(total(&after.pairs));
            pushed.push(section(Section::Messages, &before.pairs, &after.pairs, whole, |(f, t)| format!("{f} -> {t}")));
        });
        events(Section::Gc, Capability::Gc, &mut || {
            let b: HashMap<String, f64> = before.gc.iter().map(|(k, g)| (k.clone(), g.seconds_per_second)).collect();
            let a: HashMap<String, f64> = after.gc.iter().map(|(k, g)| (k.clone(), g.seconds_per_second)).collect();
            let whole = total(&b).max(total(&a));
            pushed.push(section(Section::Gc, &b, &a, whole, |k| k.clone()));
        });
        events(Section::Scheduling, Capability::Schedule, &mut || {
            let whole = total(&before.run).max(total(&after.run));
            pushed.push(section(Section::Scheduling, &before.run, &after.run, whole, |k| k.clone()));
        });
        sections.extend(pushed);
        let (mb, ma) = (floats(&before.mailbox_peak), floats(&after.mailbox_peak));
        // A mailbox moves against the longest of either run, and never less than 1,000: a
        // queue of 3 becoming 9 is not news.
        let longest = mb.values().chain(ma.values()).copied().fold(1000.0, f64::max);
        sections.push(section(Section::Mailbox, &mb, &ma, longest, |k| k.clone()));
        let (mb, ma) = (floats(&before.memory_peak), floats(&after.memory_peak));
        sections.push(section(Section::Memory, &mb, &ma, total(&mb).max(total(&ma)), |k| k.clone()));
        Diff { sections, notes }
    }

    /// The biggest changes of all sections, best first. A process's time scheduled in is its
    /// CPU seen another way: it ranks only where the CPU section does not already say it.
    pub fn ranked(&self, n: usize) -> Vec<&Change> {
        let mut all: Vec<&Change> = self.sections.iter().flatten().filter(|c| c.section != Section::Scheduling).collect();
        all.sort_by(|x, y| y.score.total_cmp(&x.score).then_with(|| x.what.cmp(&y.what)));
        all.truncate(n);
        all
    }
}
