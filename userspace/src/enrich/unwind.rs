//! C frames of a CPU sample. beam.smp and its libraries are built without frame pointers, so
//! the sampler copies the thread's native stack from its stack pointer and this module unwinds
//! it with each binary's `.eh_frame` (framehop), from the sampled instruction to the first
//! return address outside the binaries: JIT code, where the Erlang stack takes over, or the
//! thread's start.

use std::collections::HashSet;
use std::sync::Arc;

use beam_probes::maps::{FileMapping, executable_file_mappings};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};
use object::{Object, ObjectSection};

/// At most this many C frames per sample.
const MAX_FRAMES: usize = 64;

pub struct NativeUnwinder {
    pid: u32,
    unwinder: UnwinderX86_64<Arc<[u8]>>,
    cache: CacheX86_64,
    /// Address ranges of the modules added (and of mappings without unwind info, skipped).
    known: HashSet<(u64, u64)>,
    ranges: Vec<(u64, u64)>,
}

/// A sample's C frames.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NativeFrames {
    /// Leaf first: the sampled instruction, then return addresses, all inside the binaries.
    pub frames: Vec<u64>,
    /// The first return address outside them, when the unwinding got there (JIT code when a
    /// process called into C).
    pub exit: Option<u64>,
}

impl NativeUnwinder {
    pub fn new(pid: u32) -> NativeUnwinder {
        let mut u = NativeUnwinder {
            pid,
            unwinder: UnwinderX86_64::new(),
            cache: CacheX86_64::new(),
            known: HashSet::new(),
            ranges: Vec::new(),
        };
        u.refresh();
        u
    }

    /// Adds the binaries mapped since the last call (NIFs and drivers load at any time).
    pub fn refresh(&mut self) {
        for m in executable_file_mappings(self.pid) {
            let key = (m.region.start, m.region.end);
            if !self.known.insert(key) {
                continue;
            }
            if let Some(module) = module_of(self.pid, &m) {
                self.unwinder.add_module(module);
                self.ranges.push(key);
            }
        }
    }

    /// Whether `addr` is in a binary this unwinder knows.
    pub fn covers(&self, addr: u64) -> bool {
        self.ranges.iter().any(|&(s, e)| addr >= s && addr < e)
    }

    /// Unwinds from the sampled registers through `stack`, the bytes copied from `sp` up.
    pub fn unwind(&mut self, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> NativeFrames {
        let mut out = NativeFrames::default();
        if !self.covers(ip) {
            return out;
        }
        out.frames.push(ip);
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let at = addr.checked_sub(sp).ok_or(())? as usize;
            let bytes = stack.get(at..at.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut address = FrameAddress::from_instruction_pointer(ip);
        while out.frames.len() < MAX_FRAMES {
            match self.unwinder.unwind_frame(address, &mut regs, &mut self.cache, &mut read_stack) {
                Ok(Some(ret)) if self.covers(ret) => {
                    out.frames.push(ret);
                    match FrameAddress::from_return_address(ret) {
                        Some(a) => address = a,
                        None => break,
                    }
                }
                Ok(Some(ret)) => {
                    out.exit = Some(ret);
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        out
    }
}

/// A framehop module for one executable mapping, from its file's `.eh_frame` (and header);
/// `None` when the file cannot be read or has no unwind information.
fn module_of(pid: u32, m: &FileMapping) -> Option<Module<Arc<[u8]>>> {
    let data = std::fs::read(m.file_from_outside(pid)).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let bias = beam_probes::elf::load_bias(&file, m.region.start, m.offset)?;
    let section = |name: &str| {
        let s = file.section_by_name(name)?;
        let bytes: Arc<[u8]> = Arc::from(s.data().ok()?);
        Some((s.address()..s.address() + s.size(), bytes))
    };
    let eh_frame = section(".eh_frame")?;
    let eh_frame_hdr = section(".eh_frame_hdr");
    let text = file.section_by_name(".text").map(|s| s.address()..s.address() + s.size());
    let got = file.section_by_name(".got").map(|s| s.address()..s.address() + s.size());
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: text,
        got_svma: got,
        eh_frame_svma: Some(eh_frame.0),
        eh_frame: Some(eh_frame.1),
        eh_frame_hdr_svma: eh_frame_hdr.as_ref().map(|h| h.0.clone()),
        eh_frame_hdr: eh_frame_hdr.map(|h| h.1),
        ..Default::default()
    };
    Some(Module::new(m.path.clone(), m.region.start..m.region.end, bias, info))
}
