//! Cheap, always-on facts about the VM from /proc: CPU time per scheduler thread (by type) and
//! resident memory. No trap in the VM.

use std::collections::BTreeMap;

use beam_probes::builds::ThreadNames;
use beam_probes::threads::{self, SchedulerKind, ThreadRole};

/// Kinds of VM threads for CPU accounting (roles from `beam_probes::threads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadKind {
    Normal,
    DirtyCpu,
    DirtyIo,
    Other,
}

impl ThreadKind {
    pub fn label(self) -> &'static str {
        match self {
            ThreadKind::Normal => "normal",
            ThreadKind::DirtyCpu => "dirty_cpu",
            ThreadKind::DirtyIo => "dirty_io",
            ThreadKind::Other => "other",
        }
    }
}

/// The kind and scheduler number of a thread, under the build's naming.
pub fn classify(names: &ThreadNames, comm: &str) -> (ThreadKind, Option<u32>) {
    match threads::classify(names, comm) {
        ThreadRole::Scheduler(SchedulerKind::Normal, n) => (ThreadKind::Normal, Some(n)),
        ThreadRole::Scheduler(SchedulerKind::DirtyCpu, n) => (ThreadKind::DirtyCpu, Some(n)),
        ThreadRole::Scheduler(SchedulerKind::DirtyIo, n) => (ThreadKind::DirtyIo, Some(n)),
        _ => (ThreadKind::Other, None),
    }
}

/// CPU seconds per (kind, scheduler number) over the VM's live threads; threads that are not
/// schedulers are summed under (Other, None).
pub fn scheduler_cpu(pid: u32, names: &ThreadNames) -> BTreeMap<(ThreadKind, Option<u32>), f64> {
    let mut out = BTreeMap::new();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        let dir = task.path();
        let (Ok(comm), Ok(stat)) =
            (std::fs::read_to_string(dir.join("comm")), std::fs::read_to_string(dir.join("stat")))
        else {
            continue;
        };
        // Fields after the parenthesised name: utime and stime are fields 14 and 15 (1-based).
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else { continue };
        let f: Vec<&str> = after.split_whitespace().collect();
        let (Some(u), Some(s)) = (f.get(11).and_then(|v| v.parse::<f64>().ok()), f.get(12).and_then(|v| v.parse::<f64>().ok()))
        else {
            continue;
        };
        let (kind, n) = classify(names, comm.trim_end_matches('\n'));
        let key = if kind == ThreadKind::Other { (kind, None) } else { (kind, n) };
        *out.entry(key).or_default() += (u + s) / ticks;
    }
    out
}

/// Resident set size in bytes.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Some(pages * page)
}

/// This process's own peak resident memory (`VmHWM`).
pub fn own_peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user + system) of all of a process's threads so far (`/proc/PID/stat`).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (u, s): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((u + s) / ticks)
}
