//! A check of the capabilities scope-probe needs, so a missing privilege is one clear line
//! instead of an EPERM from deep inside libbpf.

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Err with the names of the missing capabilities.
pub fn check() -> anyhow::Result<()> {
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1 << c) != 0;
    let mut missing = Vec::new();
    if !(has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
        missing.push("CAP_BPF");
    }
    if !(has(CAP_PERFMON) || has(CAP_SYS_ADMIN)) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("insufficient privileges: missing {}; run scope-probe as root (sudo)", missing.join(", "))
    }
}

/// Reading the VM's memory from outside needs CAP_SYS_PTRACE (and nothing else).
pub fn check_ptrace() -> anyhow::Result<()> {
    if effective_caps().unwrap_or(0) & (1 << CAP_SYS_PTRACE) == 0 {
        anyhow::bail!("insufficient privileges: missing CAP_SYS_PTRACE; run scope-probe as root (sudo)");
    }
    Ok(())
}
