//! Cheap, always-on facts about the VM from /proc: CPU time per scheduler thread (by type) and
//! resident memory. No trap in the VM.

use std::collections::BTreeMap;

/// Kinds of VM threads, from their names (`1_scheduler` on OTP 25, `erts_sched_1` on 26+).
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

/// Classifies a thread name; returns the kind and the scheduler number when it has one.
pub fn classify(comm: &str) -> (ThreadKind, Option<u32>) {
    let num = |s: &str| s.parse::<u32>().ok();
    // OTP 26+: erts_sched_N, erts_dcpus_N, erts_dios_N.
    if let Some(n) = comm.strip_prefix("erts_sched_") {
        return (ThreadKind::Normal, num(n));
    }
    if let Some(n) = comm.strip_prefix("erts_dcpus_") {
        return (ThreadKind::DirtyCpu, num(n));
    }
    if let Some(n) = comm.strip_prefix("erts_dios_") {
        return (ThreadKind::DirtyIo, num(n));
    }
    // OTP 25: N_scheduler, N_dirty_cpu_sch(eduler), N_dirty_io_sche(duler) (15-char comm).
    if let Some((n, rest)) = comm.split_once('_')
        && let Some(n) = num(n) {
            if rest.starts_with("scheduler") {
                return (ThreadKind::Normal, Some(n));
            }
            if rest.starts_with("dirty_cpu") {
                return (ThreadKind::DirtyCpu, Some(n));
            }
            if rest.starts_with("dirty_io") {
                return (ThreadKind::DirtyIo, Some(n));
            }
        }
    (ThreadKind::Other, None)
}

/// CPU seconds per (kind, scheduler number) over the VM's live threads; threads that are not
/// schedulers are summed under (Other, None).
pub fn scheduler_cpu(pid: u32) -> BTreeMap<(ThreadKind, Option<u32>), f64> {
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
        let (kind, n) = classify(comm.trim());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_of_otp25_and_otp26() {
        assert_eq!(classify("1_scheduler"), (ThreadKind::Normal, Some(1)));
        assert_eq!(classify("2_dirty_cpu_sch"), (ThreadKind::DirtyCpu, Some(2)));
        assert_eq!(classify("10_dirty_io_sch"), (ThreadKind::DirtyIo, Some(10)));
        assert_eq!(classify("erts_sched_3"), (ThreadKind::Normal, Some(3)));
        assert_eq!(classify("erts_dcpus_1"), (ThreadKind::DirtyCpu, Some(1)));
        assert_eq!(classify("erts_dios_4"), (ThreadKind::DirtyIo, Some(4)));
        assert_eq!(classify("1_aux"), (ThreadKind::Other, None));
        assert_eq!(classify("beam.smp"), (ThreadKind::Other, None));
    }
}
