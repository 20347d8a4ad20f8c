//! What a scope-probe process holds in the kernel, read from the kernel rather than from what
//! scope-probe prints: its BPF links and programs (by id, from its open file descriptors'
//! fdinfo), its perf events, and the breakpoints its uprobes wrote into the observed VM's code.
//! After any stop, [`Held::released`] checks that every one of them is gone: the links and
//! programs no longer exist anywhere on the machine, and the VM's code is again byte for byte
//! what its file holds.
//!
//! Ids are global and not reused soon (the kernel allocates them cyclically), so the check
//! holds while other scope-probes run on the same machine. Breakpoints are per VM: a test with
//! two probes on one VM checks the code once the last one has stopped ([`Held::released_code`]).

use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, Instant};

/// The uprobe breakpoint (`int3`), as the kernel writes it into the probed page.
const INT3: u8 = 0xcc;

/// How long the kernel may take to let go after the process exits: links and programs are
/// released as the process's files close, the uprobe breakpoints as their perf events go; both
/// are done within milliseconds, but the last steps run from RCU and work queues.
const GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub links: BTreeSet<u32>,
    pub programs: BTreeSet<u32>,
    /// Open perf events (the sampler's per-CPU events, the uprobes' events).
    pub perf_events: usize,
}

impl Held {
    /// Reads the open files of a live process (`/proc/PID/fd` and their fdinfo).
    pub fn of(pid: u32) -> Held {
        let mut held = Held::default();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return held };
        for fd in dir.flatten() {
            let Ok(what) = std::fs::read_link(fd.path()) else { continue };
            let what = what.to_string_lossy().into_owned();
            let name = fd.file_name();
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", name.to_string_lossy())).unwrap_or_default();
            let field = |key: &str| {
                info.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<u32>().ok())
            };
            match what.as_str() {
                "anon_inode:bpf_link" => {
                    held.links.extend(field("link_id:"));
                    held.programs.extend(field("prog_id:"));
                }
                "anon_inode:bpf-prog" => held.programs.extend(field("prog_id:")),
                "anon_inode:[perf_event]" => held.perf_events += 1,
                _ => {}
            }
        }
        held
    }

    /// The names of its programs, as the kernel lists them (one entry per program loaded).
    pub fn program_names(&self) -> Vec<String> {
        let mut names: Vec<String> = kernel_list("prog")
            .into_iter()
            .filter(|p| p["id"].as_u64().is_some_and(|id| self.programs.contains(&(id as u32))))
            .map(|p| p["name"].as_str().unwrap_or("").to_owned())
            .collect();
        names.sort();
        names
    }

    /// Everything in either.
    pub fn union(mut self, other: &Held) -> Held {
        self.links.extend(&other.links);
        self.programs.extend(&other.programs);
        self.perf_events = self.perf_events.max(other.perf_events);
        self
    }

    /// Waits (up to a grace period) until none of the links and programs exists any more;
    /// `Err` lists those still there.
    pub fn released(&self) -> Result<(), Leftovers> {
        let deadline = Instant::now() + GRACE;
        loop {
            let left = self.still_in_kernel();
            if left.is_empty() || Instant::now() > deadline {
                return if left.is_empty() { Ok(()) } else { Err(left) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn still_in_kernel(&self) -> Leftovers {
        let links: BTreeSet<u32> = kernel_ids("link").into_iter().filter(|id| self.links.contains(id)).collect();
        let programs: BTreeSet<u32> = kernel_ids("prog").into_iter().filter(|id| self.programs.contains(id)).collect();
        Leftovers { links, programs, breakpoints: Vec::new() }
    }

    /// Waits (up to a grace period) until the VM's code is what its file holds; `Err` lists
    /// the bytes that differ.
    pub fn released_code(vm_pid: u32) -> Result<(), Leftovers> {
        let deadline = Instant::now() + GRACE;
        loop {
            let breakpoints = code_differences(vm_pid);
            if breakpoints.is_empty() || Instant::now() > deadline {
                return if breakpoints.is_empty() {
                    Ok(())
                } else {
                    Err(Leftovers { breakpoints, ..Leftovers::default() })
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Bytes of the VM's executable file mappings that differ from the file: (address, file
/// byte, byte in the VM's memory). While a uprobe is attached its address reads `int3`.
pub fn code_differences(vm_pid: u32) -> Vec<(u64, u8, u8)> {
    let Ok(exe) = std::fs::metadata(format!("/proc/{vm_pid}/exe")) else { return Vec::new() };
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{vm_pid}/maps")) else { return Vec::new() };
    let Ok(mem) = std::fs::File::open(format!("/proc/{vm_pid}/mem")) else { return Vec::new() };
    let mut diffs = Vec::new();
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[1].contains('x') || f[4].parse::<u64>().ok() != Some(exe.ino()) {
            continue;
        }
        let Some((start, end)) = f[0].split_once('-') else { continue };
        let (Ok(start), Ok(end), Ok(offset)) =
            (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16), u64::from_str_radix(f[2], 16))
        else {
            continue;
        };
        // The mapped file itself, whatever mount namespace the VM runs in.
        let Ok(file) = std::fs::File::open(format!("/proc/{vm_pid}/map_files/{start:x}-{end:x}")) else { continue };
        let len = (end - start) as usize;
        let (mut in_file, mut in_memory) = (vec![0u8; len], vec![0u8; len]);
        let read_file = file.read_at(&mut in_file, offset).unwrap_or(0);
        let read_memory = mem.read_at(&mut in_memory, start).unwrap_or(0);
        let n = read_file.min(read_memory);
        diffs.extend(
            (0..n).filter(|&i| in_file[i] != in_memory[i]).map(|i| (start + i as u64, in_file[i], in_memory[i])),
        );
    }
    diffs
}

/// The uprobe breakpoints in the VM's code: addresses that read `int3` where the file does not.
pub fn breakpoints(vm_pid: u32) -> Vec<u64> {
    code_differences(vm_pid).into_iter().filter(|&(_, _, m)| m == INT3).map(|(a, _, _)| a).collect()
}

/// What stayed behind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub links: BTreeSet<u32>,
    pub programs: BTreeSet<u32>,
    /// (address, file byte, byte in memory)
    pub breakpoints: Vec<(u64, u8, u8)>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.programs.is_empty() && self.breakpoints.is_empty()
    }
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.links.is_empty() {
            write!(f, "BPF links still in the kernel: {:?}; ", self.links)?;
        }
        if !self.programs.is_empty() {
            write!(f, "BPF programs still loaded: {:?}; ", self.programs)?;
        }
        if !self.breakpoints.is_empty() {
            let shown: Vec<String> =
                self.breakpoints.iter().take(8).map(|(a, file, mem)| format!("{a:#x}: {file:#04x} -> {mem:#04x}")).collect();
            write!(f, "the VM's code differs from its file at {} bytes ({})", self.breakpoints.len(), shown.join(", "))?;
        }
        Ok(())
    }
}

/// Takes a duplicate of another process's file descriptor into this one (`pidfd_getfd`, as
/// root). The harness's own test uses it to leak a link on purpose: the kernel keeps a link
/// while any process holds it, so the check above must then fail.
pub fn steal_fd(pid: u32, fd: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscalls; the returned descriptors are owned by the OwnedFds made here.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) as i32;
        if pidfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd);
        use std::os::fd::AsRawFd;
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) as i32;
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(std::os::fd::OwnedFd::from_raw_fd(fd))
    }
}

/// The descriptor numbers of a process's BPF links.
pub fn link_fds(pid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|w| w.to_string_lossy() == "anon_inode:bpf_link"))
        .filter_map(|fd| fd.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// Ids of every BPF link or program (`what`: `link`, `prog`) on the machine, as the kernel
/// lists them through bpftool (`cargo xtask setup` installs it). bpftool rather than a BPF
/// library keeps the harness, which xtask builds before it installs anything, free of libbpf.
fn kernel_ids(what: &str) -> Vec<u32> {
    kernel_list(what).iter().map(|e| e["id"].as_u64().expect("every entry has an id") as u32).collect()
}

/// Every BPF link or program on the machine, as bpftool lists them in JSON.
fn kernel_list(what: &str) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("bpftool")
        .args(["--json", what, "list"])
        .output()
        .unwrap_or_else(|e| panic!("running bpftool (cargo xtask setup installs it): {e}"));
    assert!(out.status.success(), "bpftool {what} list: {}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    list.as_array().expect("bpftool lists an array").clone()
}
