//! The process table as people read it: a snapshot from `beam_probes`, with current functions
//! named through the JIT symbols, the node's identity, and the system/user split. Shared by
//! `snapshot`, `top` and the monitor's metrics.

use std::collections::HashMap;

use anyhow::Result;
use beam_probes::BeamTarget;
use beam_probes::snapshot::{self, ProcessStatus};
use serde::Serialize;

use crate::symbolize::Symbolizer;

#[derive(Debug, Clone, Serialize)]
pub struct ProcessRow {
    pub pid: String,
    /// Pid number, for sorting by pid.
    #[serde(skip)]
    pub number: u64,
    #[serde(skip)]
    pub term: u64,
    pub name: Option<String>,
    pub current_function: String,
    pub message_queue_len: u64,
    pub total_heap_words: u64,
    pub heap_bytes: u64,
    pub reductions: u64,
    pub status: ProcessStatus,
    pub system: bool,
}

#[derive(Debug, Serialize)]
pub struct ProcessTableView {
    pub node: String,
    pub os_pid: u32,
    pub otp_release: String,
    pub erts_version: String,
    /// Where the struct offsets came from: the build table or the binary's DWARF.
    pub offsets: &'static str,
    /// The separate debug file the offsets came from, when not from the binary itself.
    pub debug_file: Option<String>,
    /// Where the debug info came from (in the binary, installed, --debug-file, debuginfod).
    pub debug_info: Option<String>,
    pub process_count: usize,
    /// Records skipped because they changed while being read.
    pub torn: u64,
    pub snapshot_seconds: f64,
    pub processes: Vec<ProcessRow>,
}

/// Registered names of the processes OTP itself starts (kernel, stdlib, the runtime).
const SYSTEM_NAMES: &[&str] = &[
    "init", "erts_code_purger", "erl_prim_loader", "socket_registry", "logger", "logger_sup",
    "logger_handler_watcher", "logger_proxy", "logger_std_h_default", "application_controller",
    "kernel_sup", "kernel_refc", "kernel_safe_sup", "code_server", "file_server_2", "inet_db",
    "global_name_server", "global_group", "global_group_check", "rex", "erl_signal_server",
    "standard_error", "standard_error_sup", "user", "user_drv", "erl_epmd", "net_kernel",
    "net_sup", "auth", "timer_server", "error_logger", "erts_dirty_process_signal_handler",
];

/// Modules whose code runs OTP's own processes.
const SYSTEM_MODULE_PREFIXES: &[&str] = &[
    "erts_", "init:", "erl_prim_loader:", "prim_", "application_master:", "logger", "kernel",
    "code_server:", "user_drv:", "group:", "global", "inet_db:", "erl_signal_handler:",
    "standard_error:", "file_server:", "socket_registry:", "rpc:", "erpc:",
];

/// Whether a process belongs to the runtime or OTP's own applications rather than the user.
pub fn is_system(name: Option<&str>, current: &str) -> bool {
    name.is_some_and(|n| SYSTEM_NAMES.contains(&n)) || SYSTEM_MODULE_PREFIXES.iter().any(|p| current.starts_with(p))
}

/// The node name, from the VM's command line (`-sname`/`-name`); `nonode@nohost` otherwise.
pub fn node_name(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let host = || {
        std::fs::read_to_string(format!("/proc/{pid}/root/etc/hostname"))
            .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
            .map(|h| h.trim().split('.').next().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    for (i, a) in args.iter().enumerate() {
        if (a == "-sname" || a == "-name") && i + 1 < args.len() {
            let n = &args[i + 1];
            return if n.contains('@') { n.clone() } else { format!("{n}@{}", host()) };
        }
    }
    "nonode@nohost".into()
}

/// Takes a snapshot and names what it can.
pub fn read(target: &BeamTarget, symbolizer: &mut Symbolizer) -> Result<ProcessTableView> {
    let snap = snapshot::snapshot(&target.process_table())?;
    let mut names: HashMap<u64, String> = HashMap::new();
    let processes = snap
        .processes
        .into_iter()
        .map(|p| {
            let current = names
                .entry(p.resume_address)
                .or_insert_with(|| {
                    if p.resume_address == 0 { String::new() } else { symbolizer.name(p.resume_address).to_string() }
                })
                .clone();
            ProcessRow {
                pid: p.pid.to_string(),
                number: p.pid.number,
                term: p.term,
                system: is_system(p.name.as_deref(), &current),
                name: p.name,
                current_function: current,
                message_queue_len: p.message_queue_len,
                total_heap_words: p.total_heap_words,
                heap_bytes: p.total_heap_words * 8,
                reductions: p.reductions,
                status: p.status,
            }
        })
        .collect::<Vec<_>>();
    Ok(ProcessTableView {
        node: node_name(target.pid),
        os_pid: target.pid,
        otp_release: target.otp_release.clone(),
        erts_version: target.erts_version.clone(),
        offsets: target.offsets.label(),
        debug_file: target.debug_file.as_ref().map(|p| p.display().to_string()),
        debug_info: target.debug_origin.as_ref().map(|o| o.label()),
        process_count: processes.len(),
        torn: snap.torn,
        snapshot_seconds: snap.elapsed.as_secs_f64(),
        processes,
    })
}
