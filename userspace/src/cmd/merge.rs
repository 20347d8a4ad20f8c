//! `scope-probe merge a.scope b.scope -o all.scope`: recordings of several VMs (nodes, hosts)
//! as one recording on one clock, which `replay`, `export` and `report` read like any other.
//!
//! Each recording's times are placed after the earliest start: exactly when the recordings
//! were made in one boot of one host (they share its monotonic clock: same `boot_id`), else by
//! the wall clock each one read at its start (as good as the hosts' clock synchronisation).
//! Pids are kept apart by the index of their VM in the pid term's top bits
//! ([`VM_SHIFT`]); names are interned afresh.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cli::MergeArgs;
use crate::record::format::{self, Entry, MergedVm, Meta, Owner, VM_SHIFT, What};
use crate::record::model::Recording;

/// Raw bytes per block, like the recorder's.
const BLOCK_BYTES: usize = 256 << 10;

pub fn run(args: MergeArgs) -> Result<()> {
    merge(&args.recordings, &args.output)
}

/// Writes the recordings at `paths` merged into `output` (also how `record` of several VMs
/// ends: each VM recorded to a part of its own, then merged).
pub fn merge(paths: &[PathBuf], output: &Path) -> Result<()> {
    let recs: Vec<Recording> = paths.iter().map(|p| crate::cmd::replay::open(p)).collect::<Result<_>>()?;
    for (r, path) in recs.iter().zip(paths) {
        if !r.meta().vms.is_empty() {
            bail!("{} is a merged recording already: merge the recordings it was made of", path.display());
        }
        if let Some(term) = r.pids.keys().find(|t| *t >> VM_SHIFT != 0) {
            bail!("{}: pid term {term:#x} uses the bits a merged recording keeps the VM in", path.display());
        }
    }
    let (starts, clock) = align(&recs);
    let earliest = (0..recs.len()).min_by_key(|i| starts[*i]).expect("two recordings at least");
    let base = recs[earliest].meta();
    let vms: Vec<MergedVm> = recs
        .iter()
        .zip(paths)
        .zip(&starts)
        .map(|((r, path), start)| MergedVm {
            vm: r.meta().vm.clone(),
            file: path.display().to_string(),
            offset_ns: (start - starts[earliest]) as u64,
        })
        .collect();
    let meta = Meta { vm: recs[0].meta().vm.clone(), vms: vms.clone(), clock: Some(clock.clone()), ..base.clone() };
    let mut out = Out::create(output, &meta)?;
    for (i, r) in recs.iter().enumerate() {
        copy(r, i as u64, meta.started_monotonic_ns + vms[i].offset_ns, &mut out)?;
    }
    out.finish()?;
    for v in &vms {
        eprintln!("scope-probe: {} (os pid {}) from {}, starting at +{:.3} s", v.vm.node, v.vm.os_pid, v.file, v.offset_ns as f64 / 1e9);
    }
    eprintln!("scope-probe: clocks: {clock}");
    eprintln!("scope-probe: wrote {} ({})", output.display(), crate::units::bytes(out.bytes));
    Ok(())
}

/// Each recording's start on one clock (ns), and how: one host's monotonic clock when all were
/// made in its one boot, else the wall clock.
fn align(recs: &[Recording]) -> (Vec<i128>, String) {
    let boot = &recs[0].meta().boot_id;
    if !boot.is_empty() && recs.iter().all(|r| &r.meta().boot_id == boot) {
        let starts = recs.iter().map(|r| r.meta().started_monotonic_ns as i128).collect();
        return (starts, "one host's monotonic clock (recorded in one boot): aligned exactly".into());
    }
    let starts = recs.iter().map(|r| (r.meta().started_unix * 1e9) as i128).collect();
    (
        starts,
        "the wall clock each recording read at its start: aligned as well as the hosts' clocks agree (NTP: typically a few ms)"
            .into(),
    )
}

/// The merged file being written: its own name ids, entries in blocks.
struct Out {
    file: std::io::BufWriter<std::fs::File>,
    raw: Vec<u8>,
    names: HashMap<String, u32>,
    bytes: u64,
}

impl Out {
    fn create(path: &Path, meta: &Meta) -> Result<Out> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = Out { file: std::io::BufWriter::new(file), raw: Vec::new(), names: HashMap::new(), bytes: 0 };
        let header = format::header(meta);
        out.file.write_all(&header)?;
        out.bytes += header.len() as u64;
        Ok(out)
    }

    fn push(&mut self, e: &Entry) -> Result<()> {
        format::encode_entry(e, &mut self.raw);
        if self.raw.len() >= BLOCK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.raw.is_empty() {
            let block = format::block(&self.raw);
            self.file.write_all(&block)?;
            self.bytes += block.len() as u64;
            self.raw.clear();
        }
        Ok(())
    }

    /// The merged id of a text, defined on first use.
    fn name(&mut self, text: &str) -> Result<u32> {
        if let Some(&id) = self.names.get(text) {
            return Ok(id);
        }
        let id = self.names.len() as u32;
        self.names.insert(text.to_owned(), id);
        self.push(&Entry::Name { id, text: text.to_owned() })?;
        Ok(id)
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        self.file.flush()?;
        Ok(())
    }
}

/// Writes recording `r` as VM `vm` of the merged file, its times from `start` (monotonic ns).
fn copy(r: &Recording, vm: u64, start: u64, out: &mut Out) -> Result<()> {
    let pid = |term: u64| term | (vm << VM_SHIFT);
    for (term, text) in &r.pids {
        out.push(&Entry::Pid { term: pid(*term), text: text.clone() })?;
    }
    let name = |out: &mut Out, id: u32| out.name(r.name(id));
    for (term, call) in &r.spawned {
        let call = out.name(call)?;
        out.push(&Entry::InitialCall { pid: pid(*term), call })?;
    }
    for e in &r.events {
        let what = match e.what {
            What::Send { from, to } => What::Send { from: pid(from), to: pid(to) },
            What::SendToAlias { from, to } => What::SendToAlias { from: pid(from), to: pid(to) },
            What::Schedule { pid: p, run_ns, reductions } => What::Schedule { pid: pid(p), run_ns, reductions },
            What::Gc { pid: p, duration_ns } => What::Gc { pid: pid(p), duration_ns },
            What::Spawn { parent, child } => What::Spawn { parent: parent.map(pid), child: pid(child) },
            What::Exit { pid: p } => What::Exit { pid: pid(p) },
            What::DistSend { from, node, to } => What::DistSend { from: pid(from), node: name(out, node)?, to: name(out, to)? },
            What::DistReceive { to, node, from } => What::DistReceive { to: pid(to), node: name(out, node)?, from: name(out, from)? },
        };
        out.push(&Entry::Event { ts: start + e.t, tid: e.tid, what })?;
    }
    for s in &r.samples {
        let owner = match s.owner {
            Owner::Process(p) => Owner::Process(pid(p)),
            Owner::Thread(label) => Owner::Thread(name(out, label)?),
        };
        let frames = s.frames.iter().map(|f| name(out, *f)).collect::<Result<Vec<u32>>>()?;
        let erlang_leaf = s.erlang_leaf.map(|l| name(out, l)).transpose()?;
        let native_leaf = s.native_leaf.map(|l| name(out, l)).transpose()?;
        // Readers do not keep `working`: a sample for a process was at work.
        let working = matches!(s.owner, Owner::Process(_));
        out.push(&Entry::Sample { ts: start + s.t, tid: s.tid, owner, frames, erlang_leaf, native_leaf, scheduler: s.scheduler, working })?;
    }
    for t in &r.tables {
        let mut processes = t.processes.clone();
        for p in &mut processes {
            p.pid = pid(p.pid);
            for field in [&mut p.name, &mut p.label, &mut p.initial_call, &mut p.ancestor, &mut p.current] {
                *field = field.map(|id| name(out, id)).transpose()?;
            }
            p.status = name(out, p.status)?;
        }
        let waits = t.waits.iter().map(|(w, on)| (pid(*w), on.iter().map(|p| pid(*p)).collect())).collect();
        out.push(&Entry::Table { ts: start + t.t, processes, waits })?;
    }
    for p in &r.procs {
        let (cpu, resident_bytes, run_queues) = (p.cpu.clone(), p.resident_bytes, p.run_queues.clone());
        out.push(&Entry::VmProc { vm: vm as u32, ts: start + p.t, cpu, resident_bytes, run_queues })?;
    }
    for w in &r.windows {
        out.push(&Entry::Window { ts: start + w.t, capabilities: w.capabilities.clone(), open: w.open })?;
    }
    for f in &r.findings {
        let mut json = f.json.clone();
        if let Some(o) = json.as_object_mut() {
            o.insert("node".into(), r.meta().vm.node.clone().into());
        }
        out.push(&Entry::Finding { ts: start + f.t, json: json.to_string() })?;
    }
    if r.lost > 0 {
        out.push(&Entry::Lost { ts: start, entries: r.lost })?;
    }
    Ok(())
}
