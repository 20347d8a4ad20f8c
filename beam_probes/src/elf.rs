//! ELF facts about a beam.smp: symbols (dynamic and, when present, static), build-id and the
//! translation from a virtual address to a file offset (what uprobes attach by).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol {
    /// Link-time virtual address.
    pub address: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
}

/// The parts of an ELF file scope-probe needs, parsed once.
#[derive(Debug)]
pub struct ElfInfo {
    pub path: PathBuf,
    pub build_id: Option<String>,
    symbols: HashMap<String, Symbol>,
    segments: Vec<Segment>,
    /// Whether `.note.stapsdt` (USDT probes) is present.
    pub has_usdt_notes: bool,
    /// The file name in `.gnu_debuglink`: where a separate debug file may be.
    pub debuglink: Option<String>,
    /// Every USDT probe site (`.note.stapsdt`), in note order.
    pub usdt_notes: Vec<crate::usdt::UsdtNote>,
    /// Whether the file carries DWARF (a non-empty `.debug_info`).
    pub has_dwarf: bool,
}

impl ElfInfo {
    pub fn open(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(path, &data)
    }

    pub fn parse(path: &Path, data: &[u8]) -> Result<Self> {
        let elf_err = |reason: String| Error::Elf { path: path.to_owned(), reason };
        let file = object::File::parse(data).map_err(|e| elf_err(e.to_string()))?;
        let build_id = file
            .build_id()
            .map_err(|e| elf_err(e.to_string()))?
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect());
        let mut symbols = HashMap::new();
        // Dynamic symbols first; a full symbol table (unstripped builds) adds the rest.
        for sym in file.dynamic_symbols().chain(file.symbols()) {
            if sym.address() == 0 || !sym.is_definition() {
                continue;
            }
            if let Ok(name) = sym.name() {
                symbols
                    .entry(name.to_owned())
                    .or_insert(Symbol { address: sym.address(), size: sym.size() });
            }
        }
        let segments = file
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                Segment { vaddr: s.address(), memsz: s.size(), offset, filesz }
            })
            .collect();
        let has_usdt_notes = file.section_by_name(".note.stapsdt").is_some();
        let debuglink = file.gnu_debuglink().ok().flatten().map(|(name, _crc)| String::from_utf8_lossy(name).into_owned());
        let usdt_notes = crate::usdt::parse_notes(&file);
        let has_dwarf = file.section_by_name(".debug_info").is_some_and(|s| s.size() > 0);
        Ok(ElfInfo { path: path.to_owned(), build_id, symbols, segments, has_usdt_notes, debuglink, usdt_notes, has_dwarf })
    }

    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols.get(name).copied()
    }

    /// Whether a link-time address lies in one of the file's loaded segments.
    pub fn maps_vaddr(&self, vaddr: u64) -> bool {
        self.segments.iter().any(|s| (s.vaddr..s.vaddr + s.memsz).contains(&vaddr))
    }

    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    /// Symbols with a size (functions and objects), sorted by address: for naming code
    /// addresses of a stripped binary from its debug file's symbol table.
    pub fn sized_symbols(&self) -> Vec<(u64, u64, &str)> {
        let mut v: Vec<(u64, u64, &str)> =
            self.symbols.iter().filter(|(_, s)| s.size > 0).map(|(n, s)| (s.address, s.size, n.as_str())).collect();
        v.sort_unstable();
        v
    }

    /// Adds the symbols of `debug` (the binary's separate debug file, whose `.symtab` a
    /// stripped binary lacks) that this file does not define. Link-time addresses are the
    /// binary's, so they mean the same in both; segments stay this file's (a debug file has no
    /// code, only its layout).
    pub fn add_symbols_from(&mut self, debug: &ElfInfo) -> usize {
        let before = self.symbols.len();
        for (name, sym) in &debug.symbols {
            self.symbols.entry(name.clone()).or_insert(*sym);
        }
        self.symbols.len() - before
    }

    /// File offset of a virtual address that lies in a file-backed part of a segment.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz.min(s.memsz))
            .map(|s| vaddr - s.vaddr + s.offset)
    }

    /// The virtual address mapped at file offset 0 (the base the loader biases).
    pub fn first_segment_vaddr(&self) -> u64 {
        self.segments.iter().filter(|s| s.offset == 0).map(|s| s.vaddr).min().unwrap_or(0)
    }
}

/// The load bias of a file mapped at `map_start` from file offset `map_offset` (a line of
/// /proc/PID/maps): runtime address minus the address the file states. `None` when no
/// segment holds that offset.
pub fn load_bias(file: &object::File<'_>, map_start: u64, map_offset: u64) -> Option<u64> {
    let segment = file.segments().find(|s| {
        let (off, size) = s.file_range();
        map_offset >= off && map_offset < off + size
    })?;
    let stated = segment.address() + (map_offset - segment.file_range().0);
    Some(map_start.wrapping_sub(stated))
}

/// Every function's address range as the file states it (start, length), sorted, from the
/// frame descriptions of its `.eh_frame`: what tells a stripped binary's functions apart,
/// static ones included, when its symbol table is gone.
pub fn eh_frame_functions(file: &object::File<'_>) -> Vec<(u64, u64)> {
    use gimli::UnwindSection;
    let Some(section) = file.section_by_name(".eh_frame") else { return Vec::new() };
    let Ok(data) = section.data() else { return Vec::new() };
    let endian = if file.is_little_endian() { gimli::RunTimeEndian::Little } else { gimli::RunTimeEndian::Big };
    let mut eh_frame = gimli::EhFrame::new(data, endian);
    eh_frame.set_address_size(8);
    let mut bases = gimli::BaseAddresses::default().set_eh_frame(section.address());
    if let Some(text) = file.section_by_name(".text") {
        bases = bases.set_text(text.address());
    }
    if let Some(got) = file.section_by_name(".got") {
        bases = bases.set_got(got.address());
    }
    let mut out = Vec::new();
    let mut entries = eh_frame.entries(&bases);
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry
            && let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o))
            && fde.len() > 0
        {
            out.push((fde.initial_address(), fde.len()));
        }
    }
    out.sort_unstable();
    out
}
