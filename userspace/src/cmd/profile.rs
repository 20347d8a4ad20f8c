//! `scope-probe profile`: samples the VM's CPU for a while and writes a flame graph whose
//! frames read `Module:function/arity`, optionally split by Erlang process. Several VMs share
//! one graph, a root frame each (`a@host (pid N)`).


use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use beam_probes::BeamTarget;

use crate::cli::{ProfileArgs, ProfileFormat};
use crate::enrich::stack::StackBuilder;
use crate::source::procstat;
use crate::source::sampler::{Sample, SamplerThread};
use crate::enrich::symbolize::Symbolizer;
use crate::aggregate::stacks::Profile;
use crate::export::{flamegraph, folded, speedscope};

/// One VM being profiled.
struct Profiled {
    target: Arc<BeamTarget>,
    builder: StackBuilder,
    sampler: Option<SamplerThread>,
    rx: Receiver<Sample>,
    /// The root frame its stacks go under when several VMs share one graph (`a@host (pid N)`).
    root: Option<Arc<str>>,
    cpu_before: CpuByThread,
    peak_rss: u64,
    lost: u64,
}

type CpuByThread = std::collections::BTreeMap<(procstat::ThreadKind, Option<u32>), f64>;

impl Profiled {
    /// Adds the samples waiting; how many there were.
    fn drain(&mut self, profile: &mut Profile) -> usize {
        let mut n = 0;
        while let Ok(s) = self.rx.try_recv() {
            add_sample(profile, &mut self.builder, &self.target, &s, self.root.as_ref());
            n += 1;
        }
        n
    }

    /// Stops sampling it (the samples taken are added first).
    fn stop(&mut self, profile: &mut Profile) -> Result<()> {
        if let Some(sampler) = self.sampler.take() {
            let stats = sampler.stats.clone();
            sampler.stop()?;
            self.lost = stats.lost_ring_buffer.load(Ordering::Relaxed) + stats.lost_channel.load(Ordering::Relaxed);
        }
        self.drain(profile);
        Ok(())
    }
}

pub fn run(args: ProfileArgs) -> Result<()> {
    crate::privileges::check()?;
    // Taken before anything attaches: Ctrl-C at any moment from here ends the run cleanly.
    let stop = stop_on_signals()?;
    let pids = if args.all_vms { beam_probes::target::running_vms() } else { args.pid.clone() };
    anyhow::ensure!(!pids.is_empty(), "no BEAM VM is running on this host");
    let mut targets = Vec::new();
    for pid in pids {
        match args.debug_info.open(pid) {
            Ok(t) => targets.push(t),
            // With --all-vms, a VM that exits or cannot be read is said and skipped.
            Err(e) if args.all_vms => eprintln!("scope-probe: warning: pid {pid}: {e:#}"),
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::ensure!(!targets.is_empty(), "none of the BEAM VMs on this host could be read");
    let several = targets.len() > 1;
    let format = args.format();
    // Open the output first: a bad path must fail before we sample for minutes.
    let mut out: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(BufWriter::new(
            File::create(&args.output).with_context(|| format!("cannot write {}", args.output.display()))?,
        ))
    };
    let mut vms = Vec::new();
    for target in targets {
        let target = Arc::new(target);
        let symbolizer = Symbolizer::new(&target)?;
        let builder = StackBuilder::new(&target, symbolizer, args.by_process);
        let (sampler, rx) = SamplerThread::start(target.clone(), args.frequency)?;
        let node = target.node_name().unwrap_or_else(|_| "nonode@nohost".into());
        let fp = builder.symbolizer.frame_pointers();
        eprintln!(
            "scope-probe: profiling pid {} ({node}, OTP {}, ERTS {}) at {} Hz for {}; JIT symbols: {} ({} known){}",
            target.pid,
            target.otp_release,
            target.erts_version,
            args.frequency,
            humantime::format_duration(args.duration),
            builder.symbolizer.jit_source().describe(),
            builder.symbolizer.jit_symbol_count(),
            if fp { "; JIT frame pointers" } else { "; Erlang stacks scanned (no JIT frame pointers)" },
        );
        let cpu_before = procstat::scheduler_cpu(target.pid, &target.table.threads);
        let peak_rss = procstat::resident_bytes(target.pid).unwrap_or(0);
        let root = several.then(|| Arc::from(format!("{node} (pid {})", target.pid)));
        vms.push(Profiled { target, builder, sampler: Some(sampler), rx, root, cpu_before, peak_rss, lost: 0 });
    }

    let mut profile = Profile::default();
    let mut ended = None;
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    while started.elapsed() < args.duration {
        if stop.load(Ordering::Relaxed) {
            ended = Some("interrupted");
            break;
        }
        let mut got = 0;
        for vm in &mut vms {
            got += vm.drain(&mut profile);
        }
        if got == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        if last_progress.elapsed() >= Duration::from_millis(if tty { 250 } else { 5000 }) {
            last_progress = Instant::now();
            let line = format!(
                "scope-probe: {:>5.1}s / {}  {} samples, {:.0}% attributed to Erlang processes",
                started.elapsed().as_secs_f64(),
                humantime::format_duration(args.duration),
                profile.samples,
                percent(profile.attributed, profile.samples)
            );
            if tty { eprint!("\r{line}") } else { eprintln!("{line}") }
            for vm in &mut vms {
                vm.peak_rss = vm.peak_rss.max(procstat::resident_bytes(vm.target.pid).unwrap_or(0));
                if vm.sampler.is_some() && !vm.target.is_alive() {
                    vm.stop(&mut profile)?;
                    if several {
                        eprintln!("{}scope-probe: pid {} exited; profiling the others", if tty { "\n" } else { "" }, vm.target.pid);
                    }
                }
            }
            if vms.iter().all(|vm| vm.sampler.is_none()) {
                ended = Some(if several { "targets exited" } else { "target exited" });
                break;
            }
        }
    }
    let elapsed = started.elapsed().min(args.duration);
    for vm in &mut vms {
        vm.peak_rss = vm.peak_rss.max(procstat::resident_bytes(vm.target.pid).unwrap_or(0));
        // Samples still queued belong to the run.
        vm.stop(&mut profile)?;
    }
    if tty {
        eprintln!();
    }
    let lost: u64 = vms.iter().map(|vm| vm.lost).sum();
    let who = if several {
        let names: Vec<String> = vms.iter().filter_map(|vm| vm.root.as_deref().map(str::to_owned)).collect();
        format!("{} VMs: {}", vms.len(), names.join(", "))
    } else {
        format!("pid {} (OTP {})", vms[0].target.pid, vms[0].target.otp_release)
    };
    profile.title = format!(
        "{who} · {} samples at {} Hz over {}",
        profile.samples,
        args.frequency,
        humantime::format_duration(round_ms(elapsed))
    );
    if let Some(why) = ended {
        profile.notes.push(format!("stopped early ({why}) after {}", humantime::format_duration(round_ms(elapsed))));
    }
    profile.notes.push(format!(
        "{:.0}% of samples attributed to Erlang processes, {:.0}% of those with their whole Erlang stack",
        percent(profile.attributed, profile.samples),
        percent(profile.complete, profile.attributed)
    ));
    if profile.register_checked > 0 {
        profile.notes.push(format!(
            "JIT register agrees with the schedulers in {:.1}% of {} JIT samples",
            100.0 * profile.register_agreed as f64 / profile.register_checked as f64,
            profile.register_checked
        ));
    }
    if lost > 0 {
        profile.notes.push(format!("{lost} samples lost"));
    }
    match format {
        ProfileFormat::Folded => folded::write(&profile, &mut out)?,
        ProfileFormat::Svg => flamegraph::write(&profile, &mut out)?,
        ProfileFormat::Speedscope => speedscope::write(&profile, &mut out)?,
    }
    out.flush()?;
    let peak_rss: u64 = vms.iter().map(|vm| vm.peak_rss).sum();
    eprintln!(
        "scope-probe: wrote {} ({}{}): {} samples, {} attributed to processes ({} with whole Erlang stacks), {} in \
         threads outside processes, {} lost; peak RSS {} MiB (VM{}), {} MiB (scope-probe)",
        args.output.display(),
        format.name(),
        ended.map(|why| format!(", {why} after {}", humantime::format_duration(round_ms(elapsed)))).unwrap_or_default(),
        profile.samples,
        profile.attributed,
        profile.complete,
        profile.samples - profile.attributed,
        lost,
        peak_rss / (1 << 20),
        if several { "s" } else { "" },
        procstat::own_peak_rss_bytes().unwrap_or(0) / (1 << 20),
    );
    for vm in &vms {
        let cpu_after = procstat::scheduler_cpu(vm.target.pid, &vm.target.table.threads);
        let whose = if several { format!(" of pid {}", vm.target.pid) } else { String::new() };
        eprintln!("scope-probe: scheduler CPU{whose} during the run: {}", cpu_summary(&vm.cpu_before, &cpu_after));
    }
    Ok(())
}

/// Adds one sample to the profile.
fn add_sample(profile: &mut Profile, builder: &mut StackBuilder, target: &BeamTarget, s: &Sample, root: Option<&Arc<str>>) {
    let mut stack = builder.build(target, s);
    if let Some(root) = root {
        stack.frames.insert(0, root.clone());
    }
    if matches!(stack.owner, crate::enrich::stack::Owner::Process(_)) {
        profile.attributed += 1;
        profile.complete += u64::from(stack.complete);
    }
    if let Some(agrees) = stack.register_agrees {
        profile.register_checked += 1;
        profile.register_agreed += u64::from(agrees);
    }
    profile.add(stack.frames);
}

/// Ctrl-C or SIGTERM ends the run early (what was sampled is still written); a second one
/// ends the program at once.
fn stop_on_signals() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone()).context("installing a signal handler")?;
        signal_hook::flag::register(sig, stop.clone()).context("installing a signal handler")?;
    }
    Ok(stop)
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

fn percent(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 * 100.0 / b as f64 }
}

fn cpu_summary(before: &CpuByThread, after: &CpuByThread) -> String {
    let mut by_kind: std::collections::BTreeMap<procstat::ThreadKind, f64> = Default::default();
    for (k, v) in after {
        *by_kind.entry(k.0).or_default() += v - before.get(k).copied().unwrap_or(0.0);
    }
    by_kind.iter().map(|(k, v)| format!("{} {:.2}s", k.label(), v.max(0.0))).collect::<Vec<_>>().join(", ")
}
