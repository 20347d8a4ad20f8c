//! The target's memory map as far as scope-probe needs it: where the JIT keeps its code.

use crate::error::{Error, Result};

/// An executable address range of the JIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeRegion {
    pub start: u64,
    pub end: u64,
}

/// Executable ranges of JIT code: the BEAM's JIT maps its code executable from a memfd
/// (`/memfd:vmem (deleted)`, the read-execute view of its dual mapping) or, where memfd is not
/// available, anonymously.
pub fn jit_code_regions(pid: u32) -> Result<Vec<CodeRegion>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| Error::io(format!("reading /proc/{pid}/maps"), e))?;
    Ok(parse_jit_code_regions(&maps))
}

pub fn parse_jit_code_regions(maps: &str) -> Vec<CodeRegion> {
    executable_mappings(maps)
        .filter(|(_, _, path)| path.is_empty() || path.starts_with("/memfd:"))
        .map(|(region, _, _)| region)
        .collect()
}

/// Executable mappings of files (beam.smp, libraries), with their file names: what names code
/// that has no symbol.
pub fn executable_files(pid: u32) -> Vec<(CodeRegion, String)> {
    executable_file_mappings(pid)
        .into_iter()
        .filter_map(|m| {
            let name = m.path.trim_end_matches(" (deleted)").rsplit('/').next()?.to_owned();
            Some((m.region, name))
        })
        .collect()
}

/// An executable mapping of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMapping {
    pub region: CodeRegion,
    /// The file offset mapped at `region.start`.
    pub offset: u64,
    /// The file as the VM sees it (in its own mount namespace).
    pub path: String,
}

impl FileMapping {
    /// The file, readable from here whatever mount namespace the VM is in: through the VM's
    /// root (`/proc/PID/root/PATH`, which CAP_SYS_PTRACE opens), else, for a file deleted or
    /// replaced since it was mapped, `/proc/PID/map_files/START-END` (which wants
    /// CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN besides).
    pub fn file_from_outside(&self, pid: u32) -> std::path::PathBuf {
        let through_root = std::path::PathBuf::from(format!("/proc/{pid}/root{}", self.path));
        let same_file = || -> Option<bool> {
            use std::os::unix::fs::MetadataExt;
            let mapped = self.mapped_inode(pid)?;
            let meta = std::fs::metadata(&through_root).ok()?;
            Some(meta.ino() == mapped)
        };
        if !self.path.ends_with(" (deleted)") && same_file().unwrap_or(false) {
            return through_root;
        }
        format!("/proc/{pid}/map_files/{:x}-{:x}", self.region.start, self.region.end).into()
    }

    /// The inode the mapping holds, from /proc/PID/maps.
    fn mapped_inode(&self, pid: u32) -> Option<u64> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let start = format!("{:x}-{:x} ", self.region.start, self.region.end);
        let line = maps.lines().find(|l| l.starts_with(&start))?;
        line.split_whitespace().nth(4)?.parse().ok()
    }
}

/// The executable mappings of files (beam.smp, libraries, NIFs and drivers).
pub fn executable_file_mappings(pid: u32) -> Vec<FileMapping> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    parse_executable_file_mappings(&maps)
}

pub fn parse_executable_file_mappings(maps: &str) -> Vec<FileMapping> {
    executable_mappings(maps)
        .filter(|(_, _, path)| path.starts_with('/') && !path.starts_with("/memfd:"))
        .map(|(region, offset, path)| FileMapping { region, offset, path: path.to_owned() })
        .collect()
}

/// Where an executable's writable data lives in the target: its file-backed read-write mappings
/// (`.data`) and the anonymous mapping right after the last of them (`.bss`). `exe` is the path
/// as /proc/PID/maps shows it.
pub fn writable_data_regions(pid: u32, exe: &str) -> Vec<CodeRegion> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    parse_writable_data_regions(&maps, exe)
}

pub fn parse_writable_data_regions(maps: &str, exe: &str) -> Vec<CodeRegion> {
    let mut out: Vec<CodeRegion> = Vec::new();
    let mut after_exe = false;
    for line in maps.lines() {
        let mut f = line.splitn(6, char::is_whitespace).filter(|s| !s.is_empty());
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        let path = f.nth(3).map(str::trim).unwrap_or("");
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
        let region = CodeRegion { start, end };
        if path == exe {
            if perms.starts_with("rw") {
                out.push(region);
            }
            after_exe = true;
        } else if after_exe && path.is_empty() && perms.starts_with("rw") && out.last().is_some_and(|l| l.end == start) {
            out.push(region);
            after_exe = false;
        } else {
            after_exe = false;
        }
    }
    out
}

/// The executable lines of a /proc/PID/maps text: range, file offset and path ("" when
/// anonymous).
fn executable_mappings(maps: &str) -> impl Iterator<Item = (CodeRegion, u64, &str)> {
    maps.lines().filter_map(|line| {
        let mut f = line.splitn(6, char::is_whitespace).filter(|s| !s.is_empty());
        let range = f.next()?;
        let perms = f.next()?;
        let offset = u64::from_str_radix(f.next()?, 16).ok()?;
        let path = f.nth(2).map(str::trim).unwrap_or("");
        if !perms.contains('x') {
            return None;
        }
        let (a, b) = range.split_once('-')?;
        let region = CodeRegion { start: u64::from_str_radix(a, 16).ok()?, end: u64::from_str_radix(b, 16).ok()? };
        Some((region, offset, path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_bss_of_the_executable() {
        let maps = "55a103fbf000-55a104025000 r--p 00000000 fe:00 770341 /usr/lib/erlang/erts-17.1/bin/beam.smp\n\
                    55a104025000-55a1042b0000 r-xp 00066000 fe:00 770341 /usr/lib/erlang/erts-17.1/bin/beam.smp\n\
                    55a1042b0000-55a1042c0000 r--p 002f1000 fe:00 770341 /usr/lib/erlang/erts-17.1/bin/beam.smp\n\
                    55a1042c0000-55a1042d0000 rw-p 00301000 fe:00 770341 /usr/lib/erlang/erts-17.1/bin/beam.smp\n\
                    55a1042d0000-55a1042f0000 rw-p 00000000 00:00 0 \n\
                    55a105000000-55a105100000 rw-p 00000000 00:00 0 [heap]\n";
        assert_eq!(
            parse_writable_data_regions(maps, "/usr/lib/erlang/erts-17.1/bin/beam.smp"),
            vec![
                CodeRegion { start: 0x55a1042c0000, end: 0x55a1042d0000 },
                CodeRegion { start: 0x55a1042d0000, end: 0x55a1042f0000 }
            ]
        );
    }

    #[test]
    fn executable_files_with_their_offsets() {
        let maps = "55a103fbf000-55a104025000 r--p 00000000 fe:00 770341 /usr/lib/erlang/erts-17.1/bin/beam.smp\n\
                    55a104025000-55a1042b0000 r-xp 00066000 fe:00 770341 /usr/lib/erlang/erts-17.1/bin/beam.smp\n\
                    7f345d1ff000-7f345d9ff000 r-xs 00000000 00:01 1260 /memfd:vmem (deleted)\n\
                    7f349fa06000-7f349fa08000 r-xp 00000000 00:00 0 [vdso]\n\
                    7f34a0028000-7f34a017d000 r-xp 00026000 fe:00 1835 /usr/lib/x86_64-linux-gnu/libc.so.6\n";
        let m = parse_executable_file_mappings(maps);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].region, CodeRegion { start: 0x55a104025000, end: 0x55a1042b0000 });
        assert_eq!((m[0].offset, m[0].path.as_str()), (0x66000, "/usr/lib/erlang/erts-17.1/bin/beam.smp"));
        assert_eq!((m[1].offset, m[1].path.as_str()), (0x26000, "/usr/lib/x86_64-linux-gnu/libc.so.6"));
    }

    #[test]
    fn finds_the_memfd_view_only() {
        let maps = "55a104025000-55a1042b0000 r-xp 00066000 fe:00 770341 /usr/lib/erlang/erts-13.1.5/bin/beam.smp\n\
                    7f345d1ff000-7f345d9ff000 r-xs 00000000 00:01 1260 /memfd:vmem (deleted)\n\
                    7f345e000000-7f345e800000 rw-s 00000000 00:01 1260 /memfd:vmem (deleted)\n\
                    7f349fa06000-7f349fa08000 r-xp 00000000 00:00 0 [vdso]\n";
        assert_eq!(
            parse_jit_code_regions(maps),
            vec![CodeRegion { start: 0x7f345d1ff000, end: 0x7f345d9ff000 }]
        );
        let anon = "7f0000000000-7f0000001000 rwxp 00000000 00:00 0 \n";
        assert_eq!(parse_jit_code_regions(anon), vec![CodeRegion { start: 0x7f0000000000, end: 0x7f0000001000 }]);
    }
}
