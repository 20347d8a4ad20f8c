//! Names for the BEAM's JIT code: which Erlang function an instruction address belongs to.
//!
//! The JIT (OTP 24+) emits machine code at run time, so no ELF file names it. Two sources do:
//! - [`perf_map`]: `/tmp/perf-<pid>.map`, written by a VM started with `+JPperf true|map`
//!   (in OTP 25 the same flag turns on JIT frame pointers).
//! - [`gdb_interface`]: the GDB JIT interface, always on: a list of ERTS records in the VM's
//!   memory, read from outside with `process_vm_readv`.
//!
//! Both only grow while the VM runs (new modules, reloads), so both are read incrementally by
//! a [`JitSymbolReader`] into one [`JitSymbols`] table.

pub mod gdb_interface;
pub mod perf_map;

use std::fmt;

use crate::error::Result;
use crate::target::BeamTarget;
use gdb_interface::GdbJitReader;
use perf_map::PerfMapReader;

/// What OTP appends to a function's name for the range holding its `ErtsCodeInfo` and
/// prologue (the function's entry point).
const PROLOGUE_SUFFIX: &str = "-CodeInfoPrologue";

/// One named range of JIT code. Names are spelled as OTP writes them, without the perf map's
/// `$` marker: `Module:function/arity` for Erlang functions (atoms quoted as `~w` quotes them,
/// e.g. `erl_init:'-start/2-fun-0-'/0`), `Module:function/arity-CodeInfoPrologue` for the
/// function's header, `Module::codeHeader`/`Module::codeFooter`, and `global::name` for the
/// JIT's shared helper code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JitSymbol {
    pub start: u64,
    pub size: u64,
    pub name: String,
}

impl JitSymbol {
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }

    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end()
    }

    /// The function this code belongs to: the name without the `-CodeInfoPrologue` suffix
    /// the JIT gives a function's header and entry code (calls land there first, so CPU
    /// samples do too: about a tenth of a tight loop's).
    pub fn function(&self) -> &str {
        self.name.strip_suffix(PROLOGUE_SUFFIX).unwrap_or(&self.name)
    }
}

/// JIT symbols sorted by address, without overlaps, for binary-search lookups.
///
/// Overlaps do happen in the sources: neither the perf map nor OTP 25's GDB records drop the
/// ranges of purged modules, and the JIT reuses that memory for code loaded later. The newer
/// range is the true one, so [`JitSymbols::extend`] drops every older entry that an entry
/// added later overlaps.
#[derive(Debug, Clone, Default)]
pub struct JitSymbols {
    symbols: Vec<JitSymbol>,
}

impl JitSymbols {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// In address order.
    pub fn iter(&self) -> std::slice::Iter<'_, JitSymbol> {
        self.symbols.iter()
    }

    /// The symbol whose range holds `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&JitSymbol> {
        let after = self.symbols.partition_point(|s| s.start <= addr);
        let candidate = self.symbols.get(after.checked_sub(1)?)?;
        candidate.contains(addr).then_some(candidate)
    }

    /// Adds `symbols`, given oldest first: each one evicts the older entries it overlaps.
    /// Empty ranges are dropped (no address can be in them). Returns how many symbols were
    /// not already present exactly as given.
    pub fn extend(&mut self, symbols: impl IntoIterator<Item = JitSymbol>) -> usize {
        let fresh: Vec<JitSymbol> = symbols.into_iter().filter(|s| s.size > 0 && !self.contains_exactly(s)).collect();
        let added = fresh.len();
        if added > 0 {
            let old = std::mem::take(&mut self.symbols);
            self.symbols = merge_newest_wins(old, fresh);
        }
        added
    }

    /// Adds every symbol of `newer`, which wins over this table where they overlap.
    pub fn merge(&mut self, newer: JitSymbols) -> usize {
        self.extend(newer.symbols)
    }

    fn contains_exactly(&self, symbol: &JitSymbol) -> bool {
        self.lookup(symbol.start).is_some_and(|s| s == symbol)
    }
}

impl<'a> IntoIterator for &'a JitSymbols {
    type Item = &'a JitSymbol;
    type IntoIter = std::slice::Iter<'a, JitSymbol>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<JitSymbol> for JitSymbols {
    fn from_iter<I: IntoIterator<Item = JitSymbol>>(iter: I) -> Self {
        let mut table = JitSymbols::new();
        table.extend(iter);
        table
    }
}

/// Merges `old` (non-overlapping) and `fresh` (oldest first) into one address-sorted list in
/// which an entry survives only if no newer entry overlaps it, whether or not that newer one
/// survives itself: a module's code is one allocation, so once newer code was placed over
/// part of it, the whole module is gone.
fn merge_newest_wins(old: Vec<JitSymbol>, fresh: Vec<JitSymbol>) -> Vec<JitSymbol> {
    let mut newer = Coverage::default();
    let mut kept = Vec::with_capacity(old.len() + fresh.len());
    // Newest first; the table's own entries are older than every fresh one.
    for symbol in fresh.into_iter().rev().chain(old) {
        let shadowed = newer.overlaps(symbol.start, symbol.end());
        newer.insert(symbol.start, symbol.end());
        if !shadowed {
            kept.push(symbol);
        }
    }
    kept.sort_unstable_by_key(|s| s.start);
    kept
}

/// A union of address ranges, kept as disjoint `[start, end)` intervals keyed by start.
#[derive(Default)]
struct Coverage {
    intervals: std::collections::BTreeMap<u64, u64>,
}

impl Coverage {
    /// Whether `[start, end)` meets the union. Intervals are disjoint and sorted, so only the
    /// last one starting before `end` can reach past `start`.
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.intervals.range(..end).next_back().is_some_and(|(_, &e)| e > start)
    }

    fn insert(&mut self, mut start: u64, mut end: u64) {
        // Absorb every interval that overlaps or touches `[start, end]`.
        while let Some((&s, &e)) = self.intervals.range(..=end).next_back() {
            if e < start {
                break;
            }
            self.intervals.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.intervals.insert(start, end);
    }
}

/// Where JIT symbols come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitSource {
    /// `/tmp/perf-<pid>.map` (the VM runs with `+JPperf true|map`).
    PerfMap,
    /// The GDB JIT interface records in the VM's memory.
    GdbInterface,
}

impl JitSource {
    /// For people: the source, and what it means for stack unwinding.
    pub fn describe(&self) -> &'static str {
        match self {
            JitSource::PerfMap => "perf map (VM started with +JPperf: frame pointers available)",
            JitSource::GdbInterface => "GDB JIT interface (no perf map: VM started without +JPperf)",
        }
    }
}

impl fmt::Display for JitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JitSource::PerfMap => "perf map",
            JitSource::GdbInterface => "gdb jit interface",
        })
    }
}

/// Reads one source incrementally: each [`refresh`](JitSymbolReader::refresh) adds what the
/// VM registered since the last one. Made by `BeamTarget::jit_symbol_reader`.
#[derive(Debug)]
pub struct JitSymbolReader {
    inner: ReaderKind,
}

#[derive(Debug)]
enum ReaderKind {
    PerfMap(PerfMapReader),
    Gdb(GdbJitReader),
}

impl JitSymbolReader {
    /// The best reader for a VM: its perf map when it writes one, else the GDB JIT interface
    /// (same as `BeamTarget::jit_symbol_reader`).
    pub fn new(target: &BeamTarget) -> Result<Self> {
        target.jit_symbol_reader()
    }

    pub fn from_perf_map(reader: PerfMapReader) -> Self {
        JitSymbolReader { inner: ReaderKind::PerfMap(reader) }
    }

    pub fn from_gdb_interface(reader: GdbJitReader) -> Self {
        JitSymbolReader { inner: ReaderKind::Gdb(reader) }
    }

    pub fn source(&self) -> JitSource {
        match self.inner {
            ReaderKind::PerfMap(_) => JitSource::PerfMap,
            ReaderKind::Gdb(_) => JitSource::GdbInterface,
        }
    }

    /// Adds the symbols registered since the last refresh; returns how many were new.
    pub fn refresh(&mut self, symbols: &mut JitSymbols) -> Result<usize> {
        let fresh = match &mut self.inner {
            ReaderKind::PerfMap(reader) => reader.read_new()?,
            ReaderKind::Gdb(reader) => reader.read_new()?,
        };
        Ok(symbols.extend(fresh))
    }

    /// Input that was skipped because it did not decode: perf map lines or GDB records.
    pub fn skipped(&self) -> u64 {
        match &self.inner {
            ReaderKind::PerfMap(reader) => reader.bad_lines(),
            ReaderKind::Gdb(reader) => reader.stats().bad_entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(start: u64, size: u64, name: &str) -> JitSymbol {
        JitSymbol { start, size, name: name.to_owned() }
    }

    #[test]
    fn lookup_finds_the_range_holding_an_address() {
        let table: JitSymbols =
            [sym(0x3000, 0x10, "c:c/0"), sym(0x1000, 0x100, "a:a/0"), sym(0x2000, 0x20, "b:b/1")].into_iter().collect();
        assert_eq!(table.len(), 3);
        assert_eq!(table.lookup(0x1000).unwrap().name, "a:a/0");
        assert_eq!(table.lookup(0x10ff).unwrap().name, "a:a/0");
        assert!(table.lookup(0x1100).is_none(), "end is exclusive");
        assert!(table.lookup(0xfff).is_none());
        assert_eq!(table.lookup(0x201f).unwrap().name, "b:b/1");
        assert!(table.lookup(0x2500).is_none(), "gap between ranges");
        assert_eq!(table.lookup(0x3005).unwrap().name, "c:c/0");
        assert!(table.lookup(u64::MAX).is_none());
        assert!(JitSymbols::new().lookup(0x1000).is_none());
        let starts: Vec<u64> = table.iter().map(|s| s.start).collect();
        assert_eq!(starts, [0x1000, 0x2000, 0x3000]);
    }

    #[test]
    fn newer_ranges_replace_the_older_ones_they_overlap() {
        let mut table: JitSymbols =
            [sym(0x1000, 0x100, "old:a/0"), sym(0x1100, 0x100, "old:b/0")].into_iter().collect();
        // A module loaded into memory freed by a purge: it covers the end of a/0 and b/0.
        let added = table.extend([sym(0x10f0, 0x20, "new:x/0")]);
        assert_eq!(added, 1);
        assert_eq!(table.lookup(0x1100).unwrap().name, "new:x/0");
        assert!(table.lookup(0x1000).is_none(), "the overlapped old range is gone whole");
        assert_eq!(table.lookup(0x1150).map(|s| s.name.as_str()), None);
        // Within one batch, later entries are newer too.
        let mut table = JitSymbols::new();
        table.extend([sym(0x1000, 0x100, "first:f/0"), sym(0x1080, 0x100, "second:f/0")]);
        assert_eq!(table.len(), 1);
        assert_eq!(table.lookup(0x1080).unwrap().name, "second:f/0");
    }

    #[test]
    fn an_entry_overlapped_by_any_newer_one_is_gone_even_if_that_one_is_too() {
        // old:e/0 lies in memory that big:f/0 (newer) took; big:f/0 was then purged and
        // small:g/0 (newest) placed inside it. Neither old:e/0 nor big:f/0 is live code.
        let mut table: JitSymbols = [sym(0x1060, 0x10, "old:e/0")].into_iter().collect();
        table.extend([sym(0x1000, 0x100, "big:f/0"), sym(0x1010, 0x10, "small:g/0")]);
        let names: Vec<&str> = table.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["small:g/0"]);
    }

    #[test]
    fn extend_counts_only_what_is_new_and_drops_empty_ranges() {
        let mut table = JitSymbols::new();
        assert_eq!(table.extend([sym(0x1000, 0x10, "a:a/0"), sym(0x2000, 0, "empty")]), 1);
        assert_eq!(table.extend([sym(0x1000, 0x10, "a:a/0")]), 0, "same symbol again");
        assert_eq!(table.extend([sym(0x1000, 0x10, "b:b/0")]), 1, "renamed range");
        assert_eq!(table.len(), 1);
        assert_eq!(table.lookup(0x1000).unwrap().name, "b:b/0");
        let mut other = JitSymbols::new();
        other.extend([sym(0x4000, 8, "c:c/0")]);
        assert_eq!(table.merge(other), 1);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn the_prologue_belongs_to_its_function() {
        assert_eq!(sym(0, 1, "m:f/1-CodeInfoPrologue").function(), "m:f/1");
        assert_eq!(sym(0, 1, "m:f/1").function(), "m:f/1");
        assert_eq!(sym(0, 1, "m::codeHeader").function(), "m::codeHeader");
    }

    #[test]
    fn adjacent_ranges_do_not_overlap() {
        let table: JitSymbols = [sym(0x1000, 0x10, "a:a/0"), sym(0x1010, 0x10, "b:b/0")].into_iter().collect();
        assert_eq!(table.len(), 2);
        assert_eq!(table.lookup(0x100f).unwrap().name, "a:a/0");
        assert_eq!(table.lookup(0x1010).unwrap().name, "b:b/0");
    }
}
