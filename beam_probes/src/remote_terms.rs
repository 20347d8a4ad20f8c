//! The few Erlang terms identity needs, read from a process's heap from outside: tuples,
//! lists, atoms, small integers, pids and bitstrings. Everything is bounded (depth, elements,
//! bytes) and checked (tags, alignment, readable memory); a term that does not hold together
//! reads as `None`, never as a wrong value. Only identity terms are read through here: the
//! dictionary's `$initial_call`, `$ancestors` and `$process_label`, never other values.

use std::collections::HashMap;

use crate::builds::BuildTable;
use crate::memory::PageCache;
use crate::proctab::ProcessTable;
use crate::terms::PidDecoder;

/// Bounds of a rendered term.
const MAX_DEPTH: usize = 4;
const MAX_ELEMENTS: usize = 8;
const MAX_CHARS: usize = 120;
const MAX_BYTES: u64 = 64;
const MAX_ARITY: u64 = 64;

pub struct TermReader<'a, 't> {
    pub t: &'a BuildTable,
    pub cache: &'a mut PageCache,
    pub table: &'a ProcessTable<'t>,
    pub pids: &'a PidDecoder,
    /// Atom texts by term, shared across the snapshot (`None`: unreadable).
    pub atoms: &'a mut HashMap<u64, Option<String>>,
}

/// A decoded term, as far as identity needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Atom(String),
    Int(i64),
    Pid(String),
    Nil,
    Tuple(Vec<u64>),
    List(Vec<u64>, bool),
    Bits(Vec<u8>, u64),
    Other,
}

impl TermReader<'_, '_> {
    fn is_immed(&self, term: u64) -> bool {
        term & self.t.terms.primary_mask == self.t.terms.immed
    }

    pub fn atom(&mut self, term: u64) -> Option<String> {
        self.t.atom.index(term)?;
        if let Some(text) = self.atoms.get(&term) {
            return text.clone();
        }
        let text = self.table.atom_text(term).ok();
        self.atoms.insert(term, text.clone());
        text
    }

    fn small(&self, term: u64) -> Option<i64> {
        let l = &self.t.terms;
        (term & l.small_mask == l.small_tag).then(|| (term as i64) >> l.small_shift)
    }

    /// What kind of term this is; the elements of tuples and lists are left as terms.
    pub fn decode(&mut self, term: u64) -> Term {
        let l = self.t.terms;
        if term == l.nil {
            return Term::Nil;
        }
        if self.is_immed(term) {
            if let Some(v) = self.small(term) {
                return Term::Int(v);
            }
            if let Some(pid) = self.pids.decode(term) {
                return Term::Pid(pid.to_string());
            }
            return match self.atom(term) {
                Some(a) => Term::Atom(a),
                None => Term::Other,
            };
        }
        let ptr = term & !l.primary_mask;
        if ptr == 0 {
            return Term::Other;
        }
        if term & l.primary_mask == l.list {
            return self.list(term).map_or(Term::Other, |(items, proper)| Term::List(items, proper));
        }
        if term & l.primary_mask != l.boxed {
            return Term::Other;
        }
        let Some(header) = self.cache.u64(ptr) else { return Term::Other };
        if header & l.header_mask == l.arityval {
            let arity = header >> l.arity_shift;
            if arity > MAX_ARITY {
                return Term::Other;
            }
            let mut items = vec![0u8; arity as usize * 8];
            if self.cache.read(ptr + 8, &mut items).is_none() {
                return Term::Other;
            }
            return Term::Tuple(items.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect());
        }
        self.bits(ptr, header).unwrap_or(Term::Other)
    }

    /// The first `MAX_ELEMENTS` elements of a list, and whether that is all of a proper list.
    fn list(&mut self, mut term: u64) -> Option<(Vec<u64>, bool)> {
        let l = self.t.terms;
        let mut items = Vec::new();
        while term & l.primary_mask == l.list {
            if items.len() == MAX_ELEMENTS {
                return Some((items, false));
            }
            let cell = term & !l.primary_mask;
            let mut pair = [0u8; 16];
            self.cache.read(cell, &mut pair)?;
            items.push(u64::from_le_bytes(pair[..8].try_into().ok()?));
            term = u64::from_le_bytes(pair[8..].try_into().ok()?);
        }
        Some((items, term == l.nil))
    }

    fn bits(&mut self, ptr: u64, header: u64) -> Option<Term> {
        let l = self.t.terms;
        let b = l.bits?;
        let (data, size_bits) = match header & l.header_mask {
            t if t == b.heap_bits => (ptr + b.heap_bits_data, self.cache.u64(ptr + b.heap_bits_size)?),
            t if t == b.sub_bits => {
                let base = self.cache.u64(ptr + b.sub_bits_base)? & !b.sub_bits_base_flags;
                let start = self.cache.u64(ptr + b.sub_bits_start)?;
                let end = self.cache.u64(ptr + b.sub_bits_end)?;
                (base.checked_add(start / 8)?, end.checked_sub(start)?)
            }
            _ => return None,
        };
        let bytes = size_bits / 8;
        let mut buf = vec![0u8; bytes.min(MAX_BYTES) as usize];
        self.cache.read(data, &mut buf)?;
        Some(Term::Bits(buf, bytes))
    }

    /// `Module:function/arity` from an `{M, F, A}` tuple of atoms and a small integer, or
    /// from an `ErtsCodeMFA` (three words) read in place.
    pub fn mfa(&mut self, m: u64, f: u64, a: u64) -> Option<(String, String, u64)> {
        let arity = self.small(a).and_then(|v| u64::try_from(v).ok()).unwrap_or(a);
        (arity <= 255).then_some(())?;
        Some((self.atom(m)?, self.atom(f)?, arity))
    }

    /// The term as Erlang would print it, shortened: at most a few levels, elements and
    /// characters (`…` where cut).
    pub fn render(&mut self, term: u64) -> String {
        let mut out = String::new();
        self.render_into(term, 0, &mut out);
        if out.chars().count() > MAX_CHARS {
            out = out.chars().take(MAX_CHARS - 1).collect::<String>() + "…";
        }
        out
    }

    fn render_into(&mut self, term: u64, depth: usize, out: &mut String) {
        if depth > MAX_DEPTH || out.len() > MAX_CHARS {
            out.push('…');
            return;
        }
        match self.decode(term) {
            Term::Atom(a) => out.push_str(&a),
            Term::Int(v) => out.push_str(&v.to_string()),
            Term::Pid(p) => out.push_str(&p),
            Term::Nil => out.push_str("[]"),
            Term::Tuple(items) => {
                out.push('{');
                self.render_items(&items, items.len() <= MAX_ELEMENTS, depth, out);
                out.push('}');
            }
            Term::List(items, complete) => {
                let chars: Option<String> = items
                    .iter()
                    .map(|&i| self.small(i).and_then(|v| u32::try_from(v).ok()).and_then(char::from_u32))
                    .filter(|c| c.is_none_or(|c| !c.is_control()))
                    .collect::<Option<String>>()
                    .filter(|s| s.chars().count() == items.len());
                match chars {
                    Some(s) => {
                        out.push('"');
                        out.push_str(&s);
                        out.push_str(if complete { "\"" } else { "…\"" });
                    }
                    None => {
                        out.push('[');
                        self.render_items(&items, complete, depth, out);
                        out.push(']');
                    }
                }
            }
            Term::Bits(bytes, len) => match std::str::from_utf8(&bytes).ok().filter(|s| !s.chars().any(char::is_control)) {
                Some(s) => {
                    out.push_str("<<\"");
                    out.push_str(s);
                    out.push_str(if len as usize > bytes.len() { "…\">>" } else { "\">>" });
                }
                None => out.push_str(&format!("<<{len} bytes>>")),
            },
            Term::Other => out.push('…'),
        }
    }

    fn render_items(&mut self, items: &[u64], complete: bool, depth: usize, out: &mut String) {
        for (i, &item) in items.iter().take(MAX_ELEMENTS).enumerate() {
            if i > 0 {
                out.push(',');
            }
            self.render_into(item, depth + 1, out);
        }
        if !complete {
            out.push_str(",…");
        }
    }
}

/// The reader over arbitrary bytes standing for a heap (a region of the page cache; every other
/// address unreadable, as in a process that is gone): whatever the words, it ends, stays within
/// its bounds and does not panic; and the terms it can read whole come out as Erlang prints them.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::{MAX_CHARS, TermReader};
    use crate::builds::{BuildTable, DEBIAN12_OTP25, DEBIAN13_OTP27};
    use crate::memory::{PageCache, RemoteMemory};
    use crate::proctab::ProcessTable;
    use crate::terms::{PidDecoder, PtabIndexing};

    const BASE: u64 = 0x7f00_0000_0000;
    /// No such process: every read outside the region fails.
    const GONE: u32 = i32::MAX as u32;

    fn render(t: &BuildTable, heap: &[u8], term: u64) -> String {
        let mut cache = PageCache::new(RemoteMemory::new(GONE), 1 << 16);
        cache.set_regions(vec![(BASE, heap.to_vec())]);
        let table = ProcessTable::new(RemoteMemory::new(GONE), t, 0, 0);
        let pids = PidDecoder::new(t.pid, PtabIndexing::default());
        let mut atoms = HashMap::new();
        TermReader { t, cache: &mut cache, table: &table, pids: &pids, atoms: &mut atoms }.render(term)
    }

    fn small(t: &BuildTable, v: i64) -> u64 {
        ((v << t.terms.small_shift) as u64) | t.terms.small_tag
    }

    fn build() -> impl Strategy<Value = &'static BuildTable> {
        prop_oneof![Just(&DEBIAN12_OTP25), Just(&DEBIAN13_OTP27)]
    }

    proptest! {
        #[test]
        fn any_words_end_bounded(t in build(), heap in proptest::collection::vec(any::<u8>(), 0..4096), offset in 0u64..4096, tag in 0u64..4, raw in any::<u64>(), pointer in any::<bool>()) {
            // Half the terms point into the heap (with any primary tag), half are any word.
            let term = if pointer { (BASE + (offset & !7)) | tag } else { raw };
            let text = render(t, &heap, term);
            prop_assert!(text.chars().count() <= MAX_CHARS, "{text}");
        }

        #[test]
        fn a_charlist_reads_as_a_string(t in build(), s in "[a-z_]{1,8}") {
            // A proper list of small integers, cell after cell, ending in nil.
            let l = t.terms;
            let mut heap = Vec::new();
            for (i, c) in s.chars().enumerate() {
                let tail = if i + 1 == s.len() { l.nil } else { (BASE + 16 * (i as u64 + 1)) | l.list };
                heap.extend(small(t, c as i64).to_le_bytes());
                heap.extend(tail.to_le_bytes());
            }
            prop_assert_eq!(render(t, &heap, BASE | l.list), format!("\"{s}\""));
        }

        #[test]
        fn a_tuple_of_integers_reads_whole(t in build(), items in proptest::collection::vec(-1000i64..1000, 1..6)) {
            let l = t.terms;
            let mut heap = ((items.len() as u64) << l.arity_shift | l.arityval).to_le_bytes().to_vec();
            for &v in &items {
                heap.extend(small(t, v).to_le_bytes());
            }
            let expected = format!("{{{}}}", items.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
            prop_assert_eq!(render(t, &heap, BASE | l.boxed), expected);
        }

        #[test]
        fn a_cyclic_list_is_cut(t in build(), v in 0i64..100) {
            // A cell whose tail is itself: the reader stops at its element bound.
            let l = t.terms;
            let mut heap = small(t, v).to_le_bytes().to_vec();
            heap.extend((BASE | l.list).to_le_bytes());
            let text = render(t, &heap, BASE | l.list);
            prop_assert!(text.ends_with(",…]") || text.ends_with("…\""), "{text}");
        }
    }
}
