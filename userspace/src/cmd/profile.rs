//! `scope-probe profile`: samples the VM's CPU for a while and writes a flame graph whose
//! frames read `Module:function/arity`, optionally split by Erlang process.


use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::atomic::Ordering;
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

pub fn run(args: ProfileArgs) -> Result<()> {
    crate::privileges::check()?;
    let target = args.debug_info.open(args.pid)?;
    let format = args.format();
    // Open the output first: a bad path must fail before we sample for minutes.
    let mut out: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(BufWriter::new(
            File::create(&args.output).with_context(|| format!("cannot write {}", args.output.display()))?,
        ))
    };
    let target = std::sync::Arc::new(target);
    let symbolizer = Symbolizer::new(&target)?;
    let mut builder = StackBuilder::new(&target, symbolizer, args.by_process);
    let (sampler, rx) = SamplerThread::start(target.clone(), args.frequency)?;
    let fp = builder.symbolizer.frame_pointers();
    eprintln!(
        "scope-probe: profiling pid {} (OTP {}, ERTS {}) at {} Hz for {}; JIT symbols: {} ({} known){}",
        target.pid,
        target.otp_release,
        target.erts_version,
        args.frequency,
        humantime::format_duration(args.duration),
        builder.symbolizer.jit_source().describe(),
        builder.symbolizer.jit_symbol_count(),
        if fp { "; JIT frame pointers" } else { "; Erlang stacks scanned (no JIT frame pointers)" },
    );

    let stop = stop_on_signals()?;
    let cpu_before = procstat::scheduler_cpu(target.pid, &target.table.threads);
    let mut profile = Profile::default();
    let mut ended = None;
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let mut peak_rss = procstat::resident_bytes(target.pid).unwrap_or(0);
    while started.elapsed() < args.duration {
        if stop.load(Ordering::Relaxed) {
            ended = Some("interrupted");
            break;
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(s) => add_sample(&mut profile, &mut builder, &target, &s),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_progress.elapsed() >= Duration::from_millis(if tty { 250 } else { 5000 }) {
            last_progress = Instant::now();
            peak_rss = peak_rss.max(procstat::resident_bytes(target.pid).unwrap_or(0));
            let line = format!(
                "scope-probe: {:>5.1}s / {}  {} samples, {:.0}% attributed to Erlang processes",
                started.elapsed().as_secs_f64(),
                humantime::format_duration(args.duration),
                profile.samples,
                percent(profile.attributed, profile.samples)
            );
            if tty { eprint!("\r{line}") } else { eprintln!("{line}") }
            if !target.is_alive() {
                ended = Some("target exited");
                break;
            }
        }
    }
    let elapsed = started.elapsed().min(args.duration);
    peak_rss = peak_rss.max(procstat::resident_bytes(target.pid).unwrap_or(0));
    let stats = sampler.stats.clone();
    sampler.stop()?;
    // Samples still queued belong to the run.
    while let Ok(s) = rx.try_recv() {
        add_sample(&mut profile, &mut builder, &target, &s);
    }
    if tty {
        eprintln!();
    }
    let lost = stats.lost_ring_buffer.load(Ordering::Relaxed) + stats.lost_channel.load(Ordering::Relaxed);
    profile.title = format!(
        "pid {} (OTP {}) · {} samples at {} Hz over {}",
        target.pid,
        target.otp_release,
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
    let cpu_after = procstat::scheduler_cpu(target.pid, &target.table.threads);
    eprintln!(
        "scope-probe: wrote {} ({}{}): {} samples, {} attributed to processes ({} with whole Erlang stacks), {} in \
         threads outside processes, {} lost; peak RSS {} MiB (VM), {} MiB (scope-probe)",
        args.output.display(),
        format.name(),
        ended.map(|why| format!(", {why} after {}", humantime::format_duration(round_ms(elapsed)))).unwrap_or_default(),
        profile.samples,
        profile.attributed,
        profile.complete,
        profile.samples - profile.attributed,
        lost,
        peak_rss / (1 << 20),
        procstat::own_peak_rss_bytes().unwrap_or(0) / (1 << 20),
    );
    eprintln!("scope-probe: scheduler CPU during the run: {}", cpu_summary(&cpu_before, &cpu_after));
    Ok(())
}

/// Adds one sample to the profile.
fn add_sample(profile: &mut Profile, builder: &mut StackBuilder, target: &BeamTarget, s: &Sample) {
    let stack = builder.build(target, s);
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

fn cpu_summary(
    before: &std::collections::BTreeMap<(procstat::ThreadKind, Option<u32>), f64>,
    after: &std::collections::BTreeMap<(procstat::ThreadKind, Option<u32>), f64>,
) -> String {
    let mut by_kind: std::collections::BTreeMap<procstat::ThreadKind, f64> = Default::default();
    for (k, v) in after {
        *by_kind.entry(k.0).or_default() += v - before.get(k).copied().unwrap_or(0.0);
    }
    by_kind.iter().map(|(k, v)| format!("{} {:.2}s", k.label(), v.max(0.0))).collect::<Vec<_>>().join(", ")
}
