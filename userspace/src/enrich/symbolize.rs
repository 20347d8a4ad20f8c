//! One symbolizer for every address scope-probe shows: JIT code through the VM's own symbol
//! sources (perf map, else the GDB JIT interface; `beam_probes::jit`), native code (beam.smp,
//! libraries) through blazesym or a stripped build's debug file, kernel code through the
//! kernel's symbols. JIT symbols are refreshed when code appears that they do not cover yet
//! (modules loaded while we run). Names are interned: a profile holds each once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use beam_probes::BeamTarget;
use beam_probes::code_names::display_name;
use beam_probes::jit::{JitSource, JitSymbolReader, JitSymbols};
use beam_probes::maps::{CodeRegion, FileMapping, executable_file_mappings, jit_code_regions};
use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};
use blazesym::MaybeDefault;

const NATIVE_CACHE: usize = 200_000;
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// The JIT's shared helper code is named `global::name` by the VM.
const JIT_GLOBAL_PREFIX: &str = "global::";

pub struct Symbolizer {
    pid: u32,
    jit: JitSymbols,
    reader: JitSymbolReader,
    regions: Vec<CodeRegion>,
    native: Blaze,
    native_cache: HashMap<u64, Arc<str>>,
    kernel_cache: HashMap<u64, Arc<str>>,
    /// Display names of JIT symbols by the symbol's start address.
    jit_names: HashMap<u64, Arc<str>>,
    last_refresh: Instant,
    frame_pointers: bool,
    /// File-backed executable mappings, for naming code without symbols by file and offset.
    files: Vec<FileMapping>,
    /// Per mapping (by start address): its load bias and its functions' ranges from
    /// `.eh_frame`, read when code without a symbol is first met there.
    functions: HashMap<u64, Arc<(u64, Vec<(u64, u64)>)>>,
    /// Each file mapping's file as readable from here (by the mapping's start).
    paths: HashMap<u64, std::path::PathBuf>,
    /// beam.smp's functions from its separate debug file (runtime start, size, name), sorted:
    /// a stripped build's static functions, which blazesym cannot name from the binary alone.
    debug_functions: Vec<(u64, u64, Arc<str>)>,
    /// JIT addresses no symbol covered even after a refresh.
    pub jit_misses: u64,
}

impl Symbolizer {
    pub fn new(target: &BeamTarget) -> Result<Symbolizer> {
        let mut reader = JitSymbolReader::new(target)?;
        let mut jit = JitSymbols::default();
        reader.refresh(&mut jit)?;
        Ok(Symbolizer {
            pid: target.pid,
            jit,
            reader,
            regions: jit_code_regions(target.pid).unwrap_or_default(),
            native: Blaze::new(),
            native_cache: HashMap::new(),
            kernel_cache: HashMap::new(),
            jit_names: HashMap::new(),
            last_refresh: Instant::now(),
            frame_pointers: target.jit_frame_pointers().unwrap_or_else(|| target.has_perf_map()),
            files: executable_file_mappings(target.pid),
            functions: HashMap::new(),
            paths: HashMap::new(),
            debug_functions: match target.debug_file {
                Some(_) => target
                    .elf
                    .sized_symbols()
                    .into_iter()
                    .map(|(addr, size, name)| (addr.wrapping_add(target.load_bias), size, Arc::from(name)))
                    .collect(),
                None => Vec::new(),
            },
            jit_misses: 0,
        })
    }

    pub fn jit_source(&self) -> JitSource {
        self.reader.source()
    }

    /// Whether the VM runs with JIT frame pointers (started with `+JPperf`), which lets the
    /// kernel's frame-pointer unwinder walk Erlang stacks.
    pub fn frame_pointers(&self) -> bool {
        self.frame_pointers
    }

    pub fn jit_symbol_count(&self) -> usize {
        self.jit.len()
    }

    /// Whether `addr` is JIT-generated code.
    pub fn in_jit(&self, addr: u64) -> bool {
        self.regions.iter().any(|r| addr >= r.start && addr < r.end) || self.jit.lookup(addr).is_some()
    }

    fn refresh(&mut self) {
        if self.last_refresh.elapsed() < REFRESH_EVERY {
            return;
        }
        self.last_refresh = Instant::now();
        let _ = self.reader.refresh(&mut self.jit);
        if let Ok(r) = jit_code_regions(self.pid) {
            self.regions = r;
        }
        self.files = executable_file_mappings(self.pid);
    }

    /// The display name of the code at `addr` (an instruction pointer: for a return address,
    /// ask for `addr - 1`, which is inside the call).
    pub fn name(&mut self, addr: u64) -> Arc<str> {
        if self.in_jit(addr) {
            return self.jit_name(addr).unwrap_or_else(|| {
                self.jit_misses += 1;
                Arc::from("[JIT code]")
            });
        }
        if let Some(n) = self.native_cache.get(&addr) {
            return n.clone();
        }
        let name = self.native_name(addr);
        if self.native_cache.len() >= NATIVE_CACHE {
            self.native_cache.clear();
        }
        self.native_cache.insert(addr, name.clone());
        name
    }

    /// The Erlang function whose JIT code holds `addr`, or `None` when `addr` is not in one
    /// (the JIT's shared helpers, module headers, unknown code).
    pub fn erlang_function(&mut self, addr: u64) -> Option<Arc<str>> {
        let name = self.jit_name(addr)?;
        (!name.starts_with(JIT_GLOBAL_PREFIX) && name.contains('/')).then_some(name)
    }

    fn jit_name(&mut self, addr: u64) -> Option<Arc<str>> {
        if self.jit.lookup(addr).is_none() {
            self.refresh();
        }
        let sym = self.jit.lookup(addr)?;
        let start = sym.start;
        if let Some(n) = self.jit_names.get(&start) {
            return Some(n.clone());
        }
        // A sample in a function's entry code is a sample of the function.
        let name: Arc<str> = Arc::from(display_name(sym.function()).as_ref());
        self.jit_names.insert(start, name.clone());
        Some(name)
    }

    /// A kernel function's name, marked `_[k]` (the flame graph convention for kernel frames).
    pub fn kernel_name(&mut self, addr: u64) -> Arc<str> {
        if let Some(n) = self.kernel_cache.get(&addr) {
            return n.clone();
        }
        let mut kernel = Kernel::default();
        kernel.vmlinux = MaybeDefault::None;
        let src = Source::Kernel(kernel);
        let name: Arc<str> = match self.native.symbolize(&src, Input::AbsAddr(&[addr])).ok().and_then(|mut v| v.pop()) {
            Some(Symbolized::Sym(sym)) => Arc::from(format!("{}_[k]", sym.name).as_str()),
            _ => Arc::from("[kernel]_[k]"),
        };
        if self.kernel_cache.len() >= NATIVE_CACHE {
            self.kernel_cache.clear();
        }
        self.kernel_cache.insert(addr, name.clone());
        name
    }

    fn native_name(&mut self, addr: u64) -> Arc<str> {
        let i = self.debug_functions.partition_point(|(start, _, _)| *start <= addr);
        if let Some((start, size, name)) = i.checked_sub(1).map(|i| &self.debug_functions[i])
            && addr < start + size
        {
            return name.clone();
        }
        let Some(m) = self.files.iter().find(|m| addr >= m.region.start && addr < m.region.end).cloned() else {
            return Arc::from("[unknown]");
        };
        // The file as mapped, by file offset: read through the VM's root, this needs no more
        // than CAP_SYS_PTRACE (blazesym's process source opens /proc/PID/map_files, which
        // wants CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN).
        let pid = self.pid;
        let path = self.paths.entry(m.region.start).or_insert_with(|| m.file_from_outside(pid)).clone();
        let src = Source::Elf(Elf::new(path));
        let offset = addr - m.region.start + m.offset;
        match self.native.symbolize(&src, Input::FileOffset(&[offset])).ok().and_then(|mut v| v.pop()) {
            Some(Symbolized::Sym(sym)) => Arc::from(without_parameters(&sym.name)),
            // A stripped binary's static functions have no symbol: name the file and the offset
            // in it, which a symbol file found later can still name.
            _ => {
                let file = m.path.trim_end_matches(" (deleted)").rsplit('/').next().unwrap_or(&m.path).to_owned();
                // The start of the function holding `addr` when .eh_frame tells it (all
                // samples of a function then share one name), else the instruction.
                let at = self.function_start(&m, addr).unwrap_or(addr);
                Arc::from(format!("[{file}+{:#x}]", at - m.region.start + m.offset).as_str())
            }
        }
    }

    /// The runtime start of the function that holds `addr` in mapping `m`, from its file's
    /// `.eh_frame`.
    fn function_start(&mut self, m: &FileMapping, addr: u64) -> Option<u64> {
        let pid = self.pid;
        let entry = self.functions.entry(m.region.start).or_insert_with(|| {
            let read = || -> Option<(u64, Vec<(u64, u64)>)> {
                let data = std::fs::read(m.file_from_outside(pid)).ok()?;
                let file = object::File::parse(&*data).ok()?;
                let bias = beam_probes::elf::load_bias(&file, m.region.start, m.offset)?;
                Some((bias, beam_probes::elf::eh_frame_functions(&file)))
            };
            Arc::new(read().unwrap_or_default())
        });
        let (bias, ranges) = &**entry;
        let stated = addr.wrapping_sub(*bias);
        let i = ranges.partition_point(|(start, _)| *start <= stated).checked_sub(1)?;
        let (start, len) = ranges[i];
        (stated < start + len).then(|| start.wrapping_add(*bias))
    }
}

/// A demangled C++ name without its parameter list (`beam_jit_call_bif(process*, ...)` reads
/// `beam_jit_call_bif`), as profilers show them; C names are unchanged.
fn without_parameters(name: &str) -> &str {
    match name.find('(') {
        Some(i) if name.ends_with(')') && i > 0 => &name[..i],
        _ => name,
    }
}
