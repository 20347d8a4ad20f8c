//! A CPU sample made readable: whom it was for (an Erlang process, or what the thread was
//! doing) and its frames, root first: the Erlang callers, then the Erlang function or the C
//! functions the thread was in, then the kernel's.
//!
//! - Attribution: a scheduler thread's own data names the process it runs, in JIT code, C or
//!   the kernel alike. The JIT's process register (r13) is the cross-check inside JIT code, and
//!   the attribution on threads whose scheduler data is unknown.
//! - Erlang callers: JIT frame pointers when the VM has them (`+JPperf`) and the thread is in
//!   JIT code; otherwise the continuation pointers on the process's Erlang stack
//!   ([`super::erlang_stack`]).
//! - C frames: unwound with the binaries' `.eh_frame` ([`super::unwind`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beam_probes::BeamTarget;
use beam_probes::builds::SleepFlags;
use beam_probes::threads::{SchedulerKind, ThreadRole, vm_threads};

use super::erlang_stack::{ReturnSites, continuation_pointers};
use super::unwind::NativeUnwinder;
use crate::enrich::names::NameCache;
use crate::source::sampler::Sample;
use crate::enrich::symbolize::Symbolizer;

/// How often thread names and mappings are read again when a sample comes from a thread or a
/// binary not seen before.
const RELIST_EVERY: Duration = Duration::from_secs(2);

/// Whom a sample was for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// An Erlang process (its pid term).
    Process(u64),
    /// No process: what the thread was doing (`[scheduler 1: idle]`, `[aux]`...).
    Thread(Arc<str>),
}

/// One sample's stack, ready for a flame graph or a top-N.
#[derive(Debug, Clone)]
pub struct SampleStack {
    pub owner: Owner,
    /// Root first; the owner is not among them.
    pub frames: Vec<Arc<str>>,
    /// The innermost Erlang function: where the process was, or what called into C.
    pub erlang_leaf: Option<Arc<str>>,
    /// The innermost C function, when the sample was in C.
    pub native_leaf: Option<Arc<str>>,
    /// Whether the process's whole Erlang stack was read (down to its first frame).
    pub complete: bool,
    /// Inside JIT code, whether the JIT's process register named the process the scheduler
    /// data did (`None` when one of them is missing or the thread was not in JIT code).
    pub register_agrees: Option<bool>,
    /// The scheduler the thread is, when it is one.
    pub scheduler: Option<(SchedulerKind, u32)>,
    /// Whether the thread was at work (running a process or a port, or scheduling), rather than
    /// spinning or going to sleep for want of work.
    pub working: bool,
}

impl SampleStack {
    /// The function to rank this sample under: the Erlang function, with the C function it
    /// was in beside it, or what the thread was doing.
    pub fn top_function(&self) -> (Arc<str>, Option<Arc<str>>) {
        match (&self.erlang_leaf, &self.owner) {
            (Some(e), _) => (e.clone(), self.native_leaf.clone()),
            (None, Owner::Thread(label)) => (label.clone(), self.native_leaf.clone()),
            (None, Owner::Process(_)) => (
                self.native_leaf.clone().unwrap_or_else(|| Arc::from("[unknown]")),
                None,
            ),
        }
    }
}

pub struct StackBuilder {
    pub symbolizer: Symbolizer,
    unwinder: NativeUnwinder,
    sites: ReturnSites,
    names: NameCache,
    roles: HashMap<u32, ThreadRole>,
    listed: Instant,
    sleep: SleepFlags,
    cp_alignment: u64,
    by_process: bool,
}

impl StackBuilder {
    pub fn new(target: &BeamTarget, symbolizer: Symbolizer, by_process: bool) -> StackBuilder {
        StackBuilder {
            symbolizer,
            unwinder: NativeUnwinder::new(target.pid),
            sites: ReturnSites::new(target.pid),
            names: NameCache::default(),
            roles: vm_threads(target).into_iter().map(|t| (t.tid, t.role)).collect(),
            listed: Instant::now(),
            sleep: target.table.scheduler.sleep_flags,
            cp_alignment: target.table.jit.cp_alignment,
            by_process,
        }
    }

    /// The Erlang process a sample belongs to: its scheduler's, or on a thread whose
    /// scheduler data is unknown, the JIT register's while JIT code runs.
    pub fn process_of(&self, s: &Sample) -> Option<u64> {
        if s.scheduler {
            return s.process;
        }
        s.process_reg.filter(|_| !s.in_kernel && self.symbolizer.in_jit(s.ip))
    }

    /// The sample's owner and frames (with the owner as the root frame when building by
    /// process).
    pub fn build(&mut self, target: &BeamTarget, s: &Sample) -> SampleStack {
        let process = self.process_of(s);
        let in_jit = self.symbolizer.in_jit(s.ip);
        let mut frames: Vec<Arc<str>> = Vec::new();
        let mut erlang_leaf = None;
        let mut complete = false;
        if process.is_some() {
            let callers = self.erlang_callers(s, in_jit);
            complete = s.estack_complete && callers.len() < super::erlang_stack::MAX_FRAMES;
            erlang_leaf = callers.last().cloned();
            frames.extend(callers);
        }
        // Where the thread was: JIT code, or C frames unwound from the native stack.
        let mut native_leaf = None;
        if in_jit {
            let leaf = self.symbolizer.name(s.ip);
            if let Some(f) = self.symbolizer.erlang_function(s.ip) {
                erlang_leaf = Some(f);
            }
            frames.push(leaf);
        } else {
            let mut native = self.unwinder.unwind(s.ip, s.sp, s.bp, &s.ustack);
            if native.frames.is_empty() && self.listed.elapsed() >= RELIST_EVERY {
                // A binary mapped since (a NIF library loaded later).
                self.listed = Instant::now();
                self.unwinder.refresh();
                native = self.unwinder.unwind(s.ip, s.sp, s.bp, &s.ustack);
            }
            if native.frames.is_empty() {
                frames.push(self.symbolizer.name(s.ip));
                native_leaf = frames.last().cloned();
            } else {
                let mut names: Vec<Arc<str>> = native
                    .frames
                    .iter()
                    .enumerate()
                    // A return address is the instruction after the call: name the call.
                    .map(|(i, &a)| self.symbolizer.name(if i == 0 { a } else { a - 1 }))
                    .collect();
                if native.exit.is_none() {
                    trim_thread_start(&mut names);
                }
                native_leaf = names.first().cloned();
                frames.extend(names.into_iter().rev());
            }
        }
        if s.in_kernel {
            for &a in s.kstack.iter().rev() {
                frames.push(self.symbolizer.kernel_name(a));
            }
        }
        let owner = match process {
            Some(pid) => Owner::Process(pid),
            None => Owner::Thread(Arc::from(self.thread_label(target, s).as_str())),
        };
        let scheduler = match self.role(target, s.tid) {
            ThreadRole::Scheduler(kind, n) => Some((kind, n)),
            _ => None,
        };
        let working = process.is_some()
            || s.port.is_some()
            || (s.scheduler && scheduler_state(&self.sleep, s.sleep_flags) == "scheduling");
        let register_agrees = match (s.process, s.process_reg) {
            (Some(a), Some(b)) if s.scheduler && in_jit && !s.in_kernel => Some(a == b),
            _ => None,
        };
        if self.by_process || matches!(owner, Owner::Thread(_)) {
            frames.insert(0, self.owner_frame(target, &owner));
        }
        SampleStack { owner, frames, erlang_leaf, native_leaf, complete, register_agrees, scheduler, working }
    }

    /// The Erlang functions that called the one the sample is in, outermost first.
    fn erlang_callers(&mut self, s: &Sample, in_jit: bool) -> Vec<Arc<str>> {
        // JIT frame pointers (+JPperf): the kernel walked them; the first address is the IP.
        if in_jit && self.symbolizer.frame_pointers() && s.stack.len() > 1 {
            let mut out: Vec<Arc<str>> =
                s.stack[1..].iter().filter_map(|&ra| self.symbolizer.erlang_function(ra - 1)).collect();
            out.reverse();
            return out;
        }
        let symbolizer = &mut self.symbolizer;
        let cps = continuation_pointers(
            &s.estack,
            self.cp_alignment,
            |w| symbolizer.erlang_function(w - 1).is_some(),
            &mut self.sites,
        );
        let mut out: Vec<Arc<str>> = cps.iter().filter_map(|&cp| self.symbolizer.erlang_function(cp - 1)).collect();
        out.reverse();
        out
    }

    fn owner_frame(&mut self, target: &BeamTarget, owner: &Owner) -> Arc<str> {
        match owner {
            Owner::Thread(label) => label.clone(),
            Owner::Process(pid) => {
                let name = self.names.name(target, *pid);
                let pid = target.format_pid(*pid);
                Arc::from(if name.is_empty() { pid } else { format!("{pid} {name}") }.as_str())
            }
        }
    }

    fn role(&mut self, target: &BeamTarget, tid: u32) -> ThreadRole {
        if !self.roles.contains_key(&tid) && self.listed.elapsed() >= RELIST_EVERY {
            self.listed = Instant::now();
            self.roles = vm_threads(target).into_iter().map(|t| (t.tid, t.role)).collect();
        }
        self.roles.get(&tid).cloned().unwrap_or(ThreadRole::Other(String::from("?")))
    }

    /// What a thread does when it runs no process.
    fn thread_label(&mut self, target: &BeamTarget, s: &Sample) -> String {
        match self.role(target, s.tid) {
            ThreadRole::Scheduler(kind, n) => {
                let state = if !s.scheduler {
                    return format!("[{} {n}]", kind.display());
                } else if s.port.is_some() {
                    "port".to_owned()
                } else {
                    scheduler_state(&self.sleep, s.sleep_flags).to_owned()
                };
                format!("[{} {n}: {state}]", kind.display())
            }
            ThreadRole::Aux => "[aux]".into(),
            ThreadRole::Poller => "[poll]".into(),
            ThreadRole::Async => "[async]".into(),
            ThreadRole::Dispatcher => "[signal dispatcher]".into(),
            ThreadRole::Other(name) => format!("[other thread: {name}]"),
        }
    }
}

/// C frames unwound to the thread's start (leaf first) lose the frames every thread of that
/// kind shares at its root: libc's thread start and the VM's unnamed thread wrappers after it.
fn trim_thread_start(names: &mut Vec<Arc<str>>) {
    const THREAD_START: &[&str] = &["clone", "clone3", "start_thread", "__clone", "__clone3"];
    if let Some(i) = names.iter().position(|n| THREAD_START.contains(&n.as_ref())) {
        names.truncate(i);
    }
    while names.len() > 1 && names.last().is_some_and(|n| n.starts_with('[')) {
        names.pop();
    }
}

/// A scheduler with no process or port: spinning while it waits for work, idle (going to
/// sleep or waking up), or scheduling (picking the next process, timers, misc work).
fn scheduler_state(f: &SleepFlags, flags: u32) -> &'static str {
    if flags & f.waiting == 0 {
        "scheduling"
    } else if flags & (f.tse_sleeping | f.poll_sleeping) != 0 {
        "idle"
    } else if flags & f.sleeping != 0 {
        "spin"
    } else {
        "idle"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_start_frames_are_trimmed() {
        let mut names: Vec<Arc<str>> = ["memcpy", "erts_garbage_collect_nobump", "erts_dirty_process_main", "[beam.smp+0x6e050]", "[beam.smp+0x2e9b00]", "start_thread", "clone3"]
            .into_iter()
            .map(Arc::from)
            .collect();
        trim_thread_start(&mut names);
        assert_eq!(names.iter().map(|n| n.as_ref()).collect::<Vec<_>>(), ["memcpy", "erts_garbage_collect_nobump", "erts_dirty_process_main"]);
    }

    #[test]
    fn scheduler_states_from_the_sleep_flags() {
        let f = beam_probes::builds::DEBIAN12_OTP25.scheduler.sleep_flags;
        assert_eq!(scheduler_state(&f, 0), "scheduling");
        assert_eq!(scheduler_state(&f, f.waiting | f.sleeping), "spin");
        assert_eq!(scheduler_state(&f, f.waiting | f.sleeping | f.tse_sleeping), "idle");
        assert_eq!(scheduler_state(&f, f.waiting | f.sleeping | f.poll_sleeping), "idle");
    }
}
