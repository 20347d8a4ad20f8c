//! A recording's CPU samples as a profile (the stacks `profile` draws), for the report's flame
//! graph and the diff's differential one.

use std::sync::Arc;

use super::format::Owner;
use super::model::Recording;
use super::select::Filter;
use crate::aggregate::stacks::Profile;

/// The samples the filter selects, root first. `by_process` puts the process as the root
/// frame (`<0.80.0> name`); samples outside processes always start with what the thread did.
pub fn profile(rec: &Recording, f: &Filter, by_process: bool) -> Profile {
    let mut p = Profile::default();
    let mut names: std::collections::HashMap<u32, Arc<str>> = Default::default();
    let mut name = |id: u32| names.entry(id).or_insert_with(|| Arc::from(rec.name(id))).clone();
    for s in rec.samples.iter().filter(|s| f.time(s.t)) {
        let mut frames: Vec<Arc<str>> = Vec::with_capacity(s.frames.len() + 1);
        match s.owner {
            Owner::Process(pid) => {
                if !f.process(rec, pid) {
                    continue;
                }
                p.attributed += 1;
                if by_process {
                    frames.push(Arc::from(rec.who(pid).as_str()));
                }
            }
            // Thread samples carry what the thread did as their first frame already.
            Owner::Thread(_) if f.pids.is_some() => continue,
            Owner::Thread(_) => {}
        }
        frames.extend(s.frames.iter().map(|&id| name(id)));
        p.add(frames);
    }
    let m = rec.meta();
    p.title = format!("CPU of {} (OTP {}), {:.1} s at {} Hz", m.vm.node, m.vm.otp_release, (f.to - f.from) as f64 / 1e9, m.frequency);
    p
}
