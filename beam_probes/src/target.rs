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

/// How a build table was chosen for a binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableMatch {
    BuildId,
    Release,
}

impl TableMatch {
    pub fn label(self) -> &'static str {
        match self {
            TableMatch::BuildId => "build-id",
            TableMatch::Release => "release",
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
    /// How `table` was chosen: by the binary's build-id (a packaged binary the table was
    /// checked against) or by its release and ERTS version.
    pub table_matched_by: TableMatch,
    /// Whether `table`'s struct offsets come from the table or from the binary's DWARF.
    pub offsets: OffsetSource,
    /// The separate debug file the DWARF and full symbol table came from, if not the binary.
    pub debug_file: Option<PathBuf>,
    /// Where the debug info came from; `None`: the binary is stripped and none was found.
    pub debug_origin: Option<DebugOrigin>,
    /// Why each place searched for debug info gave nothing (for error messages).
    pub debug_tried: Vec<String>,
    pub mem: RemoteMemory,
    /// When the process started (`starttime` in /proc/PID/stat): a process later found under
    /// the same pid with another start time is not this VM.
    start_time: Option<u64>,
    /// Read from the process table on first use: the masks are fixed at the VM's boot.
    pid_decoder: OnceLock<Option<PidDecoder>>,
    /// The atom text space counted so far (atoms are never removed: each read counts the new
    /// ones only).
    pub(crate) atom_tally: std::sync::Mutex<crate::vm_memory::AtomTally>,
}

/// The state letter and start time of a process, from /proc/PID/stat (the fields after the
/// command name, which may itself contain spaces and parentheses).
fn process_state(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(proc_path(pid, "stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.first()?.chars().next()?, fields.get(19)?.parse().ok()?))
}

fn proc_path(pid: u32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

/// `path` (as /proc/PID/exe and /proc/PID/maps show it to us) as the target sees it inside its
/// own root: a chrooted VM's executable reads `/srv/root/usr/lib/...` from here but is
/// `/usr/lib/...` in there, where its debug link and install layout are relative to.
fn path_in_root(pid: u32, path: &Path) -> PathBuf {
    match std::fs::read_link(proc_path(pid, "root")) {
        Ok(root) if root != Path::new("/") => match path.strip_prefix(&root) {
            Ok(rest) => Path::new("/").join(rest),
            Err(_) => path.to_owned(),
        },
        _ => path.to_owned(),
    }
}

/// Whether an executable's file name is the emulator's (beam.smp, beam.debug.smp, ...).
fn is_emulator(file_name: &str) -> bool {
    file_name.starts_with("beam")
}

/// The OS pids of every running BEAM the caller can see, in order: processes whose executable
/// is the emulator, in containers too (their host pids). Kernel threads and processes whose
/// executable cannot be read are skipped.
pub fn running_vms() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(proc_path(*pid, "exe"))
                .ok()
                .and_then(|exe| exe.file_name().map(|n| is_emulator(&n.to_string_lossy())))
                .unwrap_or(false)
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn read_comm(pid: u32) -> String {
    std::fs::read_to_string(proc_path(pid, "comm")).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// How to find a target's debug info (DWARF and the full symbol table), beyond what is in or
/// installed next to the binary.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// A separate debug file named by the user (`--debug-file`): tried first, and it must be
    /// this binary's (same build-id).
    pub debug_file: Option<PathBuf>,
    /// Do not ask debuginfod servers even when `DEBUGINFOD_URLS` is set.
    pub no_debuginfod: bool,
    /// Hears about slow work (a debuginfod download), for a progress line.
    pub progress: Option<fn(&str)>,
}

/// Where the DWARF and the symbols beyond `.dynsym` come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebugOrigin {
    /// The binary itself was not stripped.
    Embedded,
    /// `--debug-file`.
    Given,
    /// Installed where gdb looks (build-id directory, `.gnu_debuglink`), inside the VM's root.
    Installed,
    /// Fetched from this debuginfod server (or found in its client cache).
    Debuginfod(String),
}

impl DebugOrigin {
    pub fn label(&self) -> String {
        match self {
            DebugOrigin::Embedded => "in the binary".into(),
            DebugOrigin::Given => "--debug-file".into(),
            DebugOrigin::Installed => "installed debug file".into(),
            DebugOrigin::Debuginfod(url) => format!("debuginfod {url}"),
        }
    }
}

/// The debug info found for a binary, and what was tried when none was.
struct DebugLookup {
    /// Where the debug info is, and the separate file it is in (parsed) unless embedded.
    found: Option<(DebugOrigin, Option<(PathBuf, ElfInfo)>)>,
    /// Why each place that was tried gave nothing (for the error message).
    tried: Vec<String>,
}

impl BeamTarget {
    pub fn open(pid: u32) -> Result<Self> {
        Self::open_with(pid, &OpenOptions::default())
    }

    pub fn open_with(pid: u32, options: &OpenOptions) -> Result<Self> {
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
        if !is_emulator(&file_name) {
            return Err(not_beam(format!("its executable is {}, not beam.smp", exe.display())));
        }
        let host_path = Self::host_path(pid, &exe);
        let mut elf = ElfInfo::open(&host_path)?;
        let exported = elf.symbol_count();
        let lookup = Self::find_debug_info(pid, &exe, &host_path, &elf, options)?;
        let (debug_origin, debug_file) = match lookup.found {
            Some((origin, Some((file, debug_elf)))) => {
                elf.add_symbols_from(&debug_elf);
                (Some(origin), Some(file))
            }
            Some((origin, None)) => (Some(origin), None),
            None => (None, None),
        };
        let build_id = elf.build_id.clone().unwrap_or_else(|| "none".into());
        let load_bias = Self::load_bias(pid, &exe, &elf)?;
        let mem = RemoteMemory::new(pid);
        let (otp_release, erts_version) = match (elf.symbol(OTP_RELEASE_SYMBOL), elf.symbol(ERTS_VERSION_SYMBOL)) {
            (Some(rel_sym), Some(ver_sym)) => {
                let read_str = |addr: u64, what| match mem.read_cstr(addr + load_bias, 32, what) {
                    Err(Error::Memory { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
                        Err(Error::PermissionDenied { pid, what: "mem" })
                    }
                    other => other,
                };
                (read_str(rel_sym.address, "OTP release")?, read_str(ver_sym.address, "ERTS version")?)
            }
            // A stripped build without its debug info: the install layout still names both
            // (erts-X/bin/beam.smp, releases/start_erl.data), else a known build-id does.
            _ => match release_from_install(&proc_path(pid, "root"), &path_in_root(pid, &exe)).or_else(|| {
                builds::by_build_id(&build_id).map(|t| (t.otp_release.to_owned(), t.erts_versions[0].to_owned()))
            }) {
                Some(versions) => versions,
                None => {
                    return Err(Error::UnsupportedBuild {
                        otp_release: "?".into(),
                        erts_version: erts_from_path(&exe).unwrap_or_else(|| "?".into()),
                        build_id,
                        path: exe,
                        missing: format!(
                            "symbols {OTP_RELEASE_SYMBOL} and {ERTS_VERSION_SYMBOL} are not exported \
                             ({exported} symbols found) and the install layout does not name the release; {}",
                            debug_info_hint(elf.build_id.as_deref(), &lookup.tried)
                        ),
                    });
                }
            },
        };
        // A packaged binary the table was checked against is known by its build-id first. Its
        // release strings must then be the table's: a build-id listed in the wrong table would
        // otherwise pass unnoticed.
        let by_id = builds::by_build_id(&build_id);
        if let Some(t) = by_id
            && (t.otp_release != otp_release || !t.erts_versions.contains(&erts_version.as_str()))
        {
            return Err(Error::UnsupportedBuild {
                otp_release,
                erts_version,
                build_id,
                path: exe,
                missing: format!(
                    "its build-id is listed in the table {} (OTP {}, ERTS {}), which is not this release: \
                     the table's build_ids are wrong",
                    t.id,
                    t.otp_release,
                    t.erts_versions.join(", ")
                ),
            });
        }
        let table_matched_by = if by_id.is_some() { TableMatch::BuildId } else { TableMatch::Release };
        let known = by_id.or_else(|| builds::select(&otp_release, &erts_version));
        let table = known.ok_or_else(|| Error::UnsupportedBuild {
            otp_release: otp_release.clone(),
            erts_version: erts_version.clone(),
            build_id: build_id.clone(),
            path: exe.clone(),
            missing: format!(
                "no offsets table for this release (known builds: {}); `cargo xtask offsets <beam.smp with DWARF> \
                 [--debug-file F]` derives one for beam_probes/src/builds/ (`cargo xtask otp-debug --suite S` \
                 builds such a beam.smp from a Debian suite's source)",
                builds::known_builds()
            ),
        })?;
        let dwarf_in = match (&debug_file, elf.has_dwarf) {
            (Some(file), _) => Some(file.as_path()),
            (None, true) => Some(host_path.as_path()),
            (None, false) => None,
        };
        let (table, offsets) = Self::offsets_from_dwarf(dwarf_in, &build_id, table);
        if offsets == OffsetSource::Table && elf.has_usdt_notes != table.dynamic_trace {
            return Err(Error::UnsupportedBuild {
                otp_release,
                erts_version,
                build_id,
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
            table_matched_by,
            offsets,
            debug_file,
            debug_origin,
            debug_tried: lookup.tried,
            mem,
            pid_decoder: OnceLock::new(),
            atom_tally: Default::default(),
            start_time: process_state(pid).map(|(_, t)| t),
        })
    }

    /// Debug info the way gdb and perf find it, first hit wins: `--debug-file`; DWARF in the
    /// binary; a debug file installed for it (build-id directory or `.gnu_debuglink`, inside
    /// the VM's root); a debuginfod server (`DEBUGINFOD_URLS`). A file whose build-id is not
    /// the binary's is skipped (and refused when the user named it).
    fn find_debug_info(
        pid: u32,
        exe: &Path,
        host_path: &Path,
        elf: &ElfInfo,
        options: &OpenOptions,
    ) -> Result<DebugLookup> {
        let mut tried = Vec::new();
        if let Some(file) = &options.debug_file {
            if !file.is_file() {
                return Err(Error::io(format!("--debug-file {}", file.display()), std::io::ErrorKind::NotFound.into()));
            }
            let debug = debug_file_for(elf, file)?;
            return Ok(DebugLookup { found: Some((DebugOrigin::Given, Some((file.clone(), debug)))), tried });
        }
        if elf.has_dwarf {
            return Ok(DebugLookup { found: Some((DebugOrigin::Embedded, None)), tried });
        }
        let root = proc_path(pid, "root");
        let exe = path_in_root(pid, exe);
        let installed = crate::debugfile::candidates(&root, &exe, elf.build_id.as_deref(), elf.debuglink.as_deref());
        for file in installed.iter().filter(|f| f.is_file() && **f != host_path) {
            match debug_file_for(elf, file) {
                Ok(debug) => {
                    return Ok(DebugLookup { found: Some((DebugOrigin::Installed, Some((file.clone(), debug)))), tried });
                }
                Err(e) => tried.push(e.to_string()),
            }
        }
        if let Some(first) = installed.first() {
            tried.push(format!("no debug file at {}", first.strip_prefix(&root).map(|p| Path::new("/").join(p)).unwrap_or(first.clone()).display()));
        }
        match (crate::debuginfod::Config::from_env(), &elf.build_id) {
            _ if options.no_debuginfod => tried.push("debuginfod not asked (--no-debuginfod)".into()),
            (None, _) => tried.push("DEBUGINFOD_URLS is not set".into()),
            (Some(_), None) => tried.push("the binary has no build-id to ask debuginfod for".into()),
            (Some(config), Some(id)) => {
                let progress = options.progress.unwrap_or(|_| {});
                // A cached file is checked like a downloaded one: the cache is shared with gdb.
                match crate::debuginfod::fetch(&config, id, &progress)
                    .and_then(|file| debug_file_for(elf, &file).map(|debug| (file, debug)).map_err(|e| e.to_string()))
                {
                    Ok(found) => {
                        let url = config.urls.join(" ");
                        return Ok(DebugLookup { found: Some((DebugOrigin::Debuginfod(url), Some(found))), tried });
                    }
                    Err(e) => tried.push(format!("debuginfod: {e}")),
                }
            }
        }
        Ok(DebugLookup { found: None, tried })
    }

    /// When DWARF was found (in the binary or a debug file), its struct layouts are the truth
    /// for this binary: they replace the table's offsets (hooks and term layouts stay the
    /// table's). Without usable DWARF the table stays.
    fn offsets_from_dwarf(dwarf_in: Option<&Path>, build_id: &str, table: &'static BuildTable) -> (&'static BuildTable, OffsetSource) {
        // One derived table per binary for the life of the process: attaching to many VMs of
        // one build (or to one VM again and again) reads its DWARF once and keeps one table.
        type Derived = std::collections::HashMap<(String, String), &'static BuildTable>;
        static DERIVED: std::sync::Mutex<Option<Derived>> = std::sync::Mutex::new(None);
        let Some(file) = dwarf_in else { return (table, OffsetSource::Table) };
        // A binary without a build-id is known by its debug file's path.
        let key = (if build_id == "none" { file.display().to_string() } else { build_id.to_owned() }, table.id.to_owned());
        let mut derived = DERIVED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = derived.get_or_insert_with(Default::default).get(&key) {
            return (t, OffsetSource::Dwarf);
        }
        // A separate file's build-id was checked when it was found.
        let info = crate::dwarf::DebugInfo::open(file).ok();
        let Some(d) = info.and_then(|i| crate::dwarf::derive_from(&i).ok()) else {
            return (table, OffsetSource::Table);
        };
        let t: &'static BuildTable = Box::leak(Box::new(d.apply(table)));
        derived.get_or_insert_with(Default::default).insert(key, t);
        (t, OffsetSource::Dwarf)
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

    /// The VM's node name as it holds it (`node()`: `a@host`, or `nonode@nohost` when not
    /// distributed), read from its memory: right for releases that name the node in a
    /// `vm.args` file and for nodes that start distribution at run time. It changes when the
    /// VM starts or stops distribution.
    pub fn node_name(&self) -> Result<String> {
        self.require_symbols("reading the node name", &[self.table.globals.this_node, self.table.globals.atom_table])?;
        let this_node = self.symbol_address(self.table.globals.this_node).unwrap_or(0);
        let node = self.mem.read_u64(this_node, "erts_this_node")?;
        let sysname = self.mem.read_u64(node + self.table.node.sysname, "the node's name")?;
        self.process_table().atom_text(sysname)
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
                    file_offset: file_offset + self.probe_skip(file_offset),
                }),
                None => missing.push(spec.symbol),
            }
        }
        let globals = [self.table.globals.process_table, self.table.globals.atom_table];
        missing.extend(globals.into_iter().filter(|g| self.elf.symbol(g).is_none()));
        if !missing.is_empty() {
            return Err(self.missing_symbols("monitoring", missing));
        }
        Ok(hooks)
    }

    /// Bytes to step over at a function's entry before placing a uprobe there. Builds with
    /// `-fcf-protection` (Debian's OTP 27 and 29) start every function with `endbr64`, which
    /// the kernel cannot emulate: a uprobe on it single-steps out of line, measured at ~5 µs
    /// a hit instead of well under 1 µs on OTP 25's `push %r15`. Right after it the arguments
    /// are still in their registers and the return address on top of the stack, so entry and
    /// return probes see exactly what they would at the entry.
    fn probe_skip(&self, file_offset: u64) -> u64 {
        const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
        use std::io::{Read, Seek, SeekFrom};
        let mut head = [0u8; 4];
        let read = std::fs::File::open(&self.host_path)
            .and_then(|mut f| f.seek(SeekFrom::Start(file_offset)).and_then(|_| f.read_exact(&mut head)));
        if read.is_ok() && head == ENDBR64 { 4 } else { 0 }
    }

    /// Checks that the symbols a capability reads (`what`: "monitoring", "the process table",
    /// ...) are known, or says what is missing and how to get it.
    pub fn require_symbols(&self, what: &str, symbols: &[&'static str]) -> Result<()> {
        let missing: Vec<&str> = symbols.iter().copied().filter(|s| self.elf.symbol(s).is_none()).collect();
        if missing.is_empty() { Ok(()) } else { Err(self.missing_symbols(what, missing)) }
    }

    /// The process and atom tables, which snapshots and names read.
    pub fn require_process_table(&self) -> Result<()> {
        self.require_symbols("reading the process table", &[self.table.globals.process_table, self.table.globals.atom_table])
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

    fn missing_symbols(&self, what: &str, mut missing: Vec<&str>) -> Error {
        missing.sort_unstable();
        missing.dedup();
        let missing = missing.join(", ");
        match self.debug_origin {
            // Stripped and no debug info found: that is what to fix.
            None => Error::MissingDebugInfo(Box::new(crate::error::MissingDebugInfo {
                otp_release: self.otp_release.clone(),
                erts_version: self.erts_version.clone(),
                build_id: self.elf.build_id.clone().unwrap_or_else(|| "none".into()),
                path: self.exe.clone(),
                what: what.to_owned(),
                missing,
                hint: debug_info_hint(self.elf.build_id.as_deref(), &self.debug_tried),
            })),
            // The debug info is there and still lacks them: the table does not fit this build.
            Some(_) => self.unsupported(format!("symbols not found: {missing}")),
        }
    }

    /// Runtime address of the process table (checked by `resolve_hooks`).
    pub fn process_table_address(&self) -> u64 {
        self.symbol_address(self.table.globals.process_table).unwrap_or(0)
    }

    /// Runtime address of the port table, when the binary (or its debug info) names it.
    pub fn port_table_address(&self) -> Option<u64> {
        self.symbol_address(self.table.globals.port_table)
    }

    /// The port table, which `ports` reads.
    pub fn require_port_table(&self) -> Result<()> {
        self.require_symbols("reading the port table", &[self.table.globals.port_table, self.table.globals.process_table])
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
    /// Whether the VM still runs: its pid exists, is not a zombie (a VM that exited but that
    /// its parent has not reaped yet) and is the same process (not a new one under a reused
    /// pid).
    pub fn is_alive(&self) -> bool {
        match process_state(self.pid) {
            Some((state, started)) => !matches!(state, 'Z' | 'X') && self.start_time.is_none_or(|t| t == started),
            None => false,
        }
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
                let descriptor = match self.symbol_address(symbol) {
                    Some(addr) => addr,
                    // Stripped, no debug info: find it by its layout, or say what is missing.
                    None => self
                        .find_jit_descriptor()
                        .ok_or_else(|| self.missing_symbols("naming JIT code without a perf map", vec![symbol]))?,
                };
                let reader = GdbJitReader::new(self.mem, descriptor, &self.table.jit_records);
                Ok(JitSymbolReader::from_gdb_interface(reader))
            }
        }
    }

    /// `__jit_debug_descriptor` found in the executable's writable data by its layout (see
    /// `gdb_interface::find_descriptor`), for stripped builds without debug info.
    pub fn find_jit_descriptor(&self) -> Option<u64> {
        let data = crate::maps::writable_data_regions(self.pid, &self.exe.to_string_lossy());
        let jit = crate::maps::jit_code_regions(self.pid).ok()?;
        crate::jit::gdb_interface::find_descriptor(self.mem, &data, &jit, &self.table.jit_records)
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

/// The separate debug file `file` parsed, if it is `elf`'s (same build-id).
fn debug_file_for(elf: &ElfInfo, file: &Path) -> Result<ElfInfo> {
    let debug = ElfInfo::open(file)?;
    match (&elf.build_id, &debug.build_id) {
        (Some(want), Some(got)) if want != got => {
            Err(Error::WrongDebugFile { path: file.to_owned(), found: got.clone(), expected: want.clone() })
        }
        _ => Ok(debug),
    }
}

/// ERTS version from an install path (`.../erts-17.1/bin/beam.smp`).
fn erts_from_path(exe: &Path) -> Option<String> {
    exe.ancestors().filter_map(|a| a.file_name()?.to_str()?.strip_prefix("erts-").map(str::to_owned)).next()
}

/// `(OTP release, ERTS version)` of a standard install, from `releases/start_erl.data` next to
/// the `erts-X` directory the binary runs from (`"17.1 29"`), read through the VM's root. Only
/// when the ERTS version there is the binary's own.
fn release_from_install(root: &Path, exe: &Path) -> Option<(String, String)> {
    let erts = erts_from_path(exe)?;
    let erts_dir = exe.ancestors().find(|a| a.file_name().and_then(|n| n.to_str()) == Some(&format!("erts-{erts}")))?;
    let install = erts_dir.parent()?;
    let data = root.join(install.strip_prefix("/").unwrap_or(install)).join("releases/start_erl.data");
    let text = std::fs::read_to_string(data).ok()?;
    let mut fields = text.split_whitespace();
    let (data_erts, release) = (fields.next()?, fields.next()?);
    (data_erts == erts).then(|| (release.to_owned(), erts))
}

/// What to do about missing debug info, and what was searched.
fn debug_info_hint(build_id: Option<&str>, tried: &[String]) -> String {
    let file = match build_id {
        Some(id) if id.len() > 2 => format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]),
        _ => "/usr/lib/debug/.build-id/xx/yyyy.debug".into(),
    };
    format!(
        "install its debug info ({file} inside the VM's root, e.g. the distribution's erlang-base-dbgsym), \
         or set DEBUGINFOD_URLS to a debuginfod server that has build-id {}, or pass --debug-file FILE \
         (tried: {}). Without it, `scope-probe profile` still works",
        build_id.unwrap_or("?"),
        if tried.is_empty() { "nothing".into() } else { tried.join("; ") }
    )
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
