//! Decoding of Erlang terms read from the VM: local pids and atoms. Only identities are
//! decoded (pid numbers, atom text); message contents and process state never are.

use std::fmt;

use serde::Serialize;

/// Bit layout of a local pid term (an immediate) in one build.
///
/// A pid term is `tag | (data << data_shift)` plus the process-table index somewhere: the
/// data is `(serial << number_bits) | number`, as Erlang prints it (`<0.number.serial>`).
/// Where the table index lives changed in OTP 26 (see [`PidIndex`]).
#[derive(Debug, Clone, Copy)]
pub struct PidLayout {
    /// Mask and value of the immediate tag that marks a pid.
    pub tag_mask: u64,
    pub tag: u64,
    /// Where the pid data starts (the tag's width) and how wide it is.
    pub data_shift: u32,
    pub data_bits: u32,
    /// The number is the data's low `number_bits`, the serial the `serial_bits` above them.
    pub number_bits: u32,
    pub serial_bits: u32,
    pub index: PidIndex,
}

/// How a pid term holds the index of its process-table slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidIndex {
    /// OTP 25 (64-bit): the index is the bits above `shift`, the data sits below them
    /// untouched: `(index << shift) | (data << data_shift) | tag`.
    Above { shift: u32 },
    /// OTP 26+: `(pixdata << data_shift) | tag`. `pixdata` is the data with its low bits
    /// permuted so that they are the slot index (consecutive pids land in different cache
    /// lines): `erts_ptab_data2pixdata` / `erts_ptab_pixdata2data` in erl_ptab.h, driven by
    /// the table's runtime masks ([`PtabIndexing`]).
    PixData,
}

/// The process table's index masks and shifts (`ErtsPTabReadOnlyData.pix_*`), read from the
/// running VM: they follow from its table size (`+P`), fixed at boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PtabIndexing {
    pub pix_mask: u64,
    pub pix_cl_mask: u64,
    pub pix_cl_shift: u32,
    pub pix_cli_mask: u64,
    pub pix_cli_shift: u32,
}

impl PtabIndexing {
    /// Sanity of values read from a VM: the shifts are below 64 and together cover the mask
    /// bits, as `erts_ptab_init_table` sets them. Anything else is a torn or wrong read.
    pub fn is_sane(&self) -> bool {
        self.pix_cl_shift < 32
            && self.pix_cli_shift < 32
            && self.pix_mask != 0
            && (self.pix_mask + 1).is_power_of_two()
            && u64::from(self.pix_cl_shift + self.pix_cli_shift) == u64::from((self.pix_mask + 1).trailing_zeros())
    }
}

/// A [`PidLayout`] together with what decoding needs from the running VM.
#[derive(Debug, Clone, Copy)]
pub struct PidDecoder {
    pub layout: PidLayout,
    /// Only used by [`PidIndex::PixData`] layouts.
    pub indexing: PtabIndexing,
}

fn low_bits(x: u64, bits: u32) -> u64 {
    if bits >= 64 { x } else { x & ((1u64 << bits) - 1) }
}

impl PidDecoder {
    pub fn new(layout: PidLayout, indexing: PtabIndexing) -> Self {
        PidDecoder { layout, indexing }
    }

    pub fn is_pid(&self, term: u64) -> bool {
        term & self.layout.tag_mask == self.layout.tag
    }

    /// The bits between the tag and the index (OTP 25) or the whole pixdata (OTP 26+).
    fn raw(&self, term: u64) -> u64 {
        low_bits(term >> self.layout.data_shift, self.layout.data_bits)
    }

    /// The pid data (serial and number), undoing the index permutation of OTP 26+.
    pub fn data(&self, term: u64) -> u64 {
        let raw = self.raw(term);
        match self.layout.index {
            PidIndex::Above { .. } => raw,
            PidIndex::PixData => {
                let ix = &self.indexing;
                let mut data = raw & !ix.pix_mask;
                data |= (raw >> ix.pix_cl_shift) & ix.pix_cl_mask;
                data |= (raw & ix.pix_cli_mask) << ix.pix_cli_shift;
                data
            }
        }
    }

    pub fn number(&self, term: u64) -> u64 {
        low_bits(self.data(term), self.layout.number_bits)
    }

    pub fn serial(&self, term: u64) -> u64 {
        low_bits(self.data(term) >> self.layout.number_bits, self.layout.serial_bits)
    }

    /// The process-table slot the pid lives in.
    pub fn table_index(&self, term: u64) -> u64 {
        match self.layout.index {
            PidIndex::Above { shift } => term >> shift,
            PidIndex::PixData => self.raw(term) & self.indexing.pix_mask,
        }
    }

    pub fn decode(&self, term: u64) -> Option<Pid> {
        self.is_pid(term).then(|| Pid { term, number: self.number(term), serial: self.serial(term) })
    }

    /// The table slot of pid data (`erts_ptab_data2pix`, erl_ptab.h).
    fn data_to_slot(&self, data: u64) -> u64 {
        let ix = &self.indexing;
        ((data & ix.pix_cl_mask) << ix.pix_cl_shift) + ((data >> ix.pix_cli_shift) & ix.pix_cli_mask)
    }

    /// The inverse of [`decode`](Self::decode): the term of `<0.number.serial>` as the VM
    /// builds it (`erts_ptab_make_id`), or `None` when they do not fit the layout. USDT probes
    /// name processes by such strings; the BPF programs do this same computation (monitor.h,
    /// `pid_from_string`) so their events key processes like the uprobes' raw terms.
    pub fn encode(&self, number: u64, serial: u64) -> Option<u64> {
        let l = &self.layout;
        if low_bits(number, l.number_bits) != number || low_bits(serial, l.serial_bits) != serial {
            return None;
        }
        let data = number | (serial << l.number_bits);
        let slot = self.data_to_slot(data);
        Some(match l.index {
            PidIndex::Above { shift } => (slot << shift) | (data << l.data_shift) | l.tag,
            PidIndex::PixData => (((data & !self.indexing.pix_mask) | slot) << l.data_shift) | l.tag,
        })
    }
}

/// A decoded local pid. Displays as Erlang prints it: `<0.N.S>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Pid {
    /// The raw term as the VM stores it: the key everything else is indexed by.
    pub term: u64,
    pub number: u64,
    pub serial: u64,
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<0.{}.{}>", self.number, self.serial)
    }
}

/// Bit layout of an atom term and of the atom table in one build.
#[derive(Debug, Clone, Copy)]
pub struct AtomLayout {
    pub tag_mask: u64,
    pub tag: u64,
    /// The atom index is `term >> index_shift`.
    pub index_shift: u32,
    /// In the `IndexTable` behind `erts_atom_table`: entry count (i32) and segment table pointer.
    pub table_entries: u64,
    pub table_seg_table: u64,
    /// log2 of the number of slots per segment.
    pub segment_bits: u32,
    /// In an `Atom`: its byte length (i16) and where its text is (see `name`).
    pub atom_len: u64,
    pub atom_name: u64,
    /// What the `atom_name` field holds.
    pub name: AtomName,
}

/// How an `Atom` refers to its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomName {
    /// `byte *name` (up to OTP 28).
    Pointer,
    /// `Eterm bin`: a boxed binary term in the literal area (OTP 29: `u.bin`, erl_bits.h). Its
    /// header's low 6 bits tell a heap binary (the bytes follow the header and bit size) from
    /// a sub-binary of an off-heap one (a base pointer whose low 2 bits are flags, plus a bit
    /// offset). Atom names are whole bytes from offset 0.
    Bitstring {
        boxed_tag_mask: u64,
        boxed_tag: u64,
        header_tag_mask: u64,
        heap_bits_tag: u64,
        heap_bits_data: u64,
        sub_bits_tag: u64,
        sub_bits_base: u64,
        sub_bits_base_flags: u64,
        sub_bits_start: u64,
    },
}

impl AtomLayout {
    pub fn index(&self, term: u64) -> Option<u64> {
        (term & self.tag_mask == self.tag).then_some(term >> self.index_shift)
    }

    /// The atom term of an index.
    pub fn term(&self, index: u64) -> u64 {
        index << self.index_shift | self.tag
    }
}

#[cfg(test)]
mod tests {
    use super::{PidDecoder, PtabIndexing};
    use crate::builds::{DEBIAN12_OTP25, DEBIAN13_OTP27};

    #[test]
    fn decodes_otp25_pids_like_erlang_prints_them() {
        let l = PidDecoder::new(DEBIAN12_OTP25.pid, PtabIndexing::default());
        // Terms read from a live OTP 25 VM next to what pid_to_list/1 printed.
        assert_eq!(l.decode(0x0280_0000_0503).unwrap().to_string(), "<0.80.0>");
        assert_eq!(l.decode(0x48_0000_0093).unwrap().to_string(), "<0.9.0>");
        assert_eq!(l.decode(0x3).unwrap().to_string(), "<0.0.0>");
        assert_eq!(l.table_index(0x48_0000_0093), 72);
        assert!(l.decode(0x4b).is_none(), "an atom is not a pid");
    }

    /// The masks `erts_ptab_init_table` computes for the default table (1,048,576 slots, 8
    /// slots per 64-byte cache line), as read from a live OTP 27 VM.
    const DEFAULT_INDEXING: PtabIndexing =
        PtabIndexing { pix_mask: (1 << 20) - 1, pix_cl_mask: (1 << 17) - 1, pix_cl_shift: 3, pix_cli_mask: 7, pix_cli_shift: 17 };

    #[test]
    fn decodes_otp27_pids_like_erlang_prints_them() {
        assert!(DEFAULT_INDEXING.is_sane());
        let l = PidDecoder::new(DEBIAN13_OTP27.pid, DEFAULT_INDEXING);
        // Read from a live OTP 27 VM (r13 while a registered burner ran) next to what
        // whereis/1 printed: <0.83.0>, in slot 664 (= 83 * 8: one pid per cache line).
        assert_eq!(l.decode(0x2983).unwrap().to_string(), "<0.83.0>");
        assert_eq!(l.table_index(0x2983), 664);
        assert_eq!(l.decode(0x3).unwrap().to_string(), "<0.0.0>");
        // Pid number 2^17 wraps to the next slot of the first cache line; a serial above the
        // 28 number bits stays out of the index.
        let data = (5u64 << 28) | (1 << 17);
        let pixdata = (data & !DEFAULT_INDEXING.pix_mask) | 1;
        assert_eq!(l.decode((pixdata << 4) | 3).unwrap().to_string(), format!("<0.{}.5>", 1 << 17));
        assert!(l.decode(0x4b).is_none(), "an atom is not a pid");
        assert!(!PtabIndexing::default().is_sane());
    }

    /// USDT probes name pids by strings; the BPF programs rebuild the VM's term from them.
    #[test]
    fn pid_terms_rebuilt_from_number_and_serial_equal_the_vm_terms() {
        // OTP 25: the masks erts_ptab_init_table sets for the default table (262144 slots, 8
        // per cache line), and terms read from a live VM next to what it printed.
        let otp25 = PtabIndexing { pix_mask: (1 << 18) - 1, pix_cl_mask: (1 << 15) - 1, pix_cl_shift: 3, pix_cli_mask: 7, pix_cli_shift: 15 };
        let d = PidDecoder::new(DEBIAN12_OTP25.pid, otp25);
        assert_eq!(d.encode(80, 0), Some(0x0280_0000_0503));
        assert_eq!(d.encode(9, 0), Some(0x0048_0000_0093));
        assert_eq!(d.encode(0, 0), Some(0x3));
        // A serial above 0 lands in the next slot of the same cache line.
        let t = d.encode(80, 1).unwrap();
        assert_eq!(d.decode(t).unwrap().to_string(), "<0.80.1>");
        assert_eq!(d.table_index(t), 641);
        assert_eq!(d.encode(1 << 15, 0), None, "the number does not fit");
        // OTP 27: <0.83.0> in slot 664.
        let otp27 = PtabIndexing { pix_mask: (1 << 20) - 1, pix_cl_mask: (1 << 17) - 1, pix_cl_shift: 3, pix_cli_mask: 7, pix_cli_shift: 17 };
        let d = PidDecoder::new(DEBIAN13_OTP27.pid, otp27);
        assert_eq!(d.encode(83, 0), Some(0x2983));
        for (n, s) in [(0, 0), (1 << 17, 5), (123_456, 7), ((1 << 28) - 1, 1)] {
            assert_eq!(d.decode(d.encode(n, s).unwrap()).map(|p| (p.number, p.serial)), Some((n, s)));
        }
    }
}
