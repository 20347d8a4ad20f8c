//! The monitor probes (ebpf/monitor.bpf.c): loading with the build's offsets, attaching and
//! detaching each hook capability at runtime, and reading the kernel-side counters.
//!
//! Each capability comes from one source, planned by beam_probes (`CapabilityPlan`): the
//! uprobes on the build table's functions, or the binary's USDT probes through libbpf's USDT
//! support (libbpf decodes each site's argument format; the kernel raises the probe's semaphore
//! while a link exists and lowers it when the link is dropped). When a USDT attach fails, that
//! capability falls back to its uprobes and its plan says why.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::path::PathBuf;

use anyhow::{Context, Result};
use beam_probes::terms::PidIndex;
use beam_probes::{BeamTarget, Capability, CapabilityPlan, HookPoint, ProbeSource, ResolvedHook, ResolvedUsdt, UsdtPoint};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, ProgramMut, UsdtOpts};

pub mod monitor {
    #![allow(clippy::all, unused_imports, dead_code, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/monitor.skel.rs"));
}

use monitor::{MonitorSkel, MonitorSkelBuilder, types};

/// Number of kernel-side counters (`enum stat_id`).
pub const STAT_COUNT: usize = types::stat_id::STAT_NR.0 as usize;

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelStats(pub [u64; STAT_COUNT]);

impl KernelStats {
    pub fn get(&self, id: types::stat_id) -> u64 {
        self.0[id.0 as usize]
    }

    /// Events lost in the kernel, all reasons.
    pub fn lost(&self) -> u64 {
        use types::stat_id as s;
        [
            s::STAT_LOST_RINGBUF_FULL,
            s::STAT_LOST_PENDING_FULL,
            s::STAT_LOST_READ_FAULT,
            s::STAT_LOST_UNPAIRED,
            s::STAT_LOST_PID_STRING,
        ]
            .iter()
            .map(|id| self.get(*id))
            .sum()
    }
}

pub struct MonitorProbes {
    skel: MonitorSkel<'static>,
    pid: i32,
    binary: PathBuf,
    hooks: Vec<ResolvedHook>,
    /// The source of each capability; a fallback rewrites its entry.
    plans: RefCell<Vec<CapabilityPlan>>,
    /// Links per capability; a RefCell so hooks can change while the ring buffer borrows the
    /// skeleton.
    links: RefCell<BTreeMap<Capability, Vec<Link>>>,
}

impl MonitorProbes {
    /// Opens and loads the programs with the target's build facts; attaches nothing yet.
    pub fn load(target: &BeamTarget, hooks: Vec<ResolvedHook>, plans: Vec<CapabilityPlan>) -> Result<Self> {
        // The skeleton borrows its object for its whole life; the probe lives until exit.
        let object = Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = MonitorSkelBuilder::default().open(object).context("opening the monitor BPF object")?;
        let rodata = open.maps.rodata_data.as_deref_mut().context("monitor BPF object has no .rodata")?;
        rodata.cfg.proc_id_offset = target.table.process.id;
        rodata.cfg.process_table = target.process_table_address();
        rodata.cfg.pid_tag_mask = target.table.pid.tag_mask;
        rodata.cfg.pid_tag = target.table.pid.tag;
        if plans.iter().any(|p| p.source == ProbeSource::Usdt) {
            // USDT probes name processes by strings; the programs rebuild the VM's pid terms
            // so their events key processes exactly as the uprobes' do.
            let ix = target.pid_indexing().context("reading the process table size (for USDT pid strings)")?;
            let c = &mut rodata.cfg;
            c.pid_number_bits = ix.layout.number_bits.into();
            c.pid_serial_bits = ix.layout.serial_bits.into();
            c.pid_data_shift = ix.layout.data_shift.into();
            c.pid_index_above_shift = match ix.layout.index {
                PidIndex::Above { shift } => shift.into(),
                PidIndex::PixData => 0,
            };
            c.pix_mask = ix.indexing.pix_mask;
            c.pix_cl_mask = ix.indexing.pix_cl_mask;
            c.pix_cl_shift = ix.indexing.pix_cl_shift.into();
            c.pix_cli_shift = ix.indexing.pix_cli_shift.into();
            c.pix_cli_mask = ix.indexing.pix_cli_mask;
            let sites: Vec<u64> = plans
                .iter()
                .flat_map(|p| &p.usdt)
                .filter(|u| u.point == UsdtPoint::Send)
                .flat_map(|u| &u.accepted_sites)
                .map(|pc| pc.wrapping_add(target.load_bias))
                .collect();
            anyhow::ensure!(
                sites.len() <= c.send_sites.len(),
                "message__send has {} accepted sites, the BPF program takes {}",
                sites.len(),
                c.send_sites.len()
            );
            for (slot, site) in c.send_sites.iter_mut().zip(sites) {
                *slot = site;
            }
        }
        let skel = open.load().context("loading the monitor BPF programs (is this kernel built with BPF and BTF?)")?;
        Ok(MonitorProbes {
            skel,
            pid: target.pid as i32,
            binary: target.host_path.clone(),
            hooks,
            plans: RefCell::new(plans),
            links: RefCell::new(BTreeMap::new()),
        })
    }

    fn program(&self, point: HookPoint) -> &ProgramMut<'static> {
        let p = &self.skel.progs;
        match point {
            HookPoint::SendLocal => &p.on_send,
            HookPoint::ScheduleOut => &p.on_schedule_out,
            HookPoint::ScheduleIn => &p.on_schedule_in,
            HookPoint::GcStart => &p.on_gc_start,
            HookPoint::GcEnd => &p.on_gc_end,
            HookPoint::SpawnStart => &p.on_spawn_start,
            HookPoint::SpawnEnd => &p.on_spawn_end,
            HookPoint::ProcessGone => &p.on_process_gone,
        }
    }

    fn usdt_program(&self, point: UsdtPoint) -> &ProgramMut<'static> {
        let p = &self.skel.progs;
        match point {
            UsdtPoint::Send => &p.usdt_send,
            UsdtPoint::GcStart => &p.usdt_gc_start,
            UsdtPoint::GcEnd => &p.usdt_gc_end,
            UsdtPoint::Spawn => &p.usdt_spawn,
            UsdtPoint::Exit => &p.usdt_exit,
        }
    }

    /// Attaches every hook of one capability from its planned source; a USDT attach that
    /// fails falls back to the uprobes. Idempotent.
    pub fn attach(&self, capability: Capability) -> Result<()> {
        if self.links.borrow().contains_key(&capability) {
            return Ok(());
        }
        let usdt: Vec<ResolvedUsdt> = self
            .plans
            .borrow()
            .iter()
            .find(|p| p.capability == capability && p.source == ProbeSource::Usdt)
            .map(|p| p.usdt.clone())
            .unwrap_or_default();
        if !usdt.is_empty() {
            match self.attach_usdt(&usdt) {
                Ok(links) => {
                    self.links.borrow_mut().insert(capability, links);
                    return Ok(());
                }
                // The links made so far were dropped (detached) on the way out.
                Err(e) => {
                    if let Some(p) = self.plans.borrow_mut().iter_mut().find(|p| p.capability == capability) {
                        p.source = ProbeSource::Uprobe;
                        p.code = "usdt_attach_failed";
                        p.reason = format!("USDT attach failed, uprobes instead: {e:#}");
                        p.usdt.clear();
                    }
                }
            }
        }
        self.attach_uprobes(capability)
    }

    fn attach_usdt(&self, probes: &[ResolvedUsdt]) -> Result<Vec<Link>> {
        let mut links = Vec::new();
        for probe in probes {
            let arg = |i: usize| u64::from(probe.pid_args.get(i).copied().unwrap_or(0xff));
            let opts = UsdtOpts { cookie: arg(0) | (arg(1) << 8), ..Default::default() };
            let link = self
                .usdt_program(probe.point)
                .attach_usdt_with_opts(self.pid, &self.binary, &probe.provider, &probe.name, opts)
                .with_context(|| format!("attaching to USDT probe {}:{}", probe.provider, probe.name))?;
            links.push(link);
        }
        Ok(links)
    }

    fn attach_uprobes(&self, capability: Capability) -> Result<()> {
        let mut links = Vec::new();
        for hook in self.hooks.iter().filter(|h| h.point.capability() == capability) {
            let link = self
                .program(hook.point)
                .attach_uprobe(hook.point.is_return(), self.pid, &self.binary, hook.file_offset as usize)
                .with_context(|| {
                    format!("attaching {} probe to {} in {}", capability, hook.symbol, self.binary.display())
                })?;
            links.push(link);
        }
        anyhow::ensure!(!links.is_empty(), "this build has no hook for {capability}");
        self.links.borrow_mut().insert(capability, links);
        Ok(())
    }

    /// Detaches one capability and forgets its half-open spans, so a later attach starts clean.
    pub fn detach(&self, capability: Capability) {
        if self.links.borrow_mut().remove(&capability).is_none() {
            return;
        }
        let pending = match capability {
            Capability::Schedule => Some(&self.skel.maps.sched_pending),
            Capability::Gc => Some(&self.skel.maps.gc_pending),
            Capability::Spawn => Some(&self.skel.maps.spawn_pending),
            Capability::Send | Capability::Exit => None,
        };
        if let Some(map) = pending {
            let keys: Vec<Vec<u8>> = map.keys().collect();
            for key in keys {
                let _ = map.delete(&key);
            }
        }
    }

    /// Detaches every hook; exits last, so every process whose spawn was counted can still be
    /// seen leaving while the others detach, and spawns before schedules, since a USDT spawn
    /// takes its parent from the schedule hook.
    pub fn detach_all(&self) {
        let mut caps = self.attached();
        caps.sort_by_key(|c| match *c {
            Capability::Spawn => 0,
            Capability::Exit => 2,
            _ => 1,
        });
        for cap in caps {
            self.detach(cap);
        }
    }

    pub fn attached(&self) -> Vec<Capability> {
        self.links.borrow().keys().copied().collect()
    }

    /// The source of each capability, as attached (after any fallback).
    pub fn plans(&self) -> Vec<CapabilityPlan> {
        self.plans.borrow().clone()
    }

    /// The symbols behind the attached uprobe hooks, for the attach message.
    pub fn attached_symbols(&self) -> Vec<String> {
        let usdt: Vec<Capability> = self
            .plans
            .borrow()
            .iter()
            .filter(|p| p.source == ProbeSource::Usdt)
            .map(|p| p.capability)
            .collect();
        let mut symbols: Vec<String> = self
            .hooks
            .iter()
            .filter(|h| self.links.borrow().contains_key(&h.point.capability()))
            .filter(|h| !usdt.contains(&h.point.capability()))
            .map(|h| h.symbol.clone())
            .collect();
        symbols.sort();
        symbols.dedup();
        symbols
    }

    pub fn events_map(&self) -> &dyn MapCore {
        &self.skel.maps.events
    }

    pub fn kernel_stats(&self) -> Result<KernelStats> {
        let mut stats = KernelStats::default();
        for (i, slot) in stats.0.iter_mut().enumerate() {
            *slot = sum_per_cpu(&self.skel.maps.stats, i as u32)?;
        }
        Ok(stats)
    }
}

/// A u64 counter of a per-CPU array, summed over CPUs.
pub fn sum_per_cpu(map: &dyn MapCore, index: u32) -> Result<u64> {
    let per_cpu = map.lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)?.unwrap_or_default();
    Ok(per_cpu.iter().filter_map(|v| v.get(..8)).map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]))).sum())
}
