//! The capabilities scope-probe needs, and nothing more: a missing one is one clear line
//! instead of an EPERM from deep inside libbpf, and every other one (root's CAP_SYS_ADMIN,
//! CAP_DAC_OVERRIDE, CAP_NET_ADMIN...) is dropped at start, from the bounding set too, so a bug
//! in scope-probe cannot use what it never needed.
//!
//! Needed: CAP_BPF (load programs, create maps), CAP_PERFMON (perf events: the sampler, uprobes
//! on another process) and CAP_SYS_PTRACE (read another process's memory and /proc files).
//! Kept when given, for names in CPU profiles: CAP_SYSLOG (kernel addresses in /proc/kallsyms:
//! kernel frames) and CAP_CHECKPOINT_RESTORE (/proc/PID/map_files, the one way to a file
//! replaced since the VM mapped it, as after an OTP upgrade under a running node; other files
//! are read through /proc/PID/root with CAP_SYS_PTRACE). Without them, those frames read
//! `[kernel]` and `[file+offset]`.
//! Kernels before 5.8 have no CAP_BPF and CAP_PERFMON: CAP_SYS_ADMIN stands in for both there.

use caps::{CapSet, Capability, CapsHashSet};

/// What the tool keeps. `top` and `snapshot` only read memory (CAP_SYS_PTRACE); keeping one
/// set for every command keeps the rule simple.
const NEEDED: [Capability; 3] = [Capability::CAP_BPF, Capability::CAP_PERFMON, Capability::CAP_SYS_PTRACE];

/// Kept when given: names of kernel frames and of C frames in mapped files (see above).
const NAMES: [Capability; 2] = [Capability::CAP_SYSLOG, Capability::CAP_CHECKPOINT_RESTORE];

fn effective() -> CapsHashSet {
    caps::read(None, CapSet::Effective).unwrap_or_default()
}

/// Drops every capability but those needed and those that name frames (and CAP_SYS_ADMIN where
/// the kernel has no CAP_BPF or CAP_PERFMON), from the effective, permitted, inheritable, ambient and bounding sets.
/// Without root, nothing changes.
pub fn drop_unneeded() -> anyhow::Result<()> {
    let mut keep: CapsHashSet = NEEDED.into_iter().chain(NAMES).collect();
    let known = caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::all());
    if !known.contains(&Capability::CAP_BPF) || !known.contains(&Capability::CAP_PERFMON) {
        keep.insert(Capability::CAP_SYS_ADMIN);
    }
    let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
    // The bounding set first: dropping from it needs CAP_SETPCAP, itself dropped below.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::read(None, CapSet::Bounding).unwrap_or_default() {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|e| anyhow::anyhow!("dropping {cap} from the bounding set: {e}"))?;
            }
        }
    }
    let _ = caps::clear(None, CapSet::Ambient);
    caps::clear(None, CapSet::Inheritable).map_err(|e| anyhow::anyhow!("clearing the inheritable capabilities: {e}"))?;
    let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Effective, &kept).map_err(|e| anyhow::anyhow!("dropping capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| anyhow::anyhow!("dropping capabilities: {e}"))?;
    Ok(())
}

/// Err with the names of the missing capabilities.
pub fn check() -> anyhow::Result<()> {
    let caps = effective();
    let admin = caps.contains(&Capability::CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    for cap in NEEDED {
        if !caps.contains(&cap) && (!admin || cap == Capability::CAP_SYS_PTRACE) {
            missing.push(cap.to_string());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "insufficient privileges: missing {}; run scope-probe as root (sudo), or give it CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE",
            missing.join(", ")
        )
    }
}

/// Reading the VM's memory from outside needs CAP_SYS_PTRACE (and nothing else).
pub fn check_ptrace() -> anyhow::Result<()> {
    if !effective().contains(&Capability::CAP_SYS_PTRACE) {
        anyhow::bail!("insufficient privileges: missing CAP_SYS_PTRACE; run scope-probe as root (sudo), or give it CAP_SYS_PTRACE");
    }
    Ok(())
}
