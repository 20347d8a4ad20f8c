//! Decoding of Erlang terms read from the VM: local pids and atoms. Only identities are
//! decoded (pid numbers, atom text); message contents and process state never are.

use std::fmt;

use serde::Serialize;

/// Bit layout of a local pid term (an immediate) in one build.
#[derive(Debug, Clone, Copy)]
pub struct PidLayout {
    /// Mask and value of the immediate tag that marks a pid.
    pub tag_mask: u64,
    pub tag: u64,
    /// Where the pid number sits and how wide it is.
    pub number_shift: u32,
    pub number_bits: u32,
    /// Where the serial sits and how wide it is.
    pub serial_shift: u32,
    pub serial_bits: u32,
    /// Where the process-table index sits (the bits above it).
    pub table_index_shift: u32,
    /// Process-table slots per cache line (`ERTS_CACHE_LINE_SIZE / sizeof(erts_atomic_t)`): the
    /// table index spreads consecutive pids over cache lines by it (see `usdt::PidIndexing`).
    pub ptab_slots_per_cache_line: u64,
}

impl PidLayout {
    pub fn is_pid(&self, term: u64) -> bool {
        term & self.tag_mask == self.tag
    }

    pub fn number(&self, term: u64) -> u64 {
        (term >> self.number_shift) & ((1 << self.number_bits) - 1)
    }

    pub fn serial(&self, term: u64) -> u64 {
        (term >> self.serial_shift) & ((1 << self.serial_bits) - 1)
    }

    pub fn table_index(&self, term: u64) -> u64 {
        term >> self.table_index_shift
    }

    pub fn decode(&self, term: u64) -> Option<Pid> {
        self.is_pid(term).then(|| Pid { term, number: self.number(term), serial: self.serial(term) })
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
    /// In an `Atom`: its byte length (i16) and a pointer to its text.
    pub atom_len: u64,
    pub atom_name: u64,
}

impl AtomLayout {
    pub fn index(&self, term: u64) -> Option<u64> {
        (term & self.tag_mask == self.tag).then_some(term >> self.index_shift)
    }
}

#[cfg(test)]
mod tests {
    use crate::builds::DEBIAN12_OTP25;

    #[test]
    fn decodes_otp25_pids_like_erlang_prints_them() {
        let l = DEBIAN12_OTP25.pid;
        // Terms read from a live OTP 25 VM next to what pid_to_list/1 printed.
        assert_eq!(l.decode(0x2800_0000_503).unwrap().to_string(), "<0.80.0>");
        assert_eq!(l.decode(0x48_0000_0093).unwrap().to_string(), "<0.9.0>");
        assert_eq!(l.decode(0x3).unwrap().to_string(), "<0.0.0>");
        assert_eq!(l.table_index(0x48_0000_0093), 72);
        assert!(l.decode(0x4b).is_none(), "an atom is not a pid");
    }
}
