//! ETS table growth: a table whose memory keeps growing across reads, the way a cache without
//! eviction or a table nobody deletes from grows. Unlike heaps, tables do not shrink at
//! collections, but a table that fills and is trimmed in turns should not fire: as for process
//! memory, over the window the table set a new high at least `min_new_highs` times and ends at
//! least `growth_ratio` above where the window started. The finding names the table and its
//! owner (who is to fix it).

use std::collections::{HashMap, VecDeque};

use super::memory::{Growth, growth};
use super::settings::Memory as Settings;
use super::{Context, Detector, Kind, Observation, Severity, Subject};
use crate::event::SharedTableRead;

/// At most this many tables tracked (the largest).
const TRACKED: usize = 200;
/// Reads kept per table.
const HISTORY: usize = 120;

/// What is kept of a table between reads.
struct Tracked {
    name: String,
    owner: u64,
    kind: &'static str,
    protection: &'static str,
    /// (seconds, bytes, objects)
    reads: VecDeque<(f64, u64, u64)>,
}

pub struct EtsGrowth {
    s: Settings,
    /// By table id (unique for the VM's life).
    tables: HashMap<String, Tracked>,
}

impl EtsGrowth {
    pub fn new(s: Settings) -> EtsGrowth {
        EtsGrowth { s, tables: HashMap::new() }
    }
}

impl Detector for EtsGrowth {
    fn kind(&self) -> Kind {
        Kind::EtsGrowth
    }

    fn table(&mut self, read: &SharedTableRead) {
        let Some(ets) = &read.ets else { return };
        let t = read.ts_ns as f64 / 1e9;
        let floor = self.s.min_bytes / 4;
        let mut big: Vec<_> = ets.tables.iter().filter(|e| e.memory_bytes >= floor).collect();
        big.sort_by_key(|e| std::cmp::Reverse(e.memory_bytes));
        big.truncate(TRACKED);
        let seen: std::collections::HashSet<&str> = big.iter().map(|e| e.id.as_str()).collect();
        self.tables.retain(|id, _| seen.contains(id.as_str()));
        let window = self.s.window.as_secs_f64();
        for e in big {
            let tr = self.tables.entry(e.id.clone()).or_insert_with(|| Tracked {
                name: e.name.clone(),
                owner: e.owner_term,
                kind: e.table_type.label(),
                protection: e.protection.label(),
                reads: VecDeque::new(),
            });
            // The owner changes when the table is given away (ets:give_away, an heir).
            tr.owner = e.owner_term;
            tr.reads.push_back((t, e.memory_bytes, e.size));
            while tr.reads.len() > HISTORY || tr.reads.front().is_some_and(|f| t - f.0 > window) {
                tr.reads.pop_front();
            }
        }
    }

    fn observe(&mut self, ctx: &Context<'_>) -> Vec<Observation> {
        let mut out = Vec::new();
        for (id, tr) in &self.tables {
            let (Some(first), Some(last)) = (tr.reads.front(), tr.reads.back()) else { continue };
            let subject = Subject::Table { name: tr.name.clone(), id: id.clone(), owner: tr.owner };
            let firing = ctx.is_firing(Kind::EtsGrowth, &subject);
            let Some(Growth { highs, span, per_minute }) = growth(&self.s, firing, tr.reads.iter().map(|r| (r.0, r.1))) else {
                continue;
            };
            let owner = ctx.who(tr.owner);
            out.push(Observation {
                kind: Kind::EtsGrowth,
                subject,
                severity: Severity::Warning,
                value: last.1 as f64,
                summary: format!(
                    "ETS table {} owned by {owner} grew from {:.1} MiB to {:.1} MiB in {span:.0} s ({:.1} MiB/min, {} objects now)",
                    tr.name,
                    first.1 as f64 / 1048576.0,
                    last.1 as f64 / 1048576.0,
                    per_minute / 1048576.0,
                    last.2
                ),
                evidence: vec![
                    ("table", tr.name.clone()),
                    ("id", id.clone()),
                    ("owner", owner),
                    ("type", tr.kind.to_owned()),
                    ("protection", tr.protection.to_owned()),
                    ("memory_bytes", last.1.to_string()),
                    ("memory_bytes_at_window_start", first.1.to_string()),
                    ("growth_bytes_per_minute", format!("{per_minute:.0}")),
                    ("objects", last.2.to_string()),
                    ("objects_at_window_start", first.2.to_string()),
                    ("new_highs", highs.to_string()),
                ],
            });
        }
        out
    }
}
