//! The process table as people read it: a snapshot from `beam_probes` (identity, queues,
//! memory, the OTP/user split), with current functions named through the JIT symbols and the
//! node's identity. Shared by `snapshot`, `top` and the monitor's metrics.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use beam_probes::BeamTarget;
use beam_probes::snapshot::{self, ProcessStatus};
use serde::Serialize;

use crate::enrich::symbolize::Symbolizer;

#[derive(Debug, Clone, Serialize)]
pub struct ProcessRow {
    pub pid: String,
    /// Pid number, for sorting by pid.
    #[serde(skip)]
    pub number: u64,
    #[serde(skip)]
    pub term: u64,
    pub name: Option<String>,
    /// Who it is: the registered name, else the label, else the initial call.
    pub identity: Option<Arc<str>>,
    /// `$initial_call` (proc_lib) or the spawn's MFA.
    pub initial_call: Option<Arc<str>>,
    /// First of `$ancestors`.
    pub ancestor: Option<String>,
    /// `$process_label` (OTP 27+).
    pub label: Option<String>,
    pub current_function: Arc<str>,
    pub message_queue_len: u64,
    /// Whether the length was counted in the queues (else it is the VM's counters').
    pub message_queue_exact: bool,
    pub total_heap_words: u64,
    pub heap_bytes: u64,
    /// As `process_info(P, memory)` counts it (links and monitors excepted).
    pub memory_bytes: u64,
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
    /// Processes whose queues could not be walked (their length is the VM's counters').
    pub queues_not_walked: u64,
    pub snapshot_seconds: f64,
    pub processes: Vec<ProcessRow>,
    /// Supervisors and what they started, from the processes' ancestors.
    pub supervision: beam_probes::supervision::Tree,
    /// ETS tables, largest first.
    pub ets: EtsView,
    /// The port table (sockets, spawned programs...), the fullest queues first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<beam_probes::ports::PortSnapshot>,
    /// Why the port table could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports_error: Option<String>,
    /// Memory by kind, as `erlang:memory()` groups it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<beam_probes::vm_memory::VmMemory>,
    /// Why the memory could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_error: Option<String>,
}

/// The VM's ETS tables as people read them: each owner named.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EtsView {
    pub tables: Vec<EtsRow>,
    /// Tables (or lists of them) skipped because they changed while being read.
    pub torn: u64,
    /// Why the tables could not be read, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EtsRow {
    #[serde(flatten)]
    pub table: beam_probes::ets::EtsTable,
    /// The owner's identity (registered name, label or initial call).
    pub owner_identity: Option<Arc<str>>,
    /// The owner is one of OTP's own processes.
    pub owner_system: bool,
}

impl EtsView {
    /// No tables, and why.
    pub fn unread(why: String) -> EtsView {
        EtsView { error: Some(why), ..Default::default() }
    }

    /// The tables of a read, largest first, owners named from the processes of the same moment.
    pub fn of(snap: &beam_probes::ets::EtsSnapshot, processes: &[snapshot::ProcessRecord]) -> EtsView {
        let who: HashMap<u64, &snapshot::ProcessRecord> = processes.iter().map(|p| (p.term, p)).collect();
        let mut tables: Vec<EtsRow> = snap
            .tables
            .iter()
            .map(|t| EtsRow {
                table: t.clone(),
                owner_identity: who.get(&t.owner_term).and_then(|p| p.identity()).map(Arc::from),
                owner_system: who.get(&t.owner_term).is_some_and(|p| p.system),
            })
            .collect();
        tables.sort_by(|a, b| b.table.memory_bytes.cmp(&a.table.memory_bytes).then_with(|| a.table.name.cmp(&b.table.name)));
        EtsView { tables, torn: snap.torn, error: None }
    }
}

/// The node name, as the VM holds it; from its command line (`-sname`/`-name`) when its memory
/// does not say; `nonode@nohost` otherwise.
pub fn node_name(target: &beam_probes::BeamTarget) -> String {
    match target.node_name() {
        // A VM started with -sname/-name reads as not distributed until net_kernel is up (the
        // first second of its life, when `--all` picks it up): its command line says what it
        // is about to be.
        Ok(n) if n == "nonode@nohost" => node_name_from_command_line(target.pid),
        Ok(n) => n,
        Err(_) => node_name_from_command_line(target.pid),
    }
}

fn node_name_from_command_line(pid: u32) -> String {
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
/// The function a process is in, as `process_info(P, current_function)` says it: the one the VM
/// set, else where the process resumes (named once per address through `names`).
pub fn current_function(
    p: &beam_probes::snapshot::ProcessRecord,
    symbolizer: &mut Symbolizer,
    names: &mut HashMap<u64, Arc<str>>,
) -> Arc<str> {
    match &p.current {
        Some(current) => current.clone(),
        None => names
            .entry(p.resume_address)
            .or_insert_with(|| if p.resume_address == 0 { "".into() } else { symbolizer.name(p.resume_address) })
            .clone(),
    }
}

pub fn read(target: &BeamTarget, symbolizer: &mut Symbolizer) -> Result<ProcessTableView> {
    let snap = snapshot::snapshot(&target.process_table())?;
    let mut names: HashMap<u64, Arc<str>> = HashMap::new();
    let supervision = beam_probes::supervision::Tree::of_records(&snap.processes);
    let ets = match beam_probes::ets::of(target) {
        Ok(read) => EtsView::of(&read, &snap.processes),
        Err(e) => EtsView::unread(e.to_string()),
    };
    // What was read, or why not.
    fn split<T>(read: beam_probes::Result<T>) -> (Option<T>, Option<String>) {
        match read {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        }
    }
    let (ports, ports_error) = split(beam_probes::ports::of(target));
    let (memory, memory_error) = split(beam_probes::vm_memory::of(target));
    let processes = snap
        .processes
        .into_iter()
        .map(|p| {
            let current = current_function(&p, symbolizer, &mut names);
            ProcessRow {
                pid: p.pid.to_string(),
                number: p.pid.number,
                term: p.term,
                system: p.system,
                identity: match (&p.name, &p.label) {
                    (Some(n), _) | (None, Some(n)) => Some(Arc::from(n.as_str())),
                    (None, None) => p.initial_call.clone(),
                },
                name: p.name,
                initial_call: p.initial_call,
                ancestor: p.ancestor,
                label: p.label,
                current_function: current,
                message_queue_len: p.message_queue_len,
                message_queue_exact: p.message_queue_exact,
                total_heap_words: p.total_heap_words,
                heap_bytes: p.total_heap_words * 8,
                memory_bytes: p.memory_bytes,
                reductions: p.reductions,
                status: p.status,
            }
        })
        .collect::<Vec<_>>();
    Ok(ProcessTableView {
        node: node_name(target),
        os_pid: target.pid,
        otp_release: target.otp_release.clone(),
        erts_version: target.erts_version.clone(),
        offsets: target.offsets.label(),
        debug_file: target.debug_file.as_ref().map(|p| p.display().to_string()),
        debug_info: target.debug_origin.as_ref().map(|o| o.label()),
        process_count: processes.len(),
        torn: snap.torn,
        queues_not_walked: snap.queues_not_walked,
        snapshot_seconds: snap.elapsed.as_secs_f64(),
        supervision,
        processes,
        ets,
        ports,
        ports_error,
        memory,
        memory_error,
    })
}
