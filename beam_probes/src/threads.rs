//! The VM's threads and what each is for, told by its name (a build fact: OTP 26 renamed them,
//! see [`ThreadNames`]), and for each scheduler thread where its scheduler data lives, which
//! says at any moment which process or port it runs or whether it waits for work.

use crate::builds::{BuildTable, ThreadNames};
use crate::target::BeamTarget;

/// The kinds of scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SchedulerKind {
    Normal,
    DirtyCpu,
    DirtyIo,
}

impl SchedulerKind {
    /// As metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            SchedulerKind::Normal => "normal",
            SchedulerKind::DirtyCpu => "dirty_cpu",
            SchedulerKind::DirtyIo => "dirty_io",
        }
    }

    /// As people say it: `scheduler 1`, `dirty cpu 2`, `dirty io 3`.
    pub fn display(self) -> &'static str {
        match self {
            SchedulerKind::Normal => "scheduler",
            SchedulerKind::DirtyCpu => "dirty cpu",
            SchedulerKind::DirtyIo => "dirty io",
        }
    }
}

/// What a VM thread does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ThreadRole {
    /// Runs Erlang processes (and, normal ones, ports); numbered from 1.
    Scheduler(SchedulerKind, u32),
    /// Aux work: timers, thread progress, deallocation on behalf of the schedulers.
    Aux,
    /// Waits for I/O on the poll set.
    Poller,
    /// The async thread pool (drivers' async jobs).
    Async,
    /// Dispatchers of system signals and system messages.
    Dispatcher,
    /// Anything else: the main thread, a NIF's own threads.
    Other(String),
}

/// Tells a thread's role from its name, under a build's naming.
pub fn classify(names: &ThreadNames, comm: &str) -> ThreadRole {
    let numbered = [
        (names.normal, Some(SchedulerKind::Normal)),
        (names.dirty_cpu, Some(SchedulerKind::DirtyCpu)),
        (names.dirty_io, Some(SchedulerKind::DirtyIo)),
    ];
    for (pattern, kind) in numbered {
        if let (Some(n), Some(kind)) = (match_numbered(pattern, comm), kind) {
            return ThreadRole::Scheduler(kind, n);
        }
    }
    if match_numbered(names.aux, comm).is_some() {
        return ThreadRole::Aux;
    }
    if match_numbered(names.poller, comm).is_some() {
        return ThreadRole::Poller;
    }
    if match_numbered(names.async_pool, comm).is_some() {
        return ThreadRole::Async;
    }
    if names.dispatchers.contains(&comm) {
        return ThreadRole::Dispatcher;
    }
    ThreadRole::Other(comm.to_owned())
}

/// The kernel keeps 15 bytes of a thread's name.
const COMM_LEN: usize = 15;

/// The number in `comm` when it is `pattern` (`{}` for the number) as the kernel keeps it.
fn match_numbered(pattern: &str, comm: &str) -> Option<u32> {
    let (prefix, suffix) = pattern.split_once("{}")?;
    let rest = comm.strip_prefix(prefix)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (number, tail) = rest.split_at(digits);
    let room = COMM_LEN.saturating_sub(prefix.len() + digits);
    (tail == &suffix[..suffix.len().min(room)]).then(|| number.parse().ok()).flatten()
}

/// One thread of the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmThread {
    pub tid: u32,
    pub role: ThreadRole,
    /// Address of its `ErtsSchedulerData` (schedulers only), once checked: the data at that
    /// address carries the thread's number.
    pub scheduler_data: Option<u64>,
}

/// The VM's threads, now. A scheduler's data is found in its kind's array and kept only when
/// its number field equals the thread's number (an array or offset that is wrong for this
/// build gives no address rather than a wrong one).
pub fn vm_threads(target: &BeamTarget) -> Vec<VmThread> {
    let arrays = SchedulerArrays::read(target);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", target.pid)) else { return Vec::new() };
    let mut threads: Vec<VmThread> = tasks
        .flatten()
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let role = classify(&target.table.threads, comm.trim_end_matches('\n'));
            let scheduler_data = match role {
                ThreadRole::Scheduler(kind, n) => arrays.data_of(target, kind, n),
                _ => None,
            };
            Some(VmThread { tid, role, scheduler_data })
        })
        .collect();
    threads.sort_by_key(|t| t.tid);
    threads
}

/// The bases of the three scheduler-data arrays, as read from the VM (0 when unreadable).
struct SchedulerArrays {
    normal: u64,
    dirty_cpu: u64,
    dirty_io: u64,
}

impl SchedulerArrays {
    fn read(target: &BeamTarget) -> SchedulerArrays {
        let g = &target.table.globals;
        let base = |symbol: &str| {
            target.symbol_address(symbol).and_then(|a| target.mem.read_u64(a, "scheduler data array").ok()).unwrap_or(0)
        };
        SchedulerArrays { normal: base(g.schedulers), dirty_cpu: base(g.dirty_cpu_schedulers), dirty_io: base(g.dirty_io_schedulers) }
    }

    fn data_of(&self, target: &BeamTarget, kind: SchedulerKind, n: u32) -> Option<u64> {
        let t: &BuildTable = target.table;
        let (base, number_field) = match kind {
            SchedulerKind::Normal => (self.normal, t.scheduler.no),
            SchedulerKind::DirtyCpu => (self.dirty_cpu, t.scheduler.dirty_no),
            SchedulerKind::DirtyIo => (self.dirty_io, t.scheduler.dirty_no),
        };
        if base == 0 || n == 0 {
            return None;
        }
        let esdp = base.checked_add(u64::from(n - 1).checked_mul(t.scheduler.aligned_size)?)?;
        let stored = target.mem.read_u64(esdp + number_field, "scheduler number").ok()?;
        (stored == u64::from(n)).then_some(esdp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::{DEBIAN12_OTP25, DEBIAN13_OTP27};

    #[test]
    fn thread_names_of_otp25_and_otp26_plus() {
        let (o25, o27) = (&DEBIAN12_OTP25.threads, &DEBIAN13_OTP27.threads);
        assert_eq!(classify(o25, "1_scheduler"), ThreadRole::Scheduler(SchedulerKind::Normal, 1));
        assert_eq!(classify(o25, "2_dirty_cpu_sch"), ThreadRole::Scheduler(SchedulerKind::DirtyCpu, 2));
        assert_eq!(classify(o25, "1_dirty_io_sche"), ThreadRole::Scheduler(SchedulerKind::DirtyIo, 1));
        assert_eq!(classify(o25, "10_dirty_io_sch"), ThreadRole::Scheduler(SchedulerKind::DirtyIo, 10));
        assert_eq!(classify(o25, "1_aux"), ThreadRole::Aux);
        assert_eq!(classify(o25, "0_poller"), ThreadRole::Poller);
        assert_eq!(classify(o25, "async_1"), ThreadRole::Async);
        assert_eq!(classify(o25, "sys_sig_dispatc"), ThreadRole::Dispatcher);
        assert_eq!(classify(o25, "beam.smp"), ThreadRole::Other("beam.smp".into()));
        // A name cut short anywhere else is not a match.
        assert_eq!(classify(o25, "1_dirty_io"), ThreadRole::Other("1_dirty_io".into()));
        assert_eq!(classify(o25, "erts_sched_1"), ThreadRole::Other("erts_sched_1".into()));
        assert_eq!(classify(o27, "erts_sched_3"), ThreadRole::Scheduler(SchedulerKind::Normal, 3));
        assert_eq!(classify(o27, "erts_dcpus_1"), ThreadRole::Scheduler(SchedulerKind::DirtyCpu, 1));
        assert_eq!(classify(o27, "erts_dios_10"), ThreadRole::Scheduler(SchedulerKind::DirtyIo, 10));
        assert_eq!(classify(o27, "erts_aux_1"), ThreadRole::Aux);
        assert_eq!(classify(o27, "erts_poll_0"), ThreadRole::Poller);
        assert_eq!(classify(o27, "erts_async_1"), ThreadRole::Async);
        assert_eq!(classify(o27, "erts_smsg_disp"), ThreadRole::Dispatcher);
        assert_eq!(classify(o27, "1_scheduler"), ThreadRole::Other("1_scheduler".into()));
    }
}

/// How many processes and ports wait in each normal scheduler's run queue now, in queue order;
/// `None` when the build's run-queue symbols are unknown here.
pub fn run_queue_lengths(target: &BeamTarget) -> Option<Vec<u32>> {
    let g = &target.table.globals;
    let base = target.mem.read_u64(target.symbol_address(g.run_queues)?, "run queue array").ok()?;
    let count = target.mem.read_u64(target.symbol_address(g.run_queue_count)?, "run queue count").ok()?;
    // A VM has at most 1024 schedulers; anything else is not a count.
    if base == 0 || count == 0 || count > 1024 {
        return None;
    }
    let l = &target.table.run_queue;
    (0..count).map(|i| target.mem.read_u32(base + i * l.aligned_size + l.len, "run queue length").ok()).collect()
}
