//! From an OS pid to a verified BEAM: which beam.smp runs it (seen through `/proc/PID/root`
//! so targets in chroots and containers work), where it is loaded, which OTP release and
//! ERTS version it is, and which build table describes it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::builds::{self, BuildTable, ERTS_VERSION_SYMBOL, OTP_RELEASE_SYMBOL};
use crate::elf::ElfInfo;
use crate::error::{Error, Result};
use crate::hooks::ResolvedHook;
use crate::jit::gdb_interface::GdbJitReader;
use crate::jit::perf_map::{PerfMapReader, perf_map_path};
use crate::jit::{JitSource, JitSymbolReader, JitSymbols};
use crate::memory::RemoteMemory;
use crate::proctab::ProcessTable;
use crate::terms::{Pid, PidDecoder};

/// Where the struct offsets in use come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSource {
    /// The hand-written build table.
    Table,
    /// The binary's own DWARF (gimli), over the table's values.
    Dwarf,
}

impl OffsetSource {
    pub fn label(self) -> &'static str {
        match self {
            OffsetSource::Table => "table",
            OffsetSource::Dwarf => "dwarf",
        }
    }
}

/// A live BEAM VM that scope-probe can observe.
#[derive(Debug)]
pub struct BeamTarget {
    pub pid: u32,
    /// The executable as the target sees it (inside its own root).
    pub exe: PathBuf,
    /// The same file as scope-probe opens it (through `/proc/PID/root`).
    pub host_path: PathBuf,
    pub elf: ElfInfo,
    /// Runtime address minus link-time address of the executable.
    pub load_bias: u64,
    pub otp_release: String,
    pub erts_version: String,
    pub table: &'static BuildTable,
    /// Whether `table`'s struct offsets come from the table or from the binary's DWARF.
    pub offsets: OffsetSource,
    /// The separate debug file the DWARF came from, if it was not in the binary.
    pub debug_file: Option<PathBuf>,
    pub mem: RemoteMemory,
    /// Read from the process table on first use: the masks are fixed at the VM's boot.
    pid_decoder: OnceLock<Option<PidDecoder>>,
}

fn proc_path(pid: u32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

fn read_comm(pid: u32) -> String {
    std::fs::read_to_string(proc_path(pid, "comm")).map(|s| s.trim().to_owned()).unwrap_or_default()
}

impl BeamTarget {
    pub fn open(pid: u32) -> Result<Self> {
        if pid == 0 || !proc_path(pid, "").exists() {
            return Err(Error::NoSuchProcess(pid));
        }
        let comm = read_comm(pid);
        let not_beam = |reason: String| Error::NotBeam { pid, comm: comm.clone(), reason };
        let exe = match std::fs::read_link(proc_path(pid, "exe")) {
            Ok(p) => p,
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(Error::PermissionDenied { pid, what: "exe" });
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if !proc_path(pid, "").exists() {
                    return Err(Error::NoSuchProcess(pid));
                }
                return Err(not_beam("it has no executable (a kernel thread?)".into()));
            }
            Err(e) => return Err(Error::io(format!("reading /proc/{pid}/exe"), e)),
        };
        // A binary replaced on disk (package upgrade) shows as "path (deleted)".
        let exe = PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"));
        let file_name = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !file_name.starts_with("beam") {
            return Err(not_beam(format!("its executable is {}, not beam.smp", exe.display())));
        }
        let host_path = Self::host_path(pid, &exe);
        let elf = ElfInfo::open(&host_path)?;
        let (Some(rel_sym), Some(ver_sym)) = (elf.symbol(OTP_RELEASE_SYMBOL), elf.symbol(ERTS_VERSION_SYMBOL))
        else {
            // Without the version symbols the install layout still names ERTS (erts-X/bin).
            let erts_from_path = exe
                .ancestors()
                .filter_map(|a| a.file_name()?.to_str()?.strip_prefix("erts-").map(str::to_owned))
                .next();
            return Err(Error::UnsupportedBuild {
                otp_release: "?".into(),
                erts_version: erts_from_path.unwrap_or_else(|| "?".into()),
                build_id: elf.build_id.clone().unwrap_or_else(|| "none".into()),
                path: exe,
                missing: format!(
                    "symbols {OTP_RELEASE_SYMBOL} and {ERTS_VERSION_SYMBOL} are not exported \
                     ({} symbols found; a stripped build needs its debug info)",
                    elf.symbol_count()
                ),
            });
        };
        let load_bias = Self::load_bias(pid, &exe, &elf)?;
        let mem = RemoteMemory::new(pid);
        let read_str = |addr: u64, what| match mem.read_cstr(addr + load_bias, 32, what) {
            Err(Error::Memory { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
                Err(Error::PermissionDenied { pid, what: "mem" })
            }
            other => other,
        };
        let otp_release = read_str(rel_sym.address, "OTP release")?;
        let erts_version = read_str(ver_sym.address, "ERTS version")?;
        let table = builds::select(&otp_release, &erts_version).ok_or_else(|| Error::UnsupportedBuild {
            otp_release: otp_release.clone(),
            erts_version: erts_version.clone(),
            build_id: elf.build_id.clone().unwrap_or_else(|| "none".into()),
            path: exe.clone(),
            missing: format!(
                "no offsets table for this release (known builds: {}); `cargo xtask offsets <beam.smp with DWARF> \
                 [--debug-file F]` derives one for beam_probes/src/builds/ (`cargo xtask otp-debug --suite S` \
                 builds such a beam.smp from a Debian suite's source)",
                builds::known_builds()
            ),
        })?;
        let (table, offsets, debug_file) = Self::offsets_from_dwarf(pid, &exe, &host_path, &elf, table);
        if offsets == OffsetSource::Table && elf.has_usdt_notes != table.dynamic_trace {
            return Err(Error::UnsupportedBuild {
                otp_release,
                erts_version,
                build_id: elf.build_id.clone().unwrap_or_else(|| "none".into()),
                path: exe,
                missing: format!(
                    "this beam.smp was built {} dynamic trace (systemtap), which changes the layout of \
                     struct process, and the table for this release describes builds {} it; \
                     with its debug info (DWARF) scope-probe reads the layout from there",
                    if elf.has_usdt_notes { "with" } else { "without" },
                    if table.dynamic_trace { "with" } else { "without" },
                ),
            });
        }
        Ok(BeamTarget {
            pid,
            exe,
            host_path,
            elf,
            load_bias,
            otp_release,
            erts_version,
            table,
            offsets,
            debug_file,
            mem,
            pid_decoder: OnceLock::new(),
        })
    }

    /// When the binary carries DWARF, or a separate debug file for it is installed (build-id or
    /// `.gnu_debuglink`, as gdb finds them, inside the target's root), its struct layouts are
    /// the truth for this binary: they replace the table's offsets (hooks and term layouts stay
    /// the table's). Without usable DWARF the table stays.
    fn offsets_from_dwarf(
        pid: u32,
        exe: &Path,
        host_path: &Path,
        elf: &ElfInfo,
        table: &'static BuildTable,
    ) -> (&'static BuildTable, OffsetSource, Option<PathBuf>) {
        let (info, debug_file) = if crate::dwarf::has_debug_info(host_path) {
            (crate::dwarf::DebugInfo::open(host_path).ok(), None)
        } else {
            let root = proc_path(pid, "root");
            match crate::debugfile::find(&root, exe, elf.build_id.as_deref(), elf.debuglink.as_deref()) {
                // open_split refuses a debug file whose build-id differs from the binary's.
                Some(f) => (crate::dwarf::DebugInfo::open_split(host_path, &f).ok(), Some(f)),
                None => (None, None),
            }
        };
        let Some(d) = info.and_then(|i| crate::dwarf::derive_from(&i).ok()) else {
            return (table, OffsetSource::Table, None);
        };
        let mut t = table.clone();
        t.process = d.process;
        t.reg_proc = d.reg_proc;
        t.ptab = d.ptab;
        t.atom.table_entries = d.atom.table_entries;
        t.atom.table_seg_table = d.atom.table_seg_table;
        t.atom.atom_len = d.atom.atom_len;
        t.atom.atom_name = d.atom.atom_name;
        // One table per attach, for the life of the process.
        (Box::leak(Box::new(t)), OffsetSource::Dwarf, debug_file)
    }

    /// The executable as seen from here: through the target's root when that path exists,
    /// else the `/proc/PID/exe` link itself (which always names the running inode).
    fn host_path(pid: u32, exe: &Path) -> PathBuf {
        let via_root = proc_path(pid, "root").join(exe.strip_prefix("/").unwrap_or(exe));
        if via_root.exists() { via_root } else { proc_path(pid, "exe") }
    }

    /// Where the kernel mapped the executable: start of its offset-0 mapping minus the
    /// link-time address of the segment at file offset 0.
    fn load_bias(pid: u32, exe: &Path, elf: &ElfInfo) -> Result<u64> {
        let maps = std::fs::read_to_string(proc_path(pid, "maps")).map_err(|e| match e.kind() {
            ErrorKind::PermissionDenied => Error::PermissionDenied { pid, what: "maps" },
            _ => Error::io(format!("reading /proc/{pid}/maps"), e),
        })?;
        let exe_str = exe.to_string_lossy();
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let (Some(range), Some(_perms), Some(offset)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            let path = fields.nth(2).unwrap_or("");
            if path != exe_str || u64::from_str_radix(offset, 16) != Ok(0) {
                continue;
            }
            let start = range.split('-').next().and_then(|s| u64::from_str_radix(s, 16).ok());
            if let Some(start) = start {
                return Ok(start.wrapping_sub(elf.first_segment_vaddr() & !0xfff));
            }
        }
        Err(Error::Corrupt(format!("{} is not mapped in pid {pid}", exe.display())))
    }

    /// Runtime address of a symbol of the executable.
    pub fn symbol_address(&self, name: &str) -> Option<u64> {
        self.elf.symbol(name).map(|s| s.address.wrapping_add(self.load_bias))
    }

    /// Resolves every hook of the build table; refuses with the list of what is missing.
    pub fn resolve_hooks(&self) -> Result<Vec<ResolvedHook>> {
        let mut hooks = Vec::new();
        let mut missing = Vec::new();
        for spec in self.table.hooks {
            match self.elf.symbol(spec.symbol).and_then(|s| self.elf.file_offset(s.address)) {
                Some(file_offset) => hooks.push(ResolvedHook {
                    point: spec.point,
                    symbol: spec.symbol.to_owned(),
                    file_offset,
                }),
                None => missing.push(spec.symbol),
            }
        }
        for global in [self.table.globals.process_table, self.table.globals.atom_table] {
            if self.elf.symbol(global).is_none() {
                missing.push(global);
            }
        }
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            return Err(self.unsupported(format!("symbols not found: {}", missing.join(", "))));
        }
        Ok(hooks)
    }

    fn unsupported(&self, missing: String) -> Error {
        Error::UnsupportedBuild {
            otp_release: self.otp_release.clone(),
            erts_version: self.erts_version.clone(),
            build_id: self.elf.build_id.clone().unwrap_or_else(|| "none".into()),
            path: self.exe.clone(),
            missing,
        }
    }

    /// Runtime address of the process table (checked by `resolve_hooks`).
    pub fn process_table_address(&self) -> u64 {
        self.symbol_address(self.table.globals.process_table).unwrap_or(0)
    }

    pub fn process_table(&self) -> ProcessTable<'static> {
        let atoms = self.symbol_address(self.table.globals.atom_table).unwrap_or(0);
        ProcessTable::new(self.mem, self.table, self.process_table_address(), atoms)
    }

    /// Decodes a pid term of this VM. `None` when it is not a pid, or when the process
    /// table's index masks (needed by OTP 26+ pid terms) could not be read.
    pub fn decode_pid(&self, term: u64) -> Option<Pid> {
        self.pid_decoder.get_or_init(|| self.process_table().pid_decoder().ok()).as_ref()?.decode(term)
    }

    /// `<0.N.S>` for a pid term, or the raw term in hex when it is not a pid.
    pub fn format_pid(&self, term: u64) -> String {
        self.decode_pid(term).map(|p| p.to_string()).unwrap_or_else(|| format!("{term:#x}"))
    }

    /// Whether JIT code keeps frame pointers (the VM was started with `+JPperf true` or `fp`),
    /// which is what lets a frame-pointer unwinder walk Erlang stacks. `None` when unknown.
    pub fn jit_frame_pointers(&self) -> Option<bool> {
        let addr = self.symbol_address(self.table.globals.frame_layout)?;
        self.mem.read_u32(addr, "JIT frame layout").ok().map(|v| v == 1)
    }

    /// Whether the target is still running.
    pub fn is_alive(&self) -> bool {
        proc_path(self.pid, "").exists()
    }

    /// The pid the VM knows itself by: its `getpid()` inside its own pid namespace (the last
    /// `NSpid` of /proc/PID/status), which is what it names its perf map after.
    pub fn pid_in_namespace(&self) -> u32 {
        std::fs::read_to_string(proc_path(self.pid, "status"))
            .ok()
            .and_then(|status| innermost_nspid(&status))
            .unwrap_or(self.pid)
    }

    /// Where the VM's perf map would be, seen from here (through its root directory).
    pub fn perf_map_path(&self) -> PathBuf {
        perf_map_path(&proc_path(self.pid, "root"), self.pid_in_namespace())
    }

    /// Whether this VM writes a perf map (it was started with `+JPperf true|map`, which on
    /// OTP 25 also gives JIT code frame pointers). A file of that name left by an earlier VM
    /// with the same pid does not count: the VM must hold it open.
    pub fn has_perf_map(&self) -> bool {
        let path = self.perf_map_path();
        path.exists() && self.holds_open(&path).unwrap_or(true)
    }

    /// Whether one of the target's file descriptors is `path` (same device and inode), or
    /// `None` if its descriptors cannot be listed.
    fn holds_open(&self, path: &Path) -> Option<bool> {
        use std::os::unix::fs::MetadataExt;
        let wanted = std::fs::metadata(path).ok()?;
        let file_name = path.file_name()?.to_string_lossy().into_owned();
        let fds = std::fs::read_dir(proc_path(self.pid, "fd")).ok()?;
        let held = fds.filter_map(|fd| fd.ok()).any(|fd| {
            // The link text is cheap to filter on; the inode decides.
            let named_so = std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().ends_with(&file_name));
            named_so
                && std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == wanted.dev() && m.ino() == wanted.ino())
        });
        Some(held)
    }

    /// A reader of the VM's JIT symbols: its perf map when it has one, else the GDB JIT
    /// interface.
    pub fn jit_symbol_reader(&self) -> Result<JitSymbolReader> {
        let source = if self.has_perf_map() { JitSource::PerfMap } else { JitSource::GdbInterface };
        self.jit_symbol_reader_for(source)
    }

    /// A reader of one given source.
    pub fn jit_symbol_reader_for(&self, source: JitSource) -> Result<JitSymbolReader> {
        match source {
            JitSource::PerfMap => Ok(JitSymbolReader::from_perf_map(PerfMapReader::new(self.perf_map_path()))),
            JitSource::GdbInterface => {
                let symbol = self.table.globals.jit_debug_descriptor;
                let descriptor = self
                    .symbol_address(symbol)
                    .ok_or_else(|| self.unsupported(format!("symbol {symbol} not found: no JIT symbols")))?;
                let reader = GdbJitReader::new(self.mem, descriptor, &self.table.jit_records);
                Ok(JitSymbolReader::from_gdb_interface(reader))
            }
        }
    }

    /// Every JIT symbol the VM registered so far, and where they came from: the perf map when
    /// the VM writes one (falling back if it cannot be read), else the GDB JIT interface. To
    /// follow code loaded later, keep a [`JitSymbolReader`] and refresh it instead.
    pub fn jit_symbols(&self) -> Result<(JitSymbols, JitSource)> {
        let mut reader = self.jit_symbol_reader()?;
        let mut symbols = JitSymbols::new();
        match reader.refresh(&mut symbols) {
            Ok(_) => Ok((symbols, reader.source())),
            Err(_) if reader.source() == JitSource::PerfMap => {
                let mut reader = self.jit_symbol_reader_for(JitSource::GdbInterface)?;
                let mut symbols = JitSymbols::new();
                reader.refresh(&mut symbols)?;
                Ok((symbols, JitSource::GdbInterface))
            }
            Err(e) => Err(e),
        }
    }
}

/// The last pid of the `NSpid:` line of /proc/PID/status (the innermost namespace's).
fn innermost_nspid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::innermost_nspid;

    #[test]
    fn nspid_is_the_innermost_pid() {
        assert_eq!(innermost_nspid("Name:\tbeam.smp\nNSpid:\t20975\nNSsid:\t1\n"), Some(20975));
        assert_eq!(innermost_nspid("NSpid:\t4242\t17\n"), Some(17));
        assert_eq!(innermost_nspid("Name:\tbeam.smp\n"), None);
    }
}
