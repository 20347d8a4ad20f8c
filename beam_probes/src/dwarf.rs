//! Struct layouts from DWARF (`gimli`): the offsets a build table holds, read from a beam.smp
//! built with `-g` (or from its separate debug file) instead of from the source by hand.
//!
//! - [`struct_layout`]: every member of a C struct as a dotted path (`common.u.alive.reg`,
//!   `sig_qs.len`), recursing into nested structs, unions and typedefs; anonymous members are
//!   flattened as C does.
//! - [`derive_offsets`] / [`check_table`]: every struct offset a [`BuildTable`] holds, derived
//!   from DWARF, and the differences with a table. `cargo xtask offsets` prints them as Rust.
//!
//! Nothing here panics on odd DWARF: a reference, location or name it cannot read is an
//! error naming the struct and member it was reading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gimli::{AttributeValue, EndianArcSlice, Reader, RunTimeEndian, SectionId, UnitOffset, constants};
use object::{Object, ObjectSection};

use crate::builds::BuildTable;

type R = EndianArcSlice<RunTimeEndian>;
/// A type entry: (index into [`DebugInfo::units`], offset in that unit).
type TypeRef = (usize, UnitOffset);

/// How deep nested struct members are followed (a C struct cannot contain itself by value;
/// this only bounds malformed DWARF).
const MAX_DEPTH: usize = 16;
/// How many typedef / qualifier links are followed from a member to its type.
const MAX_TYPE_CHAIN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse ELF file {path}: {reason}")]
    Elf { path: PathBuf, reason: String },
    #[error(
        "{path} has no DWARF debug info (.debug_info): it is stripped; use a build with -g \
         (`cargo xtask otp-debug`) or pass its separate debug file"
    )]
    NoDebugInfo { path: PathBuf },
    #[error("invalid DWARF in {path} while reading {what}: {reason}")]
    Invalid { path: PathBuf, what: String, reason: String },
    #[error("{path}: its DWARF has no definition of struct `{name}`")]
    NoStruct { path: PathBuf, name: String },
    #[error("{path}: struct `{name}` has no member `{member}` in its DWARF")]
    NoMember { path: PathBuf, name: String, member: String },
    #[error("{debug_file} is not the debug file of {binary}: build-id {found} instead of {expected}")]
    BuildIdMismatch { binary: PathBuf, debug_file: PathBuf, expected: String, found: String },
}

pub type Result<T> = std::result::Result<T, DwarfError>;

/// One member of a struct, at any depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the outermost struct.
    pub offset: u64,
    /// `DW_AT_byte_size` of its type, when DWARF gives one (not for arrays of unknown size).
    pub size: Option<u64>,
}

/// The members of one struct by dotted path (`common.u.alive.reg`), with byte offsets from
/// its start.
#[derive(Debug, Clone)]
pub struct StructLayout {
    /// The name it was looked up by.
    pub name: String,
    /// `sizeof`, when DWARF gives it.
    pub size: Option<u64>,
    pub members: BTreeMap<String, Member>,
    /// Where it was read from, for error messages.
    path: PathBuf,
}

impl StructLayout {
    /// The offset of a member, or an error naming the struct and the member.
    pub fn offset(&self, member: &str) -> Result<u64> {
        self.member(member).map(|m| m.offset)
    }

    pub fn member(&self, member: &str) -> Result<Member> {
        self.members.get(member).copied().ok_or_else(|| DwarfError::NoMember {
            path: self.path.clone(),
            name: self.name.clone(),
            member: member.to_owned(),
        })
    }
}

/// Whether `path` is an ELF file with a non-empty `.debug_info` (compressed or not).
pub fn has_debug_info(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else { return false };
    let Ok(file) = object::File::parse(&*data) else { return false };
    file.section_by_name(".debug_info").is_some_and(|s| s.size() > 0)
}

/// The layout of `struct_name` (a struct, union or typedef name; a leading `struct ` or
/// `union ` is ignored) from the DWARF in `elf_path`.
pub fn struct_layout(elf_path: &Path, struct_name: &str) -> Result<StructLayout> {
    DebugInfo::open(elf_path)?.struct_layout(struct_name)
}

/// The DWARF of one binary, loaded once for several lookups.
pub struct DebugInfo {
    path: PathBuf,
    dwarf: gimli::Dwarf<R>,
    units: Vec<gimli::Unit<R>>,
}

/// Sections a type lookup reads (gimli parses each unit's line program header and range
/// bases when it opens the unit); the rest (locations, frames, address ranges) are not loaded.
const SECTIONS: &[SectionId] = &[
    SectionId::DebugInfo,
    SectionId::DebugAbbrev,
    SectionId::DebugStr,
    SectionId::DebugStrOffsets,
    SectionId::DebugLineStr,
    SectionId::DebugLine,
    SectionId::DebugAddr,
    SectionId::DebugRanges,
    SectionId::DebugRngLists,
    SectionId::DebugTypes,
];

impl DebugInfo {
    /// DWARF from the binary itself.
    pub fn open(path: &Path) -> Result<Self> {
        let data = read(path)?;
        let file = parse(path, &data)?;
        Self::load(path, &file)
    }

    /// DWARF from a separate debug file (e.g. Debian's dbgsym package,
    /// `/usr/lib/debug/.build-id/xx/yyyy.debug`); checks that its build-id is the binary's.
    pub fn open_split(binary: &Path, debug_file: &Path) -> Result<Self> {
        let bin_data = read(binary)?;
        let expected = build_id(binary, &parse(binary, &bin_data)?)?;
        drop(bin_data);
        let data = read(debug_file)?;
        let file = parse(debug_file, &data)?;
        let found = build_id(debug_file, &file)?;
        if let (Some(expected), Some(found)) = (expected, found)
            && expected != found
        {
            return Err(DwarfError::BuildIdMismatch {
                binary: binary.to_owned(),
                debug_file: debug_file.to_owned(),
                expected,
                found,
            });
        }
        Self::load(debug_file, &file)
    }

    fn load(path: &Path, file: &object::File<'_>) -> Result<Self> {
        if file.section_by_name(".debug_info").is_none_or(|s| s.size() == 0) {
            return Err(DwarfError::NoDebugInfo { path: path.to_owned() });
        }
        let endian = if file.is_little_endian() { RunTimeEndian::Little } else { RunTimeEndian::Big };
        let invalid = |what: &str, reason: String| DwarfError::Invalid {
            path: path.to_owned(),
            what: what.to_owned(),
            reason,
        };
        let dwarf = gimli::Dwarf::load(|id: SectionId| -> Result<R> {
            let bytes: Arc<[u8]> = match file.section_by_name(id.name()).filter(|_| SECTIONS.contains(&id)) {
                Some(section) => {
                    Arc::from(&*section.uncompressed_data().map_err(|e| invalid(id.name(), e.to_string()))?)
                }
                None => Arc::from(&[][..]),
            };
            Ok(EndianArcSlice::new(bytes, endian))
        })?;
        let mut units = Vec::new();
        let mut headers = dwarf.units();
        loop {
            match headers.next() {
                Ok(Some(header)) => {
                    units.push(dwarf.unit(header).map_err(|e| invalid("a compilation unit", e.to_string()))?)
                }
                Ok(None) => break,
                Err(e) => return Err(invalid("the compilation unit headers", e.to_string())),
            }
        }
        Ok(DebugInfo { path: path.to_owned(), dwarf, units })
    }

    fn invalid(&self, what: impl Into<String>, e: impl std::fmt::Display) -> DwarfError {
        DwarfError::Invalid { path: self.path.clone(), what: what.into(), reason: e.to_string() }
    }

    /// See [`struct_layout`].
    pub fn struct_layout(&self, struct_name: &str) -> Result<StructLayout> {
        let name = struct_name.trim();
        let name = name.strip_prefix("struct ").or_else(|| name.strip_prefix("union ")).unwrap_or(name).trim();
        let (unit, offset) = self.find_struct(name, 0)?.ok_or_else(|| DwarfError::NoStruct {
            path: self.path.clone(),
            name: name.to_owned(),
        })?;
        let entry = self.units[unit].entry(offset).map_err(|e| self.invalid(format!("struct {name}"), e))?;
        let size = entry.attr_value(constants::DW_AT_byte_size).and_then(|v| v.udata_value());
        let mut members = BTreeMap::new();
        self.collect(name, unit, offset, "", 0, 0, &mut members)?;
        Ok(StructLayout { name: name.to_owned(), size, members, path: self.path.clone() })
    }

    /// The first complete definition of a struct/union named `name`, or of the struct a
    /// typedef named `name` stands for. `hops`: typedef-to-tag-name lookups so far (bounded,
    /// so that typedefs naming each other's opaque structs cannot recurse forever).
    fn find_struct(&self, name: &str, hops: usize) -> Result<Option<TypeRef>> {
        for (ui, unit) in self.units.iter().enumerate() {
            let mut cursor = unit.entries();
            loop {
                let entry = match cursor.next_dfs() {
                    Ok(Some(entry)) => entry,
                    Ok(None) => break,
                    Err(e) => return Err(self.invalid(format!("the entries of unit {ui}"), e)),
                };
                let tag = entry.tag();
                let record = is_record(tag);
                if !record && tag != constants::DW_TAG_typedef {
                    continue;
                }
                if self.name_of(unit, entry)?.as_deref() != Some(name) {
                    continue;
                }
                if record {
                    if !is_declaration(entry) {
                        return Ok(Some((ui, entry.offset())));
                    }
                    continue;
                }
                // A typedef: the struct behind it, if this unit defines it.
                let Some((tu, toff)) = self.strip_type(ui, entry.offset(), name)? else { continue };
                let target = self.units[tu].entry(toff).map_err(|e| self.invalid(format!("typedef {name}"), e))?;
                if is_record(target.tag()) && !is_declaration(&target) {
                    return Ok(Some((tu, toff)));
                }
                // Opaque here (a declaration): another unit may define it by its tag name.
                if let Some(tag_name) = self.name_of(&self.units[tu], &target)?
                    && tag_name != name
                    && hops < MAX_TYPE_CHAIN
                    && let Some(found) = self.find_struct(&tag_name, hops + 1)?
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Adds the members of the struct/union at (`unit`, `offset`) to `out`, under `prefix`,
    /// at `base` bytes from the outermost struct.
    #[allow(clippy::too_many_arguments)]
    fn collect(
        &self,
        top: &str,
        unit: usize,
        offset: UnitOffset,
        prefix: &str,
        base: u64,
        depth: usize,
        out: &mut BTreeMap<String, Member>,
    ) -> Result<()> {
        let what = |m: &str| format!("struct {top}, member {}", if m.is_empty() { "(anonymous)" } else { m });
        let u = &self.units[unit];
        // Gather the direct members first, then recurse (one tree borrow at a time).
        let mut direct: Vec<(String, u64, Option<TypeRef>)> = Vec::new();
        {
            let mut tree = u.entries_tree(Some(offset)).map_err(|e| self.invalid(what(prefix), e))?;
            let root = tree.root().map_err(|e| self.invalid(what(prefix), e))?;
            let mut children = root.children();
            loop {
                let child = match children.next() {
                    Ok(Some(child)) => child,
                    Ok(None) => break,
                    Err(e) => return Err(self.invalid(what(prefix), e)),
                };
                let entry = child.entry();
                let tag = entry.tag();
                if tag != constants::DW_TAG_member && tag != constants::DW_TAG_inheritance {
                    continue;
                }
                // Static members of C++ classes have no location: not part of the layout.
                if is_declaration(entry) {
                    continue;
                }
                let name = if tag == constants::DW_TAG_member { self.name_of(u, entry)? } else { None };
                let path = match (&name, prefix.is_empty()) {
                    (None, _) => prefix.to_owned(),
                    (Some(n), true) => n.clone(),
                    (Some(n), false) => format!("{prefix}.{n}"),
                };
                let rel = member_offset(entry).map_err(|r| self.invalid(what(&path), r))?;
                let ty = match entry.attr_value(constants::DW_AT_type) {
                    Some(v) => Some(self.resolve_ref(unit, &v).ok_or_else(|| self.invalid(what(&path), "unreadable DW_AT_type"))?),
                    None => None,
                };
                direct.push((path, rel, ty));
            }
        }
        for (path, rel, ty) in direct {
            let at = base.checked_add(rel).ok_or_else(|| self.invalid(what(&path), "offset overflows"))?;
            let resolved = match ty {
                Some((tu, toff)) => self.strip_type(tu, toff, &path)?.or(Some((tu, toff))),
                None => None,
            };
            let mut size = None;
            let mut nested = None;
            if let Some((tu, toff)) = resolved {
                let entry = self.units[tu].entry(toff).map_err(|e| self.invalid(what(&path), e))?;
                size = entry.attr_value(constants::DW_AT_byte_size).and_then(|v| v.udata_value());
                if is_record(entry.tag()) && !is_declaration(&entry) {
                    nested = Some((tu, toff));
                }
            }
            if !path.is_empty() {
                out.entry(path.clone()).or_insert(Member { offset: at, size });
            }
            if let Some((tu, toff)) = nested
                && depth < MAX_DEPTH
            {
                self.collect(top, tu, toff, &path, at, depth + 1, out)?;
            }
        }
        Ok(())
    }

    /// Follows typedefs and qualifiers from the entry at (`unit`, `offset`) (itself a typedef
    /// or qualifier, or the type of a member) to the type they name. `None` for `void`.
    fn strip_type(&self, unit: usize, offset: UnitOffset, what: &str) -> Result<Option<TypeRef>> {
        let (mut unit, mut offset) = (unit, offset);
        for _ in 0..MAX_TYPE_CHAIN {
            let entry = self.units[unit].entry(offset).map_err(|e| self.invalid(what.to_owned(), e))?;
            let tag = entry.tag();
            let transparent = [
                constants::DW_TAG_typedef,
                constants::DW_TAG_const_type,
                constants::DW_TAG_volatile_type,
                constants::DW_TAG_atomic_type,
                constants::DW_TAG_restrict_type,
            ];
            if !transparent.contains(&tag) {
                return Ok(Some((unit, offset)));
            }
            let Some(v) = entry.attr_value(constants::DW_AT_type) else { return Ok(None) };
            (unit, offset) = self.resolve_ref(unit, &v).ok_or_else(|| self.invalid(what.to_owned(), "unreadable DW_AT_type"))?;
        }
        Err(self.invalid(what.to_owned(), format!("more than {MAX_TYPE_CHAIN} typedef/qualifier links")))
    }

    /// A type reference as (unit index, offset in that unit).
    fn resolve_ref(&self, unit: usize, value: &AttributeValue<R>) -> Option<TypeRef> {
        match value {
            AttributeValue::UnitRef(off) => Some((unit, *off)),
            AttributeValue::DebugInfoRef(off) => self
                .units
                .iter()
                .enumerate()
                .find_map(|(i, u)| off.to_unit_offset(&u.header).map(|o| (i, o))),
            // dwz supplementary files and type units are not supported.
            _ => None,
        }
    }

    fn name_of(&self, unit: &gimli::Unit<R>, entry: &gimli::DebuggingInformationEntry<R>) -> Result<Option<String>> {
        let Some(value) = entry.attr_value(constants::DW_AT_name) else { return Ok(None) };
        let s = self.dwarf.attr_string(unit, value).map_err(|e| self.invalid("a DW_AT_name", e))?;
        let s = s.to_string_lossy().map_err(|e| self.invalid("a DW_AT_name", e))?;
        Ok(Some(s.into_owned()))
    }
}

fn is_record(tag: constants::DwTag) -> bool {
    tag == constants::DW_TAG_structure_type || tag == constants::DW_TAG_union_type || tag == constants::DW_TAG_class_type
}

fn is_declaration(entry: &gimli::DebuggingInformationEntry<R>) -> bool {
    matches!(entry.attr_value(constants::DW_AT_declaration), Some(AttributeValue::Flag(true)))
}

/// `DW_AT_data_member_location` (a constant, or the DWARF 2 form `DW_OP_plus_uconst n`),
/// else `DW_AT_data_bit_offset` / 8 (bit fields), else 0 (union members).
fn member_offset(entry: &gimli::DebuggingInformationEntry<R>) -> std::result::Result<u64, String> {
    match entry.attr_value(constants::DW_AT_data_member_location) {
        Some(AttributeValue::Exprloc(expr)) => {
            let mut r = expr.0.clone();
            let op = r.read_u8().map_err(|e| e.to_string())?;
            if op != constants::DW_OP_plus_uconst.0 {
                return Err(format!("member location is an expression (op {op:#x}), not an offset"));
            }
            r.read_uleb128().map_err(|e| e.to_string())
        }
        Some(v) => v.udata_value().ok_or_else(|| format!("member location {v:?} is not a constant")),
        None => match entry.attr_value(constants::DW_AT_data_bit_offset) {
            Some(v) => v.udata_value().map(|bits| bits / 8).ok_or_else(|| "unreadable DW_AT_data_bit_offset".into()),
            None => Ok(0),
        },
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| DwarfError::Io { path: path.to_owned(), source })
}

fn parse<'d>(path: &Path, data: &'d [u8]) -> Result<object::File<'d>> {
    object::File::parse(data).map_err(|e| DwarfError::Elf { path: path.to_owned(), reason: e.to_string() })
}

fn build_id(path: &Path, file: &object::File<'_>) -> Result<Option<String>> {
    let id = file.build_id().map_err(|e| DwarfError::Elf { path: path.to_owned(), reason: e.to_string() })?;
    Ok(id.map(|id| id.iter().map(|b| format!("{b:02x}")).collect()))
}

// ---------------------------------------------------------------------------------------------
// Build tables from DWARF

/// What of a member a table field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Its offset in the struct.
    Offset,
    /// Its size in bytes.
    Size,
    /// The size of the whole struct (no member).
    StructSize,
}

/// Where a table field comes from in DWARF: the table field, the C struct and member path, and
/// accessors on the table. One list drives derivation, checking and printing.
pub struct FieldSource {
    /// `process.sig_qs_len`, as the table spells it.
    pub field: &'static str,
    /// The C struct (or typedef) name, as [`DebugInfo::struct_layout`] takes it.
    pub c_struct: &'static str,
    /// The member path, under each name OTP has given it (oldest first).
    pub members: &'static [&'static str],
    /// Whether a build may lack the member (it then derives as 0).
    pub optional: bool,
    pub measure: Measure,
    pub table: fn(&BuildTable) -> u64,
    set: fn(&mut BuildTable, u64),
}

macro_rules! field {
    ($group:ident . $f:ident, $c:literal, sizeof) => {
        field!(@make $group.$f, $c, [], false, Measure::StructSize)
    };
    ($group:ident . $f:ident, $c:literal, [$($m:literal),+], size) => {
        field!(@make $group.$f, $c, [$($m),+], false, Measure::Size)
    };
    ($group:ident . $f:ident, $c:literal, $m:literal, size) => {
        field!(@make $group.$f, $c, [$m], false, Measure::Size)
    };
    ($group:ident . $f:ident, $c:literal, [$($m:literal),+] $(, $opt:ident)?) => {
        field!(@make $group.$f, $c, [$($m),+], field!(@opt $($opt)?), Measure::Offset)
    };
    ($group:ident . $f:ident, $c:literal, $m:literal $(, $opt:ident)?) => {
        field!(@make $group.$f, $c, [$m], field!(@opt $($opt)?), Measure::Offset)
    };
    (@make $group:ident . $f:ident, $c:literal, [$($m:literal),*], $opt:expr, $measure:expr) => {
        FieldSource {
            field: concat!(stringify!($group), ".", stringify!($f)),
            c_struct: $c,
            members: &[$($m),*],
            optional: $opt,
            measure: $measure,
            table: |t| t.$group.$f,
            set: |t, v| t.$group.$f = v,
        }
    };
    (@opt optional) => { true };
    (@opt) => { false };
}

/// The struct offsets of a build table and where DWARF has them. A member OTP renamed lists
/// its names oldest first (the first one the build's DWARF has is used: a build never has
/// both); an `optional` member absent from a build derives as 0, which the table spells as
/// "this build has no such member" (offset 0 is always `common.id`). Fields that are C macros
/// (term tags, counts of buffers) are not here: they stay as each table states them.
pub static FIELDS: &[FieldSource] = &[
    field!(process.id, "process", "common.id"),
    field!(process.reg, "process", "common.u.alive.reg"),
    field!(process.heap_sz, "process", "heap_sz"),
    field!(process.old_heap, "process", "old_heap"),
    field!(process.old_hend, "process", "old_hend"),
    field!(process.mbuf_sz, "process", "mbuf_sz"),
    field!(process.i, "process", "i"),
    field!(process.reds, "process", "reds"),
    field!(process.state, "process", "state"),
    // OTP 26 split the counters: mq_len (handled part of the private queue), mlenoffs
    // (messages after the last non-message signal of a queue).
    field!(process.sig_qs_len, "process", ["sig_qs.len", "sig_qs.mq_len"]),
    field!(process.sig_qs_cont_len, "process", "sig_qs.mlenoffs", optional),
    field!(process.sig_inq_len, "process", ["sig_inq.len", "sig_inq.mlenoffs"]),
    field!(process.sig_qs_first, "process", "sig_qs.first"),
    field!(process.sig_qs_cont, "process", "sig_qs.cont"),
    field!(process.sig_inq_first, "process", "sig_inq.first"),
    field!(process.sig_inq_buffers, "process", "sig_inq_buffers"),
    field!(process.current, "process", "current"),
    field!(process.initial, "process", "u.initial"),
    field!(process.group_leader, "process", "group_leader"),
    field!(process.dictionary, "process", "dictionary"),
    field!(process.arity, "process", "arity"),
    field!(process.arity_bytes, "process", "arity", size),
    field!(process.arg_reg, "process", "arg_reg"),
    field!(process.def_arg_reg, "process", "def_arg_reg"),
    field!(process.heap, "process", "heap"),
    field!(process.htop, "process", "htop"),
    field!(process.stop, "process", "stop"),
    field!(process.hend, "process", "hend"),
    field!(process.abandoned_heap, "process", "abandoned_heap"),
    field!(process.psd, "process", "psd"),
    field!(process.psd_size, "ErtsPSD", sizeof),
    field!(process.size, "process", sizeof),
    field!(reg_proc.name, "RegProc", "name"),
    field!(ptab.tab, "ErtsPTab", "r.o.tab"),
    field!(ptab.max, "ErtsPTab", "r.o.max"),
    field!(ptab.pix_mask, "ErtsPTab", "r.o.pix_mask"),
    field!(ptab.pix_mask_bytes, "ErtsPTab", "r.o.pix_mask", size),
    field!(ptab.pix_cl_mask, "ErtsPTab", "r.o.pix_cl_mask"),
    field!(ptab.pix_cl_shift, "ErtsPTab", "r.o.pix_cl_shift"),
    field!(ptab.pix_cli_mask, "ErtsPTab", "r.o.pix_cli_mask"),
    field!(ptab.pix_cli_shift, "ErtsPTab", "r.o.pix_cli_shift"),
    field!(port.id, "_erl_drv_port", "common.id"),
    field!(port.sched_flags, "_erl_drv_port", "sched.flags"),
    field!(port.connected, "_erl_drv_port", "connected"),
    field!(port.bytes_in, "_erl_drv_port", "bytes_in"),
    field!(port.bytes_out, "_erl_drv_port", "bytes_out"),
    field!(port.ioq_size, "_erl_drv_port", "ioq.size"),
    field!(port.name, "_erl_drv_port", "name"),
    field!(port.drv_ptr, "_erl_drv_port", "drv_ptr"),
    field!(port.drv_data, "_erl_drv_port", "drv_data"),
    field!(port.os_pid, "_erl_drv_port", "os_pid"),
    field!(port.state, "_erl_drv_port", "state"),
    field!(port.size, "_erl_drv_port", sizeof),
    field!(port.driver_name, "erts_driver_t_", "name"),
    // inet_drv.c's own typedef (an anonymous struct); a static driver linked into beam.smp.
    field!(port.inet_socket, "inet_descriptor", "s"),
    field!(port.inet_port, "inet_descriptor", "port"),
    field!(atom.table_entries, "IndexTable", "entries"),
    field!(atom.table_seg_table, "IndexTable", "seg_table"),
    field!(atom.atom_len, "Atom", "len"),
    // OTP 29 made the name a union: `u.name` (byte*, lookup templates) or `u.bin` (a binary
    // term, atoms in the table), at the same offset.
    field!(atom.atom_name, "Atom", ["name", "u.name"]),
    field!(signal_queue.msg_next, "erl_mesg", "next"),
    field!(signal_queue.msg_attached, "erl_mesg", "data.attached"),
    field!(signal_queue.msg_tag, "erl_mesg", "m"),
    field!(signal_queue.msg_hfrag_used, "erl_mesg", "hfrag.used_size"),
    field!(signal_queue.msg_size, "erl_mesg", sizeof),
    field!(signal_queue.frag_next, "erl_heap_fragment", "next"),
    field!(signal_queue.frag_used, "erl_heap_fragment", "used_size"),
    field!(signal_queue.buffer_size, "ErtsSignalInQueueBuffer", sizeof),
    field!(signal_queue.buffers_slots, "ErtsSignalInQueueBufferArray", "slots"),
    field!(signal_queue.buffer_queue_first, "ErtsSignalInQueueBuffer", "b.queue.first"),
    field!(proc_dict.used_slots, "proc_dict", "usedSlots"),
    field!(proc_dict.array_size, "proc_dict", "arraySize"),
    field!(proc_dict.data, "proc_dict", "data"),
    field!(proc_dict.size, "proc_dict", sizeof),
    field!(scheduler.aligned_size, "ErtsAlignedSchedulerData", sizeof),
    field!(scheduler.current_process, "ErtsSchedulerData_", "current_process"),
    field!(scheduler.current_port, "ErtsSchedulerData_", "current_port"),
    field!(scheduler.ssi, "ErtsSchedulerData_", "ssi"),
    field!(scheduler.no, "ErtsSchedulerData_", "no"),
    field!(scheduler.dirty_no, "ErtsSchedulerData_", "dirty_no"),
    field!(scheduler.ssi_flags, "ErtsSchedulerSleepInfo_", "flags"),
    field!(run_queue.aligned_size, "ErtsAlignedRunQueue", sizeof),
    field!(run_queue.len, "ErtsRunQueue_", "len"),
    field!(monitor.monitors, "process", "common.u.alive.monitors"),
    field!(monitor.links, "process", "common.u.alive.links"),
    field!(monitor.tree_right, "ErtsMonLnkNode__", "node.tree.right"),
    field!(monitor.tree_left, "ErtsMonLnkNode__", "node.tree.left"),
    field!(monitor.other_item, "ErtsMonLnkNode__", "other.item"),
    field!(monitor.flags, "ErtsMonLnkNode__", "flags"),
    field!(monitor.flags_bytes, "ErtsMonLnkNode__", "flags", size),
    // OTP 29 folded the type into `flags`.
    field!(monitor.type_field, "ErtsMonLnkNode__", "type", optional),
    // OTP 27 put them in a union (`u`) with the dirty schedulers' data.
    field!(ets.scheduler_list, "ErtsSchedulerData_", ["ets_tables.clist", "u.ets_tables.clist"]),
    field!(ets.scheduler_count, "ErtsSchedulerData_", ["ets_tables.count", "u.ets_tables.count"]),
    field!(ets.next, "db_table_common", "all.next"),
    field!(ets.owner, "db_table_common", "owner"),
    field!(ets.name, "db_table_common", "the_name"),
    field!(ets.btid, "db_table_common", "btid"),
    field!(ets.status, "db_table_common", "status"),
    field!(ets.counters_decentralized, "db_table_common", "counters.is_decentralized"),
    field!(ets.counters, "db_table_common", "counters.u.counters"),
    field!(ets.counter_slots, "ErtsFlxCtrDecentralizedCtrArray", "array"),
    field!(ets.counter_slot_size, "ErtsFlxCtrDecentralizedCtrArrayElem", sizeof),
    field!(ets.refn, "magic_binary", "refn"),
    field!(alloc.info_size, "ErtsAllocatorInfo_t", sizeof),
    field!(alloc.info_alloc_util, "ErtsAllocatorInfo_t", "alloc_util"),
    field!(alloc.info_enabled, "ErtsAllocatorInfo_t", "enabled"),
    field!(alloc.info_thr_spec, "ErtsAllocatorInfo_t", "thr_spec"),
    field!(alloc.info_extra, "ErtsAllocatorInfo_t", "extra"),
    field!(alloc.thr_spec_size, "ErtsAllocatorThrSpec_t", sizeof),
    field!(alloc.thr_spec_count, "ErtsAllocatorThrSpec_t", "size"),
    field!(alloc.thr_spec_instances, "ErtsAllocatorThrSpec_t", "allctr"),
    field!(alloc.mbcs_blocks, "Allctr_t", "mbcs.blocks"),
    field!(alloc.sbcs_blocks, "Allctr_t", "sbcs.blocks"),
    field!(alloc.block_stats_size, "BlockStats_t", sizeof),
    field!(alloc.block_curr_size, "BlockStats_t", "curr.size"),
    field!(alloc.cpool_util_limit, "Allctr_t", "cpool.util_limit"),
    field!(alloc.cpool_blocks_size, "Allctr_t", "cpool.stat.blocks_size"),
    field!(alloc.fix, "Allctr_t", "fix"),
    field!(alloc.fix_size, "ErtsAlcFixList_t", sizeof),
    field!(alloc.fix_type_size, "ErtsAlcFixList_t", "type_size"),
    field!(alloc.fix_cpool_allocated, "ErtsAlcFixList_t", "u.cpool.allocated"),
    field!(alloc.fix_cpool_used, "ErtsAlcFixList_t", "u.cpool.used"),
    field!(alloc.fix_nocpool_allocated, "ErtsAlcFixList_t", "u.nocpool.allocated"),
    field!(alloc.fix_nocpool_used, "ErtsAlcFixList_t", "u.nocpool.used"),
    field!(alloc.index_table_bytes, "IndexTable", sizeof),
    field!(alloc.hash_bytes, "Hash", sizeof),
    field!(alloc.index_table_size, "IndexTable", "size"),
    field!(alloc.hash_shift, "IndexTable", "htable.shift"),
    field!(alloc.hash_name, "IndexTable", "htable.name"),
    field!(alloc.ptab_free_id_data, "ErtsPTab", "r.o.free_id_data"),
];

/// Members scope-probe does not read yet, printed with the table for review.
pub static EXTRA_MEMBERS: &[(&str, &str)] = &[
    ("process", "flags"),
    ("process", "gen_gcs"),
    ("process", "max_gen_gcs"),
    ("process", "off_heap"),
    ("ErtsPTab", "r.o.element_size"),
];

/// Every DWARF-derived field of a build table, read from one build's DWARF.
#[derive(Debug, Clone)]
pub struct DerivedOffsets {
    /// One value per [`FIELDS`] entry, in its order.
    pub values: Vec<u64>,
    /// (C struct, member path, offset) of [`EXTRA_MEMBERS`] found in this build.
    pub extra: Vec<(&'static str, &'static str, u64)>,
}

/// Every struct offset a build table holds, from the DWARF in `elf_path`.
pub fn derive_offsets(elf_path: &Path) -> Result<DerivedOffsets> {
    derive_from(&DebugInfo::open(elf_path)?)
}

/// [`derive_offsets`] from already loaded DWARF (e.g. [`DebugInfo::open_split`]).
pub fn derive_from(info: &DebugInfo) -> Result<DerivedOffsets> {
    let mut layouts: BTreeMap<&str, StructLayout> = BTreeMap::new();
    let mut layout = |name: &'static str| -> Result<StructLayout> {
        if let Some(l) = layouts.get(name) {
            return Ok(l.clone());
        }
        let l = info.struct_layout(name)?;
        layouts.insert(name, l.clone());
        Ok(l)
    };
    let mut values = Vec::with_capacity(FIELDS.len());
    for f in FIELDS {
        let l = layout(f.c_struct)?;
        let missing = |what: &str| DwarfError::NoMember { path: l.path.clone(), name: l.name.clone(), member: what.to_owned() };
        let value = if f.measure == Measure::StructSize {
            l.size.ok_or_else(|| missing("(its size)"))?
        } else {
            match f.members.iter().find_map(|m| l.member(m).ok()) {
                Some(m) if f.measure == Measure::Size => {
                    m.size.ok_or_else(|| missing(&format!("{} (its size)", f.members[0])))?
                }
                Some(m) => m.offset,
                None if f.optional => 0,
                // Report it under its newest name: the one a current build should have.
                None => l.offset(f.members[f.members.len() - 1]).map(|_| 0)?,
            }
        };
        values.push(value);
    }
    let mut extra = Vec::new();
    for &(c_struct, member) in EXTRA_MEMBERS {
        if let Ok(offset) = layout(c_struct)?.offset(member) {
            extra.push((c_struct, member, offset));
        }
    }
    Ok(DerivedOffsets { values, extra })
}

/// A table offset that differs from the build's DWARF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The table field (`process.sig_qs_len`).
    pub field: &'static str,
    /// Where DWARF has it (`struct process: sig_qs.len`).
    pub dwarf_member: String,
    pub table: u64,
    pub dwarf: u64,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: table {} but DWARF {} ({})", self.field, self.table, self.dwarf, self.dwarf_member)
    }
}

fn describe(f: &FieldSource) -> String {
    match f.measure {
        Measure::StructSize => format!("sizeof(struct {})", f.c_struct),
        Measure::Size => format!("struct {}: {} (size)", f.c_struct, f.members.join(" or ")),
        Measure::Offset => format!("struct {}: {}", f.c_struct, f.members.join(" or ")),
    }
}

/// Compares every struct offset of `table` with the DWARF of `elf_path`; empty when they all
/// agree.
pub fn check_table(elf_path: &Path, table: &BuildTable) -> Result<Vec<Mismatch>> {
    Ok(compare(&derive_offsets(elf_path)?, table))
}

/// The differences between derived offsets and a table.
pub fn compare(derived: &DerivedOffsets, table: &BuildTable) -> Vec<Mismatch> {
    FIELDS
        .iter()
        .zip(&derived.values)
        .filter_map(|(f, &d)| {
            let t = (f.table)(table);
            (t != d).then(|| Mismatch { field: f.field, dwarf_member: describe(f), table: t, dwarf: d })
        })
        .collect()
}

impl DerivedOffsets {
    /// The value derived for a table field (`process.heap_sz`).
    pub fn get(&self, field: &str) -> Option<u64> {
        FIELDS.iter().position(|f| f.field == field).map(|i| self.values[i])
    }

    /// `table` with every DWARF-derived field replaced by this build's value.
    pub fn apply(&self, table: &BuildTable) -> BuildTable {
        let mut t = table.clone();
        for (f, &v) in FIELDS.iter().zip(&self.values) {
            (f.set)(&mut t, v);
        }
        t
    }

    /// The derived fields as lines to review against a build table in
    /// `beam_probes/src/builds/` (`group.field: value,  // where DWARF has it`); with `like`,
    /// the fields that differ from that table are marked.
    pub fn to_rust(&self, like: Option<&BuildTable>) -> String {
        let mut s = String::from("    // Struct offsets derived from DWARF (cargo xtask offsets).\n");
        let mut group = "";
        for (f, &v) in FIELDS.iter().zip(&self.values) {
            let (g, name) = f.field.split_once('.').unwrap_or(("", f.field));
            if g != group {
                s.push_str(&format!("    // {g}:\n"));
                group = g;
            }
            let differs = like.map(|t| (f.table)(t)).filter(|&t| t != v);
            let mark = differs.map(|t| format!("; table {} has {t}", like.map_or("", |t| t.id))).unwrap_or_default();
            s.push_str(&format!("        {name}: {v}, // {}{mark}\n", describe(f)));
        }
        if !self.extra.is_empty() {
            s.push_str("    // Not in the table (not read by scope-probe yet):");
            for (i, (c, m, off)) in self.extra.iter().enumerate() {
                if i % 4 == 0 {
                    s.push_str("\n    //");
                }
                s.push_str(&format!(" {c}.{m} +{off}"));
                s.push(if i + 1 == self.extra.len() { '.' } else { ';' });
            }
            s.push('\n');
        }
        s
    }
}
