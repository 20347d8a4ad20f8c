//! The VM's memory by kind, as `erlang:memory()` groups it, read from outside: the allocators'
//! own counters (each instance counts the bytes of the blocks it holds, per allocator type),
//! the process table's size and the loaded code's size, added up the way `erts_memory`
//! (erl_alloc.c) adds them. Only counters are read, never a block. The counters change while
//! they are read (no lock is taken): a sum is as consistent as `erlang:memory()` without its
//! thread-progress block, which moves by a block or two.
//!
//! What is exact from the exported data of every build: total, processes (and processes_used),
//! system, atom (and atom_used), ets, binary. Atom text space is kept in static variables of
//! atom.c: it is worked out from the atom table instead (every atom's length, and up to OTP 28
//! the chunks their texts were packed into, in the order they were made). The code kind adds
//! static tables of module.c, export.c, erl_fun.c and beam_ranges.c to the loaded code: a
//! stripped build does not name them, so they are found through the exported functions
//! `erts_memory` calls to size them (the build table says which data reference of each
//! function is the table). When that fails (a build compiled otherwise), `code` is not given
//! and `code_loaded`, the loaded code alone (about 80% of it), still is.

use serde::Serialize;

use crate::builds::AllocLayout;
use crate::error::{Error, Result};
use crate::memory::RemoteMemory;
use crate::snapshot::{read_many, u16_at, u32_at, u64_at};

/// More instances of one allocator type than this is a torn read (one per scheduler, at most
/// 1024 schedulers, plus one).
const MAX_INSTANCES: u64 = 1025;
/// A counter beyond this is a torn read (1 PiB).
const MAX_BYTES: u64 = 1 << 50;

/// Bytes by kind, named as `erlang:memory()` names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VmMemory {
    pub total: u64,
    pub processes: u64,
    pub processes_used: u64,
    pub system: u64,
    /// The atom table and the atoms' text space (`atom_used`: the text bytes in use).
    pub atom: u64,
    pub atom_used: u64,
    pub binary: u64,
    pub ets: u64,
    /// Loaded code (`erts_total_code_size`): part of `code`, without the module, export and
    /// fun tables.
    pub code_loaded: u64,
    /// Loaded code and the tables that find it (`None`: the tables could not be found).
    pub code: Option<u64>,
}

impl VmMemory {
    /// The kinds in the order `erlang:memory()` lists them, named as it names them
    /// (`code_loaded`: the part of `code` every build lets scope-probe read).
    pub fn kinds(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("total", self.total),
            ("processes", self.processes),
            ("processes_used", self.processes_used),
            ("system", self.system),
            ("atom", self.atom),
            ("atom_used", self.atom_used),
            ("binary", self.binary),
            match self.code {
                Some(code) => ("code", code),
                None => ("code_loaded", self.code_loaded),
            },
            ("ets", self.ets),
        ]
    }
}

/// The bytes each allocator type holds, summed over every instance.
struct TypeBytes {
    /// Indexed by allocator type (`ERTS_ALC_A_*`, from 1).
    blocks: Vec<u64>,
    /// Fixed-size types: bytes allocated and used (`type_size` times the counts).
    fix_allocated: Vec<u64>,
    fix_used: Vec<u64>,
}

/// The VM's memory now.
pub fn of(target: &crate::BeamTarget) -> Result<VmMemory> {
    let g = &target.table.globals;
    target.require_symbols(
        "reading memory by kind",
        &[g.allocators, g.allocator_instances, g.total_code_size, g.ets_misc_memory, g.process_table, g.atom_table],
    )?;
    let at = |name: &str| target.symbol_address(name).unwrap_or(0);
    let mem = &target.mem;
    let l = &target.table.alloc;
    let bytes = type_bytes(mem, l, at(g.allocators), at(g.allocator_instances))?;
    let ptab = at(g.process_table);
    let max = u64::from(mem.read_u32(ptab + target.table.ptab.max, "process table size")?);
    let free_ids = mem.read_u64(ptab + l.ptab_free_id_data, "process table free ids")?;
    let ptab_bytes = max * 8 + if free_ids != 0 { max * 4 } else { 0 };
    let code_loaded = mem.read_u64(at(g.total_code_size), "loaded code size")?;
    let ets_misc = mem.read_u64(at(g.ets_misc_memory), "ETS memory outside ets_alloc")?;
    let mut m = add_up(l, &bytes, ptab_bytes, code_loaded, ets_misc);
    (m.atom, m.atom_used) = atoms(target, at(g.atom_table))?;
    m.code = code_tables(target).ok().map(|tables| tables + code_loaded);
    Ok(m)
}

/// The code kind's tables: the module table's bytes, the export and fun tables and their
/// entries, the code ranges (`erts_memory`'s `want.code`).
fn code_tables(target: &crate::BeamTarget) -> Result<u64> {
    let (mem, l) = (&target.mem, &target.table.alloc);
    let c = &l.code;
    let atomic = |r: &crate::builds::StaticRef, what| -> Result<u64> {
        let v = mem.read_u64(static_address(target, r)?, what)?;
        if v > MAX_BYTES { Err(Error::Corrupt(format!("{what}: {v}"))) } else { Ok(v) }
    };
    let tables = |r: &crate::builds::StaticRef| -> Result<u64> {
        let first = static_address(target, r)?;
        (0..c.code_indices).map(|i| index_table_bytes(mem, l, first + i * l.index_table_bytes)).sum()
    };
    let funs = match &c.funs {
        crate::builds::FunTable::Hash(r) => hash_bytes(mem, l, static_address(target, r)?)?,
        crate::builds::FunTable::Staged { tables: t, entry_bytes } => tables(t)? + atomic(entry_bytes, "fun entry bytes")?,
    };
    Ok(atomic(&c.module_bytes, "module table bytes")?
        + tables(&c.export_tables)?
        + atomic(&c.export_entry_bytes, "export entry bytes")?
        + funs
        + atomic(&c.ranges, "code ranges")? * c.range_bytes)
}

/// Where a static is: the `nth` instruction-pointer-relative data reference in the code of the
/// exported function that reads it (the function is read from the VM's memory, at most 256
/// bytes: these are a few instructions each).
fn static_address(target: &crate::BeamTarget, r: &crate::builds::StaticRef) -> Result<u64> {
    use iced_x86::{Decoder, DecoderOptions};
    let sym = target.elf.symbol(r.function).ok_or_else(|| Error::Corrupt(format!("no symbol {}", r.function)))?;
    let at = sym.address.wrapping_add(target.load_bias);
    let len = if sym.size == 0 { 256 } else { sym.size.min(256) };
    let code = target.mem.read_vec(at, len as usize, "function code")?;
    let mut decoder = Decoder::with_ip(64, &code, at, DecoderOptions::NONE);
    let mut refs = decoder.iter().filter(|i| !i.is_invalid() && i.is_ip_rel_memory_operand()).map(|i| i.ip_rel_memory_address());
    let found = refs.nth(r.nth).ok_or_else(|| Error::Corrupt(format!("{}: no data reference {}", r.function, r.nth)))?;
    // A static lives in the executable's data: anything else is not the reference meant.
    if !target.elf.maps_vaddr(found.wrapping_sub(target.load_bias)) {
        return Err(Error::Corrupt(format!("{}: reference {} at {found:#x} is outside the executable", r.function, r.nth)));
    }
    Ok(found)
}

/// `hash_table_sz`: the `Hash`, its buckets and its name.
fn hash_bytes(mem: &RemoteMemory, l: &AllocLayout, hash: u64) -> Result<u64> {
    let shift = u64::from(mem.read_u32(hash + l.hash_shift, "hash shift")?);
    if !(38..64).contains(&shift) {
        return Err(Error::Corrupt(format!("hash at {hash:#x}: shift {shift}")));
    }
    let name = mem.read_cstr(mem.read_u64(hash + l.hash_name, "hash name")?, 64, "hash name")?;
    Ok(l.hash_bytes + (1u64 << (64 - shift)) * 8 + name.len() as u64 + 1)
}

/// `index_table_sz`: the `IndexTable` (its hash counted once), its slots and its hash's.
fn index_table_bytes(mem: &RemoteMemory, l: &AllocLayout, table: u64) -> Result<u64> {
    let size = u64::from(mem.read_u32(table + l.index_table_size, "index table size")?);
    if size > MAX_ATOMS {
        return Err(Error::Corrupt(format!("index table at {table:#x}: {size} slots")));
    }
    Ok(l.index_table_bytes - l.hash_bytes + size * 8 + hash_bytes(mem, l, table)?)
}

/// Atoms in a table this large are a torn read (the VM's limit is 1,048,576 by default and
/// `+t` raises it; scope-probe reads at most this many).
const MAX_ATOMS: u64 = 1 << 26;

/// The atom text space of the atoms counted so far, in the order they were made: an atom's
/// length never changes and atoms are never removed, so each read goes on from the last (a
/// table of a million atoms is read once, 0.15 s; then only the atoms made since).
#[derive(Debug, Default)]
pub struct AtomTally {
    /// Atoms counted (the next one to count is this index).
    counted: u64,
    /// Text bytes used, text chunks after the first (which is there from boot) and bytes used
    /// in the last (up to OTP 28).
    used: u64,
    more_chunks: u64,
    in_chunk: u64,
}

impl AtomTally {
    /// Counts the next atom's text (`atom_text_alloc`: a new chunk when it would reach the end
    /// of the current one).
    fn add(&mut self, len: u64, chunk_bytes: u64) {
        self.counted += 1;
        self.used += len;
        if chunk_bytes == 0 {
            return;
        }
        if self.in_chunk + len >= chunk_bytes - 8 {
            self.more_chunks += 1;
            self.in_chunk = 0;
        }
        self.in_chunk += len;
    }

    /// Bytes reserved and used.
    fn space(&self, chunk_bytes: u64) -> (u64, u64) {
        if chunk_bytes == 0 { (self.used, self.used) } else { ((1 + self.more_chunks) * chunk_bytes, self.used) }
    }
}

/// `atom_table_sz()` plus the atom text space reserved and used
/// (`erts_atom_get_text_space_sizes`): the table's own arrays from its header, the text from
/// every atom's length (atoms made since the last read, in batches: a `process_vm_readv` per
/// 1024 atoms).
fn atoms(target: &crate::BeamTarget, table: u64) -> Result<(u64, u64)> {
    let (mem, l, a) = (&target.mem, &target.table.alloc, &target.table.atom);
    let header = mem.read_vec(table, l.index_table_bytes as usize, "atom table")?;
    let entries = u64::from(u32_at(&header, a.table_entries));
    if entries > MAX_ATOMS {
        return Err(Error::Corrupt(format!("atom table: {entries} atoms")));
    }
    let table_bytes = index_table_bytes(mem, l, table)?;
    let mut tally = target.atom_tally.lock().unwrap_or_else(|e| e.into_inner());
    if tally.counted > entries {
        // Not the table counted before (a torn read then): count again.
        *tally = AtomTally::default();
    }
    // The new atoms: their segments' slots, then each one's length and text pointer.
    let per_segment = 1u64 << a.segment_bits;
    let seg_table = u64_at(&header, a.table_seg_table);
    let mut atoms = Vec::with_capacity((entries - tally.counted) as usize);
    let mut ix = tally.counted;
    while ix < entries {
        let seg = mem.read_u64(seg_table + (ix / per_segment) * 8, "atom segment")?;
        let n = (entries - ix).min(per_segment - ix % per_segment);
        let slots = mem.read_vec(seg + (ix % per_segment) * 8, (n * 8) as usize, "atom segment")?;
        atoms.extend(slots.chunks_exact(8).map(|s| u64_at(s, 0)));
        ix += n;
    }
    let span = (a.atom_name + 8 - a.atom_len) as usize;
    let ranges: Vec<(u64, usize)> = atoms.iter().map(|&p| (p + a.atom_len, span)).collect();
    let mut buf = vec![0u8; ranges.len() * span];
    let read = read_many(mem, &ranges, &mut buf);
    if let Some(bad) = read.iter().position(|ok| !ok) {
        return Err(Error::Corrupt(format!("atom {} not readable", tally.counted + bad as u64)));
    }
    for b in buf.chunks_exact(span) {
        let len = u64::from(u16_at(b, 0));
        let text = u64_at(b, a.atom_name - a.atom_len);
        // Up to OTP 28 the atoms built into the VM keep their text in the executable.
        let built_in = l.atom_text_chunk_bytes != 0 && target.elf.maps_vaddr(text.wrapping_sub(target.load_bias));
        tally.add(if built_in { 0 } else { len }, l.atom_text_chunk_bytes);
    }
    let (reserved, used) = tally.space(l.atom_text_chunk_bytes);
    Ok((table_bytes + reserved, table_bytes + used))
}

fn add_up(l: &AllocLayout, b: &TypeBytes, ptab_bytes: u64, code_loaded: u64, ets_misc: u64) -> VmMemory {
    let mut total = code_loaded;
    for ai in 1..=l.max_type {
        if ai != l.temporary && ai != l.test {
            total += b.blocks[ai as usize];
        }
    }
    let (mut processes, mut processes_used) = (b.blocks[l.eheap as usize] + ptab_bytes, b.blocks[l.eheap as usize] + ptab_bytes);
    for &ix in l.process_fixed_types {
        processes += b.fix_allocated[ix as usize];
        processes_used += b.fix_used[ix as usize];
    }
    VmMemory {
        total,
        processes,
        processes_used,
        system: total.saturating_sub(processes),
        atom: 0,
        atom_used: 0,
        code: None,
        binary: b.blocks[l.binary as usize],
        ets: b.blocks[l.ets as usize] + ets_misc,
        code_loaded,
    }
}

/// Walks every alloc_util allocator instance once and sums, per allocator type, the bytes of
/// the blocks it holds (`alcu_size` visits each instance for each type; one visit that reads
/// all types' counters is the same sum).
fn type_bytes(mem: &RemoteMemory, l: &AllocLayout, infos: u64, thr_specs: u64) -> Result<TypeBytes> {
    let types = l.max_type as usize + 1;
    let mut b =
        TypeBytes { blocks: vec![0; types], fix_allocated: vec![0; l.fixed_sizes as usize], fix_used: vec![0; l.fixed_sizes as usize] };
    let info = mem.read_vec(infos, (l.info_size * (l.max_type + 1)) as usize, "allocator info")?;
    let specs = mem.read_vec(thr_specs, (l.thr_spec_size * (l.max_type + 1)) as usize, "allocator instances")?;
    for ai in 1..=l.max_type {
        let i = ai * l.info_size;
        if u32_at(&info, i + l.info_alloc_util) == 0 || u32_at(&info, i + l.info_enabled) == 0 {
            continue;
        }
        let thr_spec = u32_at(&info, i + l.info_thr_spec) != 0;
        let instances: Vec<u64> = if thr_spec {
            let s = ai * l.thr_spec_size;
            let count = u64::from(u32_at(&specs, s + l.thr_spec_count));
            if count > MAX_INSTANCES {
                return Err(Error::Corrupt(format!("allocator type {ai}: {count} instances")));
            }
            let array = u64_at(&specs, s + l.thr_spec_instances);
            let raw = mem.read_vec(array, (count * 8) as usize, "allocator instance array")?;
            raw.chunks_exact(8).map(|c| u64_at(c, 0)).filter(|&p| p != 0).collect()
        } else {
            vec![u64_at(&info, i + l.info_extra)].into_iter().filter(|&p| p != 0).collect()
        };
        // A single instance counts only its own type's blocks (`alcu_size`); carriers move
        // between the per-scheduler instances of all types.
        let only = if thr_spec { None } else { Some(ai) };
        for allctr in instances {
            add_instance(mem, l, allctr, only, ai == l.fixed_size, &mut b)?;
        }
    }
    Ok(b)
}

/// One instance's blocks of every type (`erts_alcu_foreign_size`), and for fix_alloc its
/// fixed-size lists (`erts_alcu_current_size`).
fn add_instance(mem: &RemoteMemory, l: &AllocLayout, allctr: u64, only: Option<u64>, fix: bool, b: &mut TypeBytes) -> Result<()> {
    let stats_len = (l.block_stats_size * l.max_type) as usize;
    let mbcs = mem.read_vec(allctr + l.mbcs_blocks, stats_len, "multiblock carrier stats")?;
    let sbcs = mem.read_vec(allctr + l.sbcs_blocks, stats_len, "singleblock carrier stats")?;
    let pooled = mem.read_u64(allctr + l.cpool_util_limit, "carrier pool limit")? != 0;
    let pool =
        if pooled { mem.read_vec(allctr + l.cpool_blocks_size, (8 * l.max_type) as usize, "carrier pool stats")? } else { Vec::new() };
    for ix in (0..l.max_type).filter(|ix| only.is_none_or(|ai| ai == ix + 1)) {
        let stat = ix * l.block_stats_size + l.block_curr_size;
        let mut bytes = u64_at(&mbcs, stat) + u64_at(&sbcs, stat);
        if pooled {
            bytes += u64_at(&pool, ix * 8);
        }
        if bytes > MAX_BYTES {
            return Err(Error::Corrupt(format!("allocator at {allctr:#x}: {bytes} bytes of type {}", ix + 1)));
        }
        b.blocks[ix as usize + 1] += bytes;
    }
    if fix {
        let lists = mem.read_u64(allctr + l.fix, "fixed-size lists")?;
        if lists != 0 {
            let buf = mem.read_vec(lists, (l.fix_size * l.fixed_sizes) as usize, "fixed-size lists")?;
            let (allocated, used) =
                if pooled { (l.fix_cpool_allocated, l.fix_cpool_used) } else { (l.fix_nocpool_allocated, l.fix_nocpool_used) };
            for ix in 0..l.fixed_sizes {
                let list = ix * l.fix_size;
                let size = u64_at(&buf, list + l.fix_type_size);
                let (a, u) = (u64_at(&buf, list + allocated), u64_at(&buf, list + used));
                if size > 1 << 20 || a > MAX_BYTES || u > MAX_BYTES {
                    return Err(Error::Corrupt(format!("fixed-size list {ix}: {size} bytes x {a} allocated")));
                }
                b.fix_allocated[ix as usize] += size * a;
                b.fix_used[ix as usize] += size * u;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::AtomTally;

    fn tally(lens: &[u64], chunk_bytes: u64) -> (u64, u64) {
        let mut t = AtomTally::default();
        for &len in lens {
            t.add(len, chunk_bytes);
        }
        t.space(chunk_bytes)
    }

    #[test]
    fn atom_texts_fill_chunks_in_order() {
        // Chunks of 16 bytes of text (plus the next pointer): 10 + 5 fit, 10 more starts a
        // second chunk; a text that would reach the end exactly moves on too (`>=`).
        assert_eq!(tally(&[10, 5, 10], 24), (48, 25));
        assert_eq!(tally(&[10, 6], 24), (48, 16));
        assert_eq!(tally(&[], 24), (24, 0));
        // Built-in atoms count as empty; without chunks (OTP 29) the space is the lengths.
        assert_eq!(tally(&[0, 0, 4], 24), (24, 4));
        assert_eq!(tally(&[10, 6], 0), (16, 16));
    }
}
