//! The process table (`erts_proc`) and the atom table, read from outside while the VM runs.
//! Every pointer is validated before it is followed: a torn read gives `None` or an error,
//! never a loop or a wrong name.

use crate::builds::BuildTable;
use crate::error::{Error, Result};
use crate::memory::RemoteMemory;
use crate::terms::{AtomName, PidDecoder, PidIndex, PtabIndexing};

/// Upper bound on the slots we accept, so a corrupt `max` cannot make us read gigabytes.
const MAX_SLOTS: u32 = 1 << 27;
/// Longest atom text (Erlang limits atoms to 255 characters, up to 4 bytes each).
const MAX_ATOM_BYTES: i16 = 1020;

pub struct ProcessTable<'a> {
    mem: RemoteMemory,
    table: &'a BuildTable,
    /// Runtime address of the `ErtsPTab`.
    ptab_addr: u64,
    /// Runtime address of the atom `IndexTable`.
    atom_table_addr: u64,
}

impl<'a> ProcessTable<'a> {
    pub fn new(mem: RemoteMemory, table: &'a BuildTable, ptab_addr: u64, atom_table_addr: u64) -> Self {
        ProcessTable { mem, table, ptab_addr, atom_table_addr }
    }

    pub fn build(&self) -> &'a BuildTable {
        self.table
    }

    pub fn memory(&self) -> RemoteMemory {
        self.mem
    }

    /// The registered name behind a `RegProc` pointer.
    pub fn reg_name(&self, reg: u64) -> Result<String> {
        let name = self.mem.read_u64(reg + self.table.reg_proc.name, "registered name")?;
        self.atom_text(name)
    }

    /// The slot array and its size.
    pub fn slots(&self) -> Result<(u64, u32)> {
        let tab = self.mem.read_u64(self.ptab_addr + self.table.ptab.tab, "process table pointer")?;
        let max = self.mem.read_u32(self.ptab_addr + self.table.ptab.max, "process table size")?;
        if tab == 0 || max == 0 || max > MAX_SLOTS {
            return Err(Error::Corrupt(format!("process table: tab={tab:#x} max={max}")));
        }
        Ok((tab, max))
    }

    /// The pid decoder for this VM: the build's pid layout with the table's index masks
    /// (read every time: a few bytes, and a VM that restarted under the same pid has new ones).
    pub fn pid_decoder(&self) -> Result<PidDecoder> {
        if self.table.pid.index != PidIndex::PixData {
            // The index sits in the term itself: nothing to read (nor to fail on).
            return Ok(PidDecoder::new(self.table.pid, PtabIndexing::default()));
        }
        self.pid_encoder()
    }

    /// A pid decoder that can also [encode](PidDecoder::encode): building a term from number
    /// and serial needs the table's index masks on every layout.
    pub fn pid_encoder(&self) -> Result<PidDecoder> {
        let p = &self.table.ptab;
        let read = |off: u64, what: &'static str| self.mem.read_u32(self.ptab_addr + off, what);
        let mask = |off: u64, what: &'static str| match p.pix_mask_bytes {
            8 => self.mem.read_u64(self.ptab_addr + off, what),
            _ => read(off, what).map(u64::from),
        };
        let indexing = PtabIndexing {
            pix_mask: mask(p.pix_mask, "process table pix_mask")?,
            pix_cl_mask: mask(p.pix_cl_mask, "process table pix_cl_mask")?,
            pix_cl_shift: read(p.pix_cl_shift, "process table pix_cl_shift")?,
            pix_cli_mask: mask(p.pix_cli_mask, "process table pix_cli_mask")?,
            pix_cli_shift: read(p.pix_cli_shift, "process table pix_cli_shift")?,
        };
        if !indexing.is_sane() {
            return Err(Error::Corrupt(format!("process table index masks: {indexing:?}")));
        }
        Ok(PidDecoder::new(self.table.pid, indexing))
    }

    /// The `Process*` for a pid term, if that pid is still alive.
    pub fn process_ptr(&self, pid_term: u64) -> Result<Option<u64>> {
        let (tab, max) = self.slots()?;
        let ix = self.pid_decoder()?.table_index(pid_term);
        if ix >= u64::from(max) {
            return Ok(None);
        }
        let p = self.mem.read_u64(tab + ix * 8, "process table slot")?;
        if p == 0 {
            return Ok(None);
        }
        // The slot may have been reused by another process since: check the id.
        let id = self.mem.read_u64(p + self.table.process.id, "process id")?;
        Ok((id == pid_term).then_some(p))
    }

    /// The registered name of a live process, `None` if it has none or is gone.
    pub fn registered_name(&self, pid_term: u64) -> Result<Option<String>> {
        let Some(p) = self.process_ptr(pid_term)? else { return Ok(None) };
        let reg = self.mem.read_u64(p + self.table.process.reg, "process registration")?;
        if reg == 0 {
            return Ok(None);
        }
        self.reg_name(reg).map(Some)
    }

    /// Where an atom's bytes are, from its name field at `field`.
    fn atom_text_address(&self, field: u64) -> Result<u64> {
        let value = self.mem.read_u64(field, "atom name")?;
        match self.table.atom.name {
            AtomName::Pointer => Ok(value),
            AtomName::Bitstring {
                boxed_tag_mask,
                boxed_tag,
                header_tag_mask,
                heap_bits_tag,
                heap_bits_data,
                sub_bits_tag,
                sub_bits_base,
                sub_bits_base_flags,
                sub_bits_start,
            } => {
                if value & boxed_tag_mask != boxed_tag {
                    return Err(Error::Corrupt(format!("atom name {value:#x} is not a boxed term")));
                }
                let boxed = value & !boxed_tag_mask;
                let header = self.mem.read_u64(boxed, "atom name header")?;
                match header & header_tag_mask {
                    t if t == heap_bits_tag => Ok(boxed + heap_bits_data),
                    t if t == sub_bits_tag => {
                        let base = self.mem.read_u64(boxed + sub_bits_base, "atom name base")? & !sub_bits_base_flags;
                        let start_bits = self.mem.read_u64(boxed + sub_bits_start, "atom name offset")?;
                        Ok(base + start_bits / 8)
                    }
                    other => Err(Error::Corrupt(format!("atom name header tag {other:#x}"))),
                }
            }
        }
    }

    /// The text of an atom term.
    pub fn atom_text(&self, atom_term: u64) -> Result<String> {
        let l = &self.table.atom;
        let ix = l.index(atom_term).ok_or_else(|| Error::Corrupt(format!("{atom_term:#x} is not an atom")))?;
        let entries = self.mem.read_u32(self.atom_table_addr + l.table_entries, "atom count")?;
        if ix >= u64::from(entries) {
            return Err(Error::Corrupt(format!("atom index {ix} beyond {entries} atoms")));
        }
        let seg_table = self.mem.read_u64(self.atom_table_addr + l.table_seg_table, "atom segments")?;
        let seg = self.mem.read_u64(seg_table + (ix >> l.segment_bits) * 8, "atom segment")?;
        let atom = self.mem.read_u64(seg + (ix & ((1 << l.segment_bits) - 1)) * 8, "atom")?;
        let len = self.mem.read_i16(atom + l.atom_len, "atom length")?;
        if !(0..=MAX_ATOM_BYTES).contains(&len) {
            return Err(Error::Corrupt(format!("atom {ix}: length {len}")));
        }
        let text_ptr = self.atom_text_address(atom + l.atom_name)?;
        let text = self.mem.read_vec(text_ptr, len as usize, "atom text")?;
        String::from_utf8(text).map_err(|_| Error::Corrupt(format!("atom {ix}: not UTF-8")))
    }
}
