//! Erlang frames of a CPU sample, without JIT frame pointers. The sampler copies the top of the
//! running process's Erlang stack; each continuation pointer there (the return address a call
//! pushed) names a caller, innermost first. A word counts as one only when it is aligned as the
//! JIT aligns return addresses (a term never is: boxed, list and immediate terms have a low tag
//! bit set), lies in an Erlang function's JIT code, and follows a call instruction in the VM's
//! code: a stale word that merely looks like a code address makes no frame.

use std::collections::HashMap;

use beam_probes::memory::RemoteMemory;

/// At most this many Erlang frames per sample (deeper stacks keep their innermost frames).
pub const MAX_FRAMES: usize = 64;
/// Return sites remembered before the cache starts over (code is loaded and purged rarely).
const CACHE_LIMIT: usize = 200_000;

/// Which JIT addresses are return sites, i.e. follow a call instruction, read from the VM's
/// code and remembered.
pub struct ReturnSites {
    mem: RemoteMemory,
    known: HashMap<u64, bool>,
}

impl ReturnSites {
    pub fn new(pid: u32) -> ReturnSites {
        ReturnSites { mem: RemoteMemory::new(pid), known: HashMap::new() }
    }

    /// Whether the instruction before `addr` is a call (the encodings the x86-64 JIT emits:
    /// `call rel32`, `call [rip+disp32]`, `call reg` and `call [reg+disp]`).
    pub fn is_return_site(&mut self, addr: u64) -> bool {
        if let Some(&k) = self.known.get(&addr) {
            return k;
        }
        let mut before = [0u8; 8];
        let ok = addr >= 8 && self.mem.read_into(addr - 8, &mut before, "JIT code").is_ok() && follows_call(&before);
        if self.known.len() >= CACHE_LIMIT {
            self.known.clear();
        }
        self.known.insert(addr, ok);
        ok
    }
}

/// Whether the 8 bytes before a return address end with a call instruction: `call rel32`
/// (E8), or `call r/m64` (FF /2) in any of its addressing forms (register, memory through a
/// base, an index or RIP, with or without a displacement and a REX prefix), which the JIT uses
/// for local, remote (through the export table) and helper calls.
fn follows_call(b: &[u8; 8]) -> bool {
    if b[3] == 0xe8 {
        return true;
    }
    // An FF /2 of `len` bytes ends right at the return address.
    (2..=7).any(|len| {
        let at = 8 - len;
        b[at] == 0xff && ff2_length(&b[at + 1..]) == Some(len)
    })
}

/// The length of `FF /2` (call r/m64) given the bytes after its opcode, or `None` when they
/// are not such a call's ModRM.
fn ff2_length(rest: &[u8]) -> Option<usize> {
    let modrm = *rest.first()?;
    let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if reg != 2 {
        return None;
    }
    let mut len = 2;
    if md == 3 {
        return Some(len);
    }
    if rm == 4 {
        let sib = *rest.get(1)?;
        len += 1;
        if md == 0 && sib & 7 == 5 {
            len += 4;
        }
    } else if md == 0 && rm == 5 {
        len += 4;
    }
    len += match md {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    Some(len)
}

/// The continuation pointers in `words` (the Erlang stack from its top down to at most its
/// bottom), innermost first: aligned to `alignment`, inside an Erlang function (`in_function`)
/// and after a call (`sites`).
pub fn continuation_pointers(
    words: &[u64],
    alignment: u64,
    mut in_function: impl FnMut(u64) -> bool,
    sites: &mut ReturnSites,
) -> Vec<u64> {
    let mut out = Vec::new();
    for &w in words {
        if out.len() >= MAX_FRAMES {
            break;
        }
        if w == 0 || alignment == 0 || w % alignment != 0 {
            continue;
        }
        if in_function(w) && sites.is_return_site(w) {
            out.push(w);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_encodings() {
        let with_tail = |tail: &[u8]| {
            let mut b = [0x90u8; 8];
            b[8 - tail.len()..].copy_from_slice(tail);
            follows_call(&b)
        };
        assert!(with_tail(&[0xe8, 1, 2, 3, 4]));
        // call [rip+disp32], [rbx+disp32], [rbx+disp8], rax, r11.
        assert!(with_tail(&[0xff, 0x15, 1, 2, 3, 4]));
        assert!(with_tail(&[0xff, 0x93, 1, 2, 3, 4]));
        assert!(with_tail(&[0xff, 0x53, 0x10]));
        assert!(with_tail(&[0xff, 0xd0]));
        assert!(with_tail(&[0x41, 0xff, 0xd3]));
        // Through an index: call [rax+r12*8+disp32], call [rax+rcx*8+disp8], call [rcx*8+disp32].
        assert!(with_tail(&[0x42, 0xff, 0x94, 0xe0, 1, 2, 3, 4]));
        assert!(with_tail(&[0xff, 0x54, 0xc8, 0x10]));
        assert!(with_tail(&[0xff, 0x14, 0xcd, 1, 2, 3, 4]));
        // Not calls: a jump (rel32, register, memory), a push, a return, padding.
        assert!(!with_tail(&[0xe9, 1, 2, 3, 4]));
        assert!(!with_tail(&[0xff, 0xe0]));
        assert!(!with_tail(&[0xff, 0x25, 1, 2, 3, 4]));
        assert!(!with_tail(&[0x50]));
        assert!(!with_tail(&[0xc3]));
        assert!(!follows_call(&[0x90; 8]));
    }
}
