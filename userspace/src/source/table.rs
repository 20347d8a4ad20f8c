//! The sources read from outside the VM on their own timers, so that detectors see the VM
//! whether or not anyone scrapes: the process table (mailboxes, memory, identities), and the
//! VM's /proc facts (CPU per thread, resident memory). The table's interval stretches when
//! reads get slow (a VM with a million processes), so a read never takes more than a twentieth
//! of the time; /proc is read every second (it costs next to nothing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use beam_probes::BeamTarget;

use std::collections::HashMap;

use beam_probes::snapshot::ProcessStatus;

use crate::enrich::process_view::current_function;
use crate::enrich::symbolize::Symbolizer;
use crate::event::{ProcRead, TableRead, now_ns};
use crate::pipeline::FanOut;
use crate::source::procstat;

/// A table read may take at most this share of the interval.
const MAX_SHARE: u32 = 20;
const PROC_EVERY: Duration = Duration::from_secs(1);

pub struct TableSource {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// One read of the process table, stamped, each process's current function named (when a
/// symbolizer is at hand).
pub fn read_table(target: &BeamTarget, symbolizer: Option<&mut Symbolizer>) -> TableRead {
    let ts_ns = now_ns();
    let snapshot = beam_probes::snapshot::snapshot(&target.process_table()).ok();
    let current: Vec<Arc<str>> = match (&snapshot, symbolizer) {
        (Some(s), Some(sym)) => {
            let mut names = HashMap::new();
            s.processes.iter().map(|p| current_function(p, sym, &mut names)).collect()
        }
        _ => Vec::new(),
    };
    let processes = snapshot.iter().flat_map(|s| s.processes.iter().zip(&current)).map(|(p, f)| (p.term, p.status, f.as_ref()));
    let waits = call_waits(target, processes);
    let ets = beam_probes::ets::of(target).ok();
    let ports = beam_probes::ports::of(target).ok();
    let memory = beam_probes::vm_memory::of(target).ok();
    TableRead { vm: target.pid, ts_ns, snapshot, current, waits, ets, ports, memory }
}

/// Callers blocked in a call (waiting, in one of the build's call-wait functions), each with the
/// processes it monitors: whom it waits on. From (pid term, status, current function).
pub fn call_waits<'a>(target: &BeamTarget, processes: impl Iterator<Item = (u64, ProcessStatus, &'a str)>) -> Vec<(u64, Vec<u64>)> {
    let table = target.process_table();
    processes
        .filter(|(_, status, f)| *status == ProcessStatus::Waiting && target.table.otp.call_waits.contains(f))
        .filter_map(|(term, _, _)| {
            let ptr = table.process_ptr(term).ok()??;
            Some((term, beam_probes::monitors::monitored_processes(&target.mem, target.table, ptr)?))
        })
        .collect()
}

/// One read of the VM's /proc facts, stamped.
pub fn read_proc(target: &BeamTarget) -> ProcRead {
    let ts_ns = now_ns();
    let scheduler_cpu = procstat::scheduler_cpu(target.pid, &target.table.threads);
    ProcRead {
        vm: target.pid,
        ts_ns,
        scheduler_cpu,
        resident_bytes: procstat::resident_bytes(target.pid),
        alive: target.is_alive(),
        run_queues: beam_probes::threads::run_queue_lengths(target).unwrap_or_default(),
    }
}

/// Runs the work `make` makes (on the new thread: it may hold what cannot cross threads) until
/// `stop`; the next run is `interval(time the last took)` later.
fn every<W: FnMut() + 'static>(
    name: &str,
    stop: Arc<AtomicBool>,
    interval: impl Fn(Duration) -> Duration + Send + 'static,
    make: impl FnOnce() -> W + Send + 'static,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut work = make();
            let mut next = Instant::now() + interval(Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let started = Instant::now();
                work();
                next = Instant::now() + interval(started.elapsed());
            }
        })
        .with_context(|| format!("starting the {name} thread"))
}

impl TableSource {
    /// Reads both once now (so the first scrape has them), then each on its own timer.
    pub fn start(target: Arc<BeamTarget>, interval: Duration, fanout: FanOut) -> Result<TableSource> {
        fanout.proc(&read_proc(&target));
        let stop = Arc::new(AtomicBool::new(false));
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let table = {
            let (target, fanout) = (target.clone(), fanout.clone());
            every("scope-probe-table", stop.clone(), move |took| interval.max(took * MAX_SHARE), move || {
                // The symbolizer (blazesym) is not Send: the thread makes its own, and reads the
                // table once at once, so that the first scrape has it.
                let mut symbolizer = Symbolizer::new(&target).ok();
                fanout.table(&Arc::new(read_table(&target, symbolizer.as_mut())));
                let _ = first_tx.send(());
                move || fanout.table(&Arc::new(read_table(&target, symbolizer.as_mut())))
            })?
        };
        let _ = first_rx.recv();
        let proc = every("scope-probe-proc", stop.clone(), |_| PROC_EVERY, move || move || fanout.proc(&read_proc(&target)))?;
        Ok(TableSource { stop, threads: vec![table, proc] })
    }
}

impl Drop for TableSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
