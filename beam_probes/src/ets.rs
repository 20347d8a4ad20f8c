//! ETS tables read from outside while the VM runs: for each table its id, name, owner, type,
//! protection, size in objects and memory, as `ets:info/2` tells them. The tables are found
//! where `ets:all()` finds them: each normal scheduler keeps the tables created on it in a
//! circular list. Only a table's header is read, never its objects. The lists change while
//! they are walked (tables created and deleted): every table is validated (its status must be
//! a table's, its owner a pid, its name an atom), a list that breaks off is counted as torn,
//! and the walk is bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::builds::{BuildTable, EtsLayout};
use crate::error::Result;
use crate::proctab::ProcessTable;
use crate::snapshot::{u32_at, u64_at};
use crate::terms::{Pid, PidDecoder};

/// Tables walked per scheduler list beyond its count (tables created while we walk).
const SLACK: u64 = 1024;
/// Tables read in all: a VM with more is truncated (and says so).
const MAX_TABLES: usize = 1_000_000;
/// Objects and bytes beyond these are a torn read, not a table.
const MAX_ITEMS: i64 = 1 << 40;
const MAX_BYTES: i64 = 1 << 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableType {
    Set,
    OrderedSet,
    Bag,
    DuplicateBag,
}

impl TableType {
    pub fn label(self) -> &'static str {
        match self {
            TableType::Set => "set",
            TableType::OrderedSet => "ordered_set",
            TableType::Bag => "bag",
            TableType::DuplicateBag => "duplicate_bag",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    Private,
    Protected,
    Public,
}

impl Protection {
    pub fn label(self) -> &'static str {
        match self {
            Protection::Private => "private",
            Protection::Protected => "protected",
            Protection::Public => "public",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EtsTable {
    /// Where the table lives: with `id`, what tells a table from the next one at that address.
    #[serde(skip)]
    pub address: u64,
    /// `ets:info(T, id)` as Erlang prints it: `#Ref<0.N2.N1.N0>`.
    pub id: String,
    /// The name given to `ets:new/2` (the table's handle only when `named`).
    pub name: String,
    pub named: bool,
    #[serde(skip)]
    pub owner_term: u64,
    #[serde(serialize_with = "as_text")]
    pub owner: Pid,
    #[serde(rename = "type")]
    pub table_type: TableType,
    pub protection: Protection,
    /// Objects in the table (`ets:info(T, size)`).
    pub size: u64,
    /// Bytes it takes (`ets:info(T, memory)` words times the word size).
    pub memory_bytes: u64,
    pub write_concurrency: bool,
    pub read_concurrency: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct EtsSnapshot {
    pub tables: Vec<EtsTable>,
    /// Tables skipped, or lists broken off, because they changed while being read.
    pub torn: u64,
    /// Whether more tables were there than are read (see `MAX_TABLES`).
    pub truncated: bool,
    #[serde(skip)]
    pub elapsed: Duration,
}

/// A pid as Erlang prints it (`<0.N.S>`).
fn as_text<S: serde::Serializer>(pid: &Pid, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(pid)
}

/// The bytes of a table header scope-probe reads, from its start.
fn header_span(l: &EtsLayout) -> u64 {
    [l.next, l.owner, l.name, l.btid, l.counters + 8].into_iter().map(|o| o + 8).chain([l.status + 4, l.counters_decentralized + 1]).max().unwrap_or(0)
}

fn i64_at(buf: &[u8], off: u64) -> i64 {
    u64_at(buf, off) as i64
}

/// Every table of a VM now: the normal schedulers' data from the build's global array, their
/// number from the run queues' count (one per normal scheduler).
pub fn of(target: &crate::BeamTarget) -> Result<EtsSnapshot> {
    let g = &target.table.globals;
    target.require_symbols("reading ETS tables", &[g.schedulers, g.run_queue_count, g.atom_table])?;
    let base = target.mem.read_u64(target.symbol_address(g.schedulers).unwrap_or(0), "scheduler data array")?;
    let schedulers = target.mem.read_u64(target.symbol_address(g.run_queue_count).unwrap_or(0), "scheduler count")?;
    // A VM has at most 1024 schedulers.
    if base == 0 || schedulers == 0 || schedulers > 1024 {
        return Err(crate::Error::Corrupt(format!("scheduler data {base:#x}, {schedulers} schedulers")));
    }
    tables(&target.process_table(), base, schedulers)
}

/// Every table of the VM now.
pub fn tables(table: &ProcessTable<'_>, scheduler_data: u64, schedulers: u64) -> Result<EtsSnapshot> {
    let started = Instant::now();
    let t = table.build();
    let mem = table.memory();
    let l = &t.ets;
    let pids = table.pid_decoder()?;
    let mut snap = EtsSnapshot::default();
    let mut names: HashMap<u64, Option<String>> = HashMap::new();
    let slots = counter_slots(l, mem.pid(), schedulers);
    let span = header_span(l) as usize;
    let mut buf = vec![0u8; span];
    for n in 1..=schedulers {
        let esdp = scheduler_data + (n - 1) * t.scheduler.aligned_size;
        // The array and its stride are right for this build only if the number field agrees.
        if mem.read_u64(esdp + t.scheduler.no, "scheduler number").ok() != Some(n) {
            snap.torn += 1;
            continue;
        }
        let (Ok(first), Ok(count)) =
            (mem.read_u64(esdp + l.scheduler_list, "ETS table list"), mem.read_u64(esdp + l.scheduler_count, "ETS table count"))
        else {
            snap.torn += 1;
            continue;
        };
        let mut at = first;
        let mut walked = 0u64;
        while at != 0 {
            if snap.tables.len() >= MAX_TABLES {
                snap.truncated = true;
                break;
            }
            if walked > count.min(MAX_TABLES as u64) + SLACK || !at.is_multiple_of(8) || mem.read_into(at, &mut buf, "ETS table").is_err() {
                snap.torn += 1;
                break;
            }
            walked += 1;
            match decode(t, &pids, &buf, at, slots, &mem) {
                Some(mut tab) => {
                    let name_term = u64_at(&buf, l.name);
                    tab.name = names.entry(name_term).or_insert_with(|| table.atom_text(name_term).ok()).clone().unwrap_or_default();
                    // A table being deleted is not in ets:all(); its slot still links the list.
                    if u32_at(&buf, l.status) & l.flags.delete == 0 {
                        snap.tables.push(tab);
                    }
                }
                None => snap.torn += 1,
            }
            at = u64_at(&buf, l.next);
            if at == first {
                break;
            }
        }
    }
    snap.elapsed = started.elapsed();
    Ok(snap)
}

/// How many slots a decentralized counter array has: one more than the VM's counter groups,
/// which it sets at boot to its schedulers, at most the CPUs configured and at most `+dcg`
/// (erl_cpu_topology.c). Not stored anywhere an outside reader can find in a stripped build.
fn counter_slots(l: &EtsLayout, vm: u32, schedulers: u64) -> u64 {
    let configured = std::fs::read_dir("/sys/devices/system/cpu")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("cpu")).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
                .count() as u64
        })
        .unwrap_or(0);
    let max = dcg_arg(vm).unwrap_or(l.max_counter_groups);
    let groups = if configured == 0 { schedulers } else { configured.min(schedulers) };
    let groups = if groups <= 1 || max <= 1 { 1 } else { groups.min(max) };
    groups + 1
}

/// `+dcg N` as the VM was started with (beam.smp sees `-dcg N` or `-dcgN`).
fn dcg_arg(vm: u32) -> Option<u64> {
    let cmdline = std::fs::read(format!("/proc/{vm}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let at = args.iter().position(|a| a.starts_with(b"-dcg"))?;
    let inline = &args[at][4..];
    let text = if inline.is_empty() { args.get(at + 1)? } else { inline };
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// One table header read at `address`; `None` when it does not hold together.
fn decode(t: &BuildTable, pids: &PidDecoder, buf: &[u8], address: u64, slots: u64, mem: &crate::memory::RemoteMemory) -> Option<EtsTable> {
    let l = &t.ets;
    let f = &l.flags;
    let status = u32_at(buf, l.status);
    let protection = match status & (f.private | f.protected | f.public) {
        s if s == f.private => Protection::Private,
        s if s == f.protected => Protection::Protected,
        s if s == f.public => Protection::Public,
        _ => return None,
    };
    let table_type = match status & (f.set | f.bag | f.duplicate_bag | f.ordered_set | f.ca_ordered_set) {
        s if s == f.set => TableType::Set,
        s if s == f.bag => TableType::Bag,
        s if s == f.duplicate_bag => TableType::DuplicateBag,
        s if s == f.ordered_set || s == f.ca_ordered_set => TableType::OrderedSet,
        _ => return None,
    };
    let owner_term = u64_at(buf, l.owner);
    let owner = pids.decode(owner_term)?;
    t.atom.index(u64_at(buf, l.name))?;
    // An int in 25 and 27, a bool in 29: its first byte says (little-endian), whatever the
    // padding after a bool holds.
    let (items, bytes) = match buf.get(l.counters_decentralized as usize).copied().unwrap_or(u8::MAX) {
        0 => (i64_at(buf, l.counters), i64_at(buf, l.counters + 8)),
        1 => decentralized(l, mem, u64_at(buf, l.counters), slots)?,
        _ => return None,
    };
    if !(0..MAX_ITEMS).contains(&items) || !(0..MAX_BYTES).contains(&bytes) {
        return None;
    }
    let id = ref_id(l, mem, u64_at(buf, l.btid))?;
    Some(EtsTable {
        address,
        id,
        name: String::new(),
        named: status & f.named_table != 0,
        owner_term,
        owner,
        table_type,
        protection,
        size: items as u64,
        memory_bytes: bytes as u64,
        write_concurrency: status & (f.write_concurrency | f.ca_ordered_set) != 0,
        read_concurrency: status & f.read_concurrency != 0,
    })
}

/// The sums of a decentralized counter's slots (objects, bytes), as `erts_flxctr_read_approx`
/// adds them. A slot's share can be negative (deleted on another scheduler than inserted).
fn decentralized(l: &EtsLayout, mem: &crate::memory::RemoteMemory, array: u64, slots: u64) -> Option<(i64, i64)> {
    if array == 0 || !array.is_multiple_of(8) {
        return None;
    }
    let data = mem.read_vec(array + l.counter_slots, (slots * l.counter_slot_size) as usize, "ETS counters").ok()?;
    let sum = |i: u64| (0..slots).map(|s| i64_at(&data, s * l.counter_slot_size + i * 8)).fold(0i64, i64::wrapping_add);
    Some((sum(0), sum(1)))
}

/// The table id, `#Ref<0.N2.N1.N0>`, from its magic binary's ref numbers.
fn ref_id(l: &EtsLayout, mem: &crate::memory::RemoteMemory, btid: u64) -> Option<String> {
    if btid == 0 || !btid.is_multiple_of(8) || l.ref_numbers == 0 || l.ref_numbers > 5 {
        return None;
    }
    let raw = mem.read_vec(btid + l.refn, (l.ref_numbers * 4) as usize, "ETS table id").ok()?;
    let numbers: Vec<String> = raw.chunks_exact(4).rev().map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])).to_string()).collect();
    Some(format!("#Ref<0.{}>", numbers.join(".")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::DEBIAN12_OTP25;

    #[test]
    fn header_span_covers_every_field_read() {
        let l = &DEBIAN12_OTP25.ets;
        assert_eq!(header_span(l), l.status + 4);
    }
}
