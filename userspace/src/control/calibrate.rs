//! What one hook hit costs the observed VM, measured on this machine at start-up: the send
//! hook's program is attached to a function of scope-probe's own, which is then called many
//! times with and without it. The difference per call is the cost of a hit (the trap into the
//! kernel and back, and the program); the overhead controller multiplies it by the hits it
//! counts in the VM.

use std::time::Instant;

use anyhow::Result;
use beam_probes::BuildTable;

use crate::source::bpf::CalibrationProbe;

/// Calls per measurement: ~30 ms with the probe at ~1.5 µs a hit.
const CALLS: u64 = 20_000;
/// Used when calibration is not possible (a stripped scope-probe): measured on the
/// development machines (1.3-1.7 µs, DESIGN.md).
pub const DEFAULT_HIT_SECONDS: f64 = 1.5e-6;

/// The function the calibration probe sits on. Its arguments look like the send hook's: two
/// pointers to "processes" whose first word is a pid term. It opens with a push, as the VM's
/// hooked functions do (after `endbr64` where there is one): the kernel emulates that
/// instruction when it steps over the probe, where others it must single-step, which costs
/// twice as much and would overstate the cost.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn scope_probe_calibration_point(sender: *const u64, receiver: *const u64) -> u64 {
    core::arch::naked_asm!("push rbp", "mov rax, rdi", "xor rax, rsi", "pop rbp", "ret")
}

fn time_calls(sender: &[u64], receiver: &[u64]) -> f64 {
    let started = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(scope_probe_calibration_point(
            std::hint::black_box(sender.as_ptr()),
            std::hint::black_box(receiver.as_ptr()),
        ));
    }
    started.elapsed().as_secs_f64()
}

/// A measurement made already: the cost is the machine's (its trap and the program), the
/// same for every VM, and taking it again would add ~0.5 s to each attach under `--all`.
static MEASURED: std::sync::Mutex<Option<f64>> = std::sync::Mutex::new(None);

/// Seconds one hook hit costs, the median of three measurements (once per run of
/// scope-probe).
pub fn hit_seconds(table: &BuildTable) -> Result<f64> {
    let mut measured = MEASURED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = *measured {
        return Ok(s);
    }
    let s = measure(table)?;
    *measured = Some(s);
    Ok(s)
}

fn measure(table: &BuildTable) -> Result<f64> {
    // Two fake processes holding a pid term where the table says a Process has it.
    let words = (table.process.id / 8 + 1) as usize;
    let mut sender = vec![0u64; words];
    let mut receiver = vec![0u64; words];
    sender[words - 1] = (1 << 4) | table.pid.tag;
    receiver[words - 1] = (2 << 4) | table.pid.tag;
    let probe = CalibrationProbe::load(table, scope_probe_calibration_point as *const () as usize)?;
    let mut costs = Vec::new();
    for _ in 0..3 {
        let without = time_calls(&sender, &receiver);
        let link = probe.attach()?;
        let with = time_calls(&sender, &receiver);
        drop(link);
        costs.push(((with - without) / CALLS as f64).max(0.0));
    }
    costs.sort_by(f64::total_cmp);
    Ok(costs[1])
}
