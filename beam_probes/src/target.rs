//! From an OS pid to a verified BEAM: which beam.smp runs it (seen through `/proc/PID/root`
//! so targets in chroots and containers work), where it is loaded, which OTP release and
//! ERTS version it is, and which build table describes it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::builds::{self, BuildTable, ERTS_VERSION_SYMBOL, OTP_RELEASE_SYMBOL};
use crate::elf::ElfInfo;
use crate::error::{Error, Result};
use crate::hooks::ResolvedHook;
use crate::memory::RemoteMemory;
use crate::proctab::ProcessTable;
use crate::terms::Pid;

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
    pub mem: RemoteMemory,
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
            return Err(Error::UnsupportedBuild {
                otp_release: "?".into(),
                erts_version: "?".into(),
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
            missing: format!("no offsets table for this release; known builds: {}", builds::known_builds()),
        })?;
        Ok(BeamTarget { pid, exe, host_path, elf, load_bias, otp_release, erts_version, table, mem })
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

    pub fn decode_pid(&self, term: u64) -> Option<Pid> {
        self.table.pid.decode(term)
    }

    /// `<0.N.S>` for a pid term, or the raw term in hex when it is not a pid.
    pub fn format_pid(&self, term: u64) -> String {
        self.decode_pid(term).map(|p| p.to_string()).unwrap_or_else(|| format!("{term:#x}"))
    }

    /// Whether the target is still running.
    pub fn is_alive(&self) -> bool {
        proc_path(self.pid, "").exists()
    }
}
