//! One symbolizer for every address scope-probe shows: JIT code through the VM's own symbol
//! sources (perf map, else the GDB JIT interface; `beam_probes::jit`), native code (beam.smp,
//! libraries) through blazesym. JIT symbols are refreshed when code appears that they do not
//! cover yet (modules loaded while we run).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use beam_probes::BeamTarget;
use beam_probes::code_names::display_name;
use beam_probes::jit::{JitSource, JitSymbolReader, JitSymbols};
use beam_probes::maps::{CodeRegion, executable_files, jit_code_regions};
use blazesym::symbolize::source::{Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};

const NATIVE_CACHE: usize = 200_000;
const REFRESH_EVERY: Duration = Duration::from_secs(1);

pub struct Symbolizer {
    pid: u32,
    jit: JitSymbols,
    reader: JitSymbolReader,
    regions: Vec<CodeRegion>,
    native: Blaze,
    native_cache: HashMap<u64, Arc<str>>,
    last_refresh: Instant,
    frame_pointers: bool,
    /// File-backed executable mappings and their file names, for naming code without symbols.
    modules: Vec<(CodeRegion, String)>,
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
            last_refresh: Instant::now(),
            frame_pointers: target.jit_frame_pointers().unwrap_or_else(|| target.has_perf_map()),
            modules: executable_files(target.pid),
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

    /// Whether the VM runs with JIT frame pointers (started with `+JPperf`), which is what
    /// makes multi-frame Erlang stacks possible.
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
        self.modules = executable_files(self.pid);
    }

    /// The display name of the code at `addr`.
    pub fn name(&mut self, addr: u64) -> Arc<str> {
        if self.in_jit(addr) {
            if self.jit.lookup(addr).is_none() {
                self.refresh();
            }
            return match self.jit.lookup(addr) {
                // A sample in a function's entry code is a sample of the function.
                Some(sym) => Arc::from(display_name(sym.function()).as_ref()),
                None => {
                    self.jit_misses += 1;
                    Arc::from("[JIT code]")
                }
            };
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

    fn native_name(&self, addr: u64) -> Arc<str> {
        let i = self.debug_functions.partition_point(|(start, _, _)| *start <= addr);
        if let Some((start, size, name)) = i.checked_sub(1).map(|i| &self.debug_functions[i])
            && addr < start + size
        {
            return name.clone();
        }
        let mut process = Process::new(self.pid.into());
        // OTP's perf map has 0x-prefixed addresses blazesym rejects; JIT code is ours anyway.
        process.perf_map = false;
        let src = Source::Process(process);
        match self.native.symbolize(&src, Input::AbsAddr(&[addr])).ok().and_then(|mut v| v.pop()) {
            Some(Symbolized::Sym(sym)) => Arc::from(sym.name.as_ref()),
            // A stripped binary's static functions have no symbol: name the file at least.
            _ => match self.modules.iter().find(|(r, _)| addr >= r.start && addr < r.end) {
                Some((_, file)) => Arc::from(format!("[{file}]").as_str()),
                None => Arc::from("[unknown]"),
            },
        }
    }
}
