//! JIT symbols from the GDB JIT interface, read out of a running VM's memory.
//!
//! The JIT registers every piece of code it emits with GDB's JIT interface, whatever flags
//! the VM was started with: a global `__jit_debug_descriptor` heads a linked list of
//! `jit_code_entry`s, each pointing at a "symfile". For ERTS the symfile is not an ELF file
//! but an ERTS record (see [`JitRecordLayout`]): one module's base address, code size, name,
//! and its named code ranges (the same ranges and names the perf map lists).
//!
//! The descriptor and entry structs are GDB's (gdb/jit.h, "JIT Interface" in the GDB
//! manual), version 1, fixed by GDB for every JIT that uses it: their offsets are constants
//! here. The records they point at are ERTS's and belong to the build table.
//!
//! The VM keeps changing the list while we read it (it holds a mutex we cannot take from
//! outside), so everything read is checked: the walk is bounded and stops on cycles, record
//! sizes are bounded, every field is checked against the record's size, and a record that
//! does not decode is counted and skipped, never trusted.
//!
//! Incremental reads: ERTS inserts new entries at the head of the list and (in OTP 25) never
//! removes any, not even for purged modules. A refresh therefore walks from the head until it
//! meets an entry it has already decoded.

use std::collections::HashSet;

use crate::builds::JitRecordLayout;
use crate::error::{Error, Result};
use crate::jit::JitSymbol;
use crate::memory::RemoteMemory;

/// `struct jit_descriptor { u32 version; u32 action_flag; entry *relevant_entry;
/// entry *first_entry; }` (ERTS appends a mutex, which we do not read).
const DESCRIPTOR_VERSION: u64 = 0;
const DESCRIPTOR_FIRST_ENTRY: u64 = 16;
/// The only version of the interface GDB defines.
const SUPPORTED_VERSION: u32 = 1;

/// `struct jit_code_entry { entry *next_entry; entry *prev_entry; const char *symfile_addr;
/// u64 symfile_size; }`. `prev_entry` is not used: OTP 25 leaves it uninitialised in the
/// head entry.
const ENTRY_SIZE: usize = 32;
const ENTRY_NEXT: usize = 0;
const ENTRY_SYMFILE_ADDR: usize = 16;
const ENTRY_SYMFILE_SIZE: usize = 24;

/// Bound on the entries walked in one read: one per loaded module version, so a million is
/// far beyond any real system and only stops a walk through garbage.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Bound on one record: the largest OTP module's record (ranges and line tables) is a few
/// hundred KiB; anything near this is not a record.
pub const MAX_SYMFILE_SIZE: u64 = 64 << 20;

/// Counters of what the reader met so far, for diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GdbJitStats {
    /// Entries decoded (module and emulator records, and bad ones).
    pub entries: u64,
    /// Module records decoded.
    pub modules: u64,
    /// Entries whose record did not decode (skipped).
    pub bad_entries: u64,
    /// Walks cut short: a cycle, the entry bound, or an unreadable entry.
    pub truncated_walks: u64,
    /// Why the last bad entry or truncated walk was rejected.
    pub last_problem: Option<String>,
}

/// A decoded ERTS record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JitRecord {
    /// Registered once at start-up: how the JIT lays out Erlang frames.
    Emulator {
        frame_layout: u32,
    },
    Module(ModuleRecord),
}

/// One module's code as the JIT registered it (one record per loaded module version, plus
/// `global` for the JIT's shared helpers and `erts_beamasm` for its special entry points).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRecord {
    pub module: String,
    pub base_address: u64,
    pub code_size: u64,
    /// Its named ranges, in the order the record lists them.
    pub symbols: Vec<JitSymbol>,
}

/// Why a record was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord(pub String);

/// A `jit_code_entry` as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Entry {
    addr: u64,
    next: u64,
    symfile_addr: u64,
    symfile_size: u64,
}

/// Reads the GDB JIT interface of one VM, incrementally.
#[derive(Debug)]
pub struct GdbJitReader {
    mem: RemoteMemory,
    /// Runtime address of `__jit_debug_descriptor`.
    descriptor: u64,
    layout: &'static JitRecordLayout,
    /// Entries already decoded (address and contents, so a reused address is not mistaken
    /// for an old entry).
    seen: HashSet<Entry>,
    stats: GdbJitStats,
    frame_layout: Option<u32>,
}

impl GdbJitReader {
    pub fn new(mem: RemoteMemory, descriptor: u64, layout: &'static JitRecordLayout) -> Self {
        GdbJitReader {
            mem,
            descriptor,
            layout,
            seen: HashSet::new(),
            stats: GdbJitStats::default(),
            frame_layout: None,
        }
    }

    pub fn stats(&self) -> &GdbJitStats {
        &self.stats
    }

    /// Whether the JIT keeps frame pointers in Erlang frames, from the emulator record
    /// (`None` until that record was read).
    pub fn frame_pointers(&self) -> Option<bool> {
        self.frame_layout.map(|layout| layout == 1)
    }

    /// The symbols of the records registered since the last call, oldest first.
    pub fn read_new(&mut self) -> Result<Vec<JitSymbol>> {
        let first = self.read_descriptor()?;
        let unseen = self.walk_unseen(first)?;
        let mut symbols = Vec::new();
        // The list runs newest first; callers want oldest first so that newer code wins.
        for entry in unseen.into_iter().rev() {
            self.seen.insert(entry);
            self.stats.entries += 1;
            match self.read_record(&entry) {
                Ok(JitRecord::Module(module)) => {
                    self.stats.modules += 1;
                    symbols.extend(module.symbols);
                }
                Ok(JitRecord::Emulator { frame_layout }) => self.frame_layout = Some(frame_layout),
                Err(BadRecord(why)) => {
                    self.stats.bad_entries += 1;
                    self.stats.last_problem = Some(format!("entry {:#x}: {why}", entry.addr));
                }
            }
        }
        self.check_layout()?;
        Ok(symbols)
    }

    /// A VM always has modules loaded: records, none of which decodes, mean the build
    /// table's record layout is wrong for this VM. Say so instead of returning nothing.
    fn check_layout(&self) -> Result<()> {
        if self.stats.modules > 0 || self.stats.bad_entries == 0 {
            return Ok(());
        }
        Err(Error::Corrupt(format!(
            "none of the {} JIT debug records decodes with this build's layout (last: {})",
            self.stats.bad_entries,
            self.stats.last_problem.as_deref().unwrap_or("?")
        )))
    }

    /// Checks the descriptor's version; returns the head of the list.
    fn read_descriptor(&self) -> Result<u64> {
        let version = self.mem.read_u32(self.descriptor + DESCRIPTOR_VERSION, "JIT debug descriptor")?;
        if version != SUPPORTED_VERSION {
            return Err(Error::Corrupt(format!(
                "JIT debug descriptor at {:#x} has version {version}, expected {SUPPORTED_VERSION}",
                self.descriptor
            )));
        }
        self.mem.read_u64(self.descriptor + DESCRIPTOR_FIRST_ENTRY, "JIT debug descriptor")
    }

    /// Entries from `first` up to the first one already decoded, newest first.
    fn walk_unseen(&mut self, first: u64) -> Result<Vec<Entry>> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut visited = HashSet::new();
        let mut addr = first;
        while addr != 0 {
            let problem = if entries.len() >= MAX_ENTRIES {
                Some(format!("more than {MAX_ENTRIES} entries"))
            } else if !visited.insert(addr) {
                Some(format!("cycle at entry {addr:#x}"))
            } else if !addr.is_multiple_of(8) {
                Some(format!("misaligned entry pointer {addr:#x}"))
            } else {
                None
            };
            if let Some(problem) = problem {
                self.truncated(problem);
                break;
            }
            let entry = match self.read_entry(addr) {
                Ok(entry) => entry,
                // The head must be readable; past it, keep what was read.
                Err(e) if entries.is_empty() => return Err(e),
                Err(e) => {
                    self.truncated(e.to_string());
                    break;
                }
            };
            if self.seen.contains(&entry) {
                break;
            }
            addr = entry.next;
            entries.push(entry);
        }
        Ok(entries)
    }

    fn truncated(&mut self, problem: String) {
        self.stats.truncated_walks += 1;
        self.stats.last_problem = Some(problem);
    }

    fn read_entry(&self, addr: u64) -> Result<Entry> {
        let mut raw = [0u8; ENTRY_SIZE];
        self.mem.read_into(addr, &mut raw, "JIT code entry")?;
        let word = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
        Ok(Entry {
            addr,
            next: word(ENTRY_NEXT),
            symfile_addr: word(ENTRY_SYMFILE_ADDR),
            symfile_size: word(ENTRY_SYMFILE_SIZE),
        })
    }

    fn read_record(&self, entry: &Entry) -> std::result::Result<JitRecord, BadRecord> {
        if entry.symfile_addr == 0 || entry.symfile_size == 0 || entry.symfile_size > MAX_SYMFILE_SIZE {
            return Err(BadRecord(format!("record at {:#x} of {} bytes", entry.symfile_addr, entry.symfile_size)));
        }
        let bytes = self
            .mem
            .read_vec(entry.symfile_addr, entry.symfile_size as usize, "JIT debug record")
            .map_err(|e| BadRecord(e.to_string()))?;
        decode_record(&bytes, self.layout)
    }
}

/// Upper bound on the writable data scanned for the descriptor (beam.smp's `.data` and `.bss`
/// are a few MiB).
pub const MAX_SCAN_BYTES: u64 = 64 << 20;

/// Finds `__jit_debug_descriptor` without its symbol (a stripped build without debug info) by
/// its layout in the executable's writable data (`data`: its .data and .bss mappings).
///
/// A candidate is 8-aligned, has version 1, an action flag GDB defines (0-2) and an aligned,
/// non-null head entry. It is accepted only if that head entry's record decodes as a module
/// (or the emulator) record with this build's layout and a module's code lies in the JIT's
/// executable mappings (`jit`), and a whole read of the list then decodes modules. A wrong
/// candidate cannot pass all of that by chance; the first one that does is the descriptor.
pub fn find_descriptor(
    mem: RemoteMemory,
    data: &[crate::maps::CodeRegion],
    jit: &[crate::maps::CodeRegion],
    layout: &'static JitRecordLayout,
) -> Option<u64> {
    const CHUNK: u64 = 1 << 20;
    let mut scanned = 0u64;
    for region in data {
        let mut at = region.start;
        while at + 24 <= region.end && scanned < MAX_SCAN_BYTES {
            let len = CHUNK.min(region.end - at);
            let Ok(bytes) = mem.read_vec(at, len as usize, "executable data") else { break };
            scanned += len;
            let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
            let mut i = 0usize;
            while i + 24 <= bytes.len() {
                let (version, action) = (word(i) as u32, (word(i) >> 32) as u32);
                let (relevant, first) = (word(i + 8), word(i + 16));
                if version == SUPPORTED_VERSION
                    && action <= 2
                    && first != 0
                    && first.is_multiple_of(8)
                    && relevant.is_multiple_of(8)
                    && is_descriptor(mem, at + i as u64, first, jit, layout)
                {
                    return Some(at + i as u64);
                }
                i += 8;
            }
            // Overlap so a descriptor across the chunk edge is not missed.
            at += len.saturating_sub(24).max(8);
        }
    }
    None
}

fn is_descriptor(
    mem: RemoteMemory,
    candidate: u64,
    first: u64,
    jit: &[crate::maps::CodeRegion],
    layout: &'static JitRecordLayout,
) -> bool {
    let mut reader = GdbJitReader::new(mem, candidate, layout);
    let Ok(head) = reader.read_entry(first) else { return false };
    let in_jit = |addr: u64| jit.iter().any(|r| addr >= r.start && addr < r.end);
    match reader.read_record(&head) {
        Ok(JitRecord::Module(m)) if in_jit(m.base_address) => {}
        Ok(JitRecord::Emulator { frame_layout }) if frame_layout <= 1 => {}
        _ => return false,
    }
    reader.read_new().is_ok_and(|symbols| {
        reader.stats.modules > 0 && symbols.iter().take(1000).all(|s| in_jit(s.start))
    })
}

/// Decodes one ERTS record (the bytes at `symfile_addr`, `symfile_size` long).
pub fn decode_record(bytes: &[u8], layout: &JitRecordLayout) -> std::result::Result<JitRecord, BadRecord> {
    let record = Record(bytes);
    let header = record.u32(0)?;
    if header == layout.header_emulator {
        return Ok(JitRecord::Emulator { frame_layout: record.u32(layout.emulator_frame_layout)? });
    }
    if header != layout.header_module {
        return Err(BadRecord(format!("unknown record header {header}")));
    }
    decode_module(&record, layout).map(JitRecord::Module)
}

fn decode_module(record: &Record<'_>, layout: &JitRecordLayout) -> std::result::Result<ModuleRecord, BadRecord> {
    let base_address = record.u64(layout.module_base_address)?;
    let range_count = record.u32(layout.module_range_count)?;
    let code_size = u64::from(record.u32(layout.module_code_size)?);
    let name_length = record.u16(layout.module_name_length)?;
    let module = record.string(layout.module_name, name_length)?;
    let mut at = layout.debug_info_size + u64::from(name_length);
    // Each range takes at least range_info_size bytes: a larger count cannot be true.
    if u64::from(range_count) > record.len() / layout.range_info_size {
        return Err(BadRecord(format!("{range_count} ranges in a record of {} bytes", record.len())));
    }
    let mut symbols = Vec::with_capacity(range_count as usize);
    for _ in 0..range_count {
        let (symbol, next) = decode_range(record, at, base_address, code_size, layout)?;
        symbols.push(symbol);
        at = next;
    }
    // ERTS sizes the record exactly: anything left over means we read it wrong.
    if at != record.len() {
        return Err(BadRecord(format!("module {module}: ranges end at {at}, record has {} bytes", record.len())));
    }
    Ok(ModuleRecord { module, base_address, code_size, symbols })
}

/// One `range_info` at `at` and the line records after it; returns the symbol and the offset
/// of what follows.
fn decode_range(
    record: &Record<'_>,
    at: u64,
    base_address: u64,
    code_size: u64,
    layout: &JitRecordLayout,
) -> std::result::Result<(JitSymbol, u64), BadRecord> {
    let start = u64::from(record.u32(at + layout.range_start_offset)?);
    let end = u64::from(record.u32(at + layout.range_end_offset)?);
    let line_count = record.u32(at + layout.range_line_count)?;
    let name_length = record.u16(at + layout.range_name_length)?;
    let name = record.string(at + layout.range_name, name_length)?;
    if start > end || end > code_size {
        return Err(BadRecord(format!(
            "range {name} [{start:#x}, {end:#x}) outside the module's {code_size:#x} bytes"
        )));
    }
    let mut next = at + layout.range_info_size + u64::from(name_length);
    if u64::from(line_count) > record.len() / layout.line_info_size {
        return Err(BadRecord(format!("range {name}: {line_count} lines")));
    }
    for _ in 0..line_count {
        let file_length = record.u16(next + layout.line_file_length)?;
        next += layout.line_info_size + u64::from(file_length);
    }
    let symbol = JitSymbol { start: base_address.saturating_add(start), size: end - start, name };
    Ok((symbol, next))
}

/// Bounds-checked little-endian reads from a record.
struct Record<'a>(&'a [u8]);

impl Record<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn bytes(&self, at: u64, len: u64) -> std::result::Result<&[u8], BadRecord> {
        let end = at.checked_add(len).filter(|&end| end <= self.len());
        match end {
            Some(end) => Ok(&self.0[at as usize..end as usize]),
            None => Err(BadRecord(format!("field at {at} of {len} bytes past the record's {} bytes", self.len()))),
        }
    }

    fn u16(&self, at: u64) -> std::result::Result<u16, BadRecord> {
        Ok(u16::from_le_bytes(self.bytes(at, 2)?.try_into().expect("2 bytes")))
    }

    fn u32(&self, at: u64) -> std::result::Result<u32, BadRecord> {
        Ok(u32::from_le_bytes(self.bytes(at, 4)?.try_into().expect("4 bytes")))
    }

    fn u64(&self, at: u64) -> std::result::Result<u64, BadRecord> {
        Ok(u64::from_le_bytes(self.bytes(at, 8)?.try_into().expect("8 bytes")))
    }

    /// A string stored with its length, the terminating NUL included.
    fn string(&self, at: u64, length_with_nul: u16) -> std::result::Result<String, BadRecord> {
        let raw = self.bytes(at, u64::from(length_with_nul))?;
        let Some((&0, text)) = raw.split_last() else {
            return Err(BadRecord(format!("string at {at} is not NUL-terminated")));
        };
        if text.is_empty() || text.contains(&0) {
            return Err(BadRecord(format!("string at {at} is empty or holds a NUL")));
        }
        String::from_utf8(text.to_vec()).map_err(|_| BadRecord(format!("string at {at} is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::DEBIAN12_OTP25;

    fn layout() -> &'static JitRecordLayout {
        &DEBIAN12_OTP25.jit_records
    }

    /// (start offset, end offset, name, [(line, file)]) of one range.
    type Range<'a> = (u32, u32, &'a str, &'a [(u32, &'a str)]);

    /// Builds a module record the way OTP 25's beam_jit_metadata.cpp lays it out.
    fn module_record(module: &str, base: u64, code_size: u32, ranges: &[Range<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(1u32.to_le_bytes());
        out.extend([0xAA; 4]); // padding before the union: garbage in the VM
        out.extend(base.to_le_bytes());
        out.extend((ranges.len() as u32).to_le_bytes());
        out.extend(code_size.to_le_bytes());
        out.extend((module.len() as u16 + 1).to_le_bytes());
        out.extend(module.as_bytes());
        out.push(0);
        // The first range starts at sizeof(debug_info) + name_length, i.e. 6 bytes past the
        // name's end (sizeof counts the struct's tail padding).
        out.resize(32 + module.len() + 1, 0xBB);
        for (start, end, name, lines) in ranges {
            let at = out.len();
            out.extend(start.to_le_bytes());
            out.extend(end.to_le_bytes());
            out.extend((lines.len() as u32).to_le_bytes());
            out.extend((name.len() as u16 + 1).to_le_bytes());
            out.extend(name.as_bytes());
            out.push(0);
            out.resize(at + 16 + name.len() + 1, 0xCC);
            for (line, file) in *lines {
                let at = out.len();
                out.extend(start.to_le_bytes());
                out.extend(line.to_le_bytes());
                out.extend((file.len() as u16 + 1).to_le_bytes());
                out.extend(file.as_bytes());
                out.push(0);
                out.resize(at + 12 + file.len() + 1, 0xDD);
            }
        }
        out
    }

    fn sym(start: u64, size: u64, name: &str) -> JitSymbol {
        JitSymbol { start, size, name: name.to_owned() }
    }

    #[test]
    fn decodes_a_module_record_with_line_tables() {
        let bytes = module_record(
            "timer",
            0x7f00_0000_1000,
            0x470,
            &[
                (0, 0x1f0, "timer::codeHeader", &[]),
                (0x1f0, 0x220, "timer:apply_after/4-CodeInfoPrologue", &[]),
                (0x220, 0x470, "timer:apply_after/4", &[(62, "timer.erl"), (64, "timer.erl")]),
            ],
        );
        let JitRecord::Module(module) = decode_record(&bytes, layout()).unwrap() else { panic!("not a module") };
        assert_eq!(module.module, "timer");
        assert_eq!((module.base_address, module.code_size), (0x7f00_0000_1000, 0x470));
        assert_eq!(
            module.symbols,
            [
                sym(0x7f00_0000_1000, 0x1f0, "timer::codeHeader"),
                sym(0x7f00_0000_11f0, 0x30, "timer:apply_after/4-CodeInfoPrologue"),
                sym(0x7f00_0000_1220, 0x250, "timer:apply_after/4"),
            ]
        );
    }

    #[test]
    fn decodes_the_emulator_record() {
        let mut bytes = vec![0u8; 32];
        bytes[8] = 1;
        assert_eq!(decode_record(&bytes, layout()), Ok(JitRecord::Emulator { frame_layout: 1 }));
    }

    #[test]
    fn rejects_records_that_do_not_add_up() {
        let good = module_record("m", 0x1000, 0x100, &[(0, 0x100, "m:f/0", &[(1, "m.erl")])]);
        assert!(decode_record(&good, layout()).is_ok());
        // Every truncation fails cleanly.
        for len in 0..good.len() {
            assert!(decode_record(&good[..len], layout()).is_err(), "truncated to {len}");
        }
        // Trailing bytes: the layout would be wrong.
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode_record(&longer, layout()).is_err());
        // Unknown header.
        let mut other = good.clone();
        other[0] = 7;
        assert!(decode_record(&other, layout()).is_err());
        // A range past the module's code.
        let outside = module_record("m", 0x1000, 0x80, &[(0, 0x100, "m:f/0", &[])]);
        assert!(decode_record(&outside, layout()).is_err());
        // An absurd range count.
        let mut many = good.clone();
        many[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_record(&many, layout()).is_err());
        // A name without its NUL.
        let mut unterminated = good;
        let nul = 26 + 1;
        unterminated[nul] = b'x';
        assert!(decode_record(&unterminated, layout()).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic generator: garbage of every length up to 300 bytes, with
        // the header forced to "module" half of the time.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300 {
            for round in 0..20 {
                let mut bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                if round % 2 == 0 && len >= 4 {
                    bytes[..4].copy_from_slice(&1u32.to_le_bytes());
                }
                let _ = decode_record(&bytes, layout());
            }
        }
    }
}
