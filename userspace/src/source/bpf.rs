//! The monitor probes (ebpf/monitor.bpf.c): one BPF object serves every VM observed (loaded
//! once, see `probes.rs`); each VM is added with its build's facts (the `vms` map, by OS pid),
//! its hook capabilities attached and detached at runtime, and its kernel-side counters read.
//!
//! Each capability comes from one source, planned by beam_probes (`CapabilityPlan`): the
//! uprobes on the build table's functions, or the binary's USDT probes through libbpf's USDT
//! support (libbpf decodes each site's argument format; the kernel raises the probe's semaphore
//! while a link exists and lowers it when the link is dropped). When a USDT attach fails, that
//! capability falls back to its uprobes and its plan says why.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{Context, Result};

use crate::aggregate::health::Health;
use crate::source::skeleton::Owned;
use beam_probes::terms::PidIndex;
use beam_probes::{BeamTarget, Capability, CapabilityPlan, HookPoint, ProbeSource, ResolvedHook, ResolvedUsdt, UsdtPoint};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, ProgramMut, UprobeMultiOpts, UsdtOpts};

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

    /// The counters as exporters read them (no BPF types beyond this module).
    pub fn into_health(self, health: &mut Health) {
        use types::stat_id as s;
        let hooks = [
            ("send", s::STAT_HIT_SEND, Some(Capability::Send)),
            ("schedule_out", s::STAT_HIT_SCHEDULE_OUT, Some(Capability::Schedule)),
            ("schedule_in", s::STAT_HIT_SCHEDULE_IN, Some(Capability::Schedule)),
            ("gc_start", s::STAT_HIT_GC_START, Some(Capability::Gc)),
            ("gc_end", s::STAT_HIT_GC_END, Some(Capability::Gc)),
            ("spawn_start", s::STAT_HIT_SPAWN_START, Some(Capability::Spawn)),
            ("spawn_end", s::STAT_HIT_SPAWN_END, Some(Capability::Spawn)),
            ("process_gone", s::STAT_HIT_PROCESS_GONE, Some(Capability::Exit)),
            ("dist_send", s::STAT_HIT_DIST_SEND, Some(Capability::Distribution)),
            ("dist_receive", s::STAT_HIT_DIST_RECEIVE, Some(Capability::Distribution)),
            // USDT message__send sites that are not local sends still trap: a send's cost.
            ("send_other_site", s::STAT_HIT_SEND_OTHER_SITE, Some(Capability::Send)),
            ("send_alias", s::STAT_HIT_SEND_ALIAS, Some(Capability::Send)),
        ];
        health.hits = hooks.iter().map(|(name, id, _)| (*name, self.get(*id))).collect();
        health.hits_by_capability = [0; Capability::ALL.len()];
        for (_, id, cap) in hooks {
            if let Some(cap) = cap {
                health.hits_by_capability[cap.index()] += self.get(id);
            }
        }
        health.lost = vec![
            ("ring_buffer_full", self.get(s::STAT_LOST_RINGBUF_FULL)),
            ("pending_table_full", self.get(s::STAT_LOST_PENDING_FULL)),
            ("read_fault", self.get(s::STAT_LOST_READ_FAULT)),
            ("unpaired", self.get(s::STAT_LOST_UNPAIRED)),
            ("pid_string", self.get(s::STAT_LOST_PID_STRING)),
        ];
        health.unpaired = self.get(s::STAT_LOST_UNPAIRED);
    }
}

/// The monitor's BPF object, loaded once for all VMs. Its ring buffer carries every VM's
/// events, each stamped with the VM's OS pid.
pub type MonitorObject = Owned<MonitorSkel<'static>>;

/// Loads the programs with an events ring of `ring_bytes` (a power of two); no VM is observed
/// until one is added (`MonitorProbes::add`).
pub fn load_monitor(ring_bytes: u32) -> Result<MonitorObject> {
    Owned::new(|object| {
        let mut open = MonitorSkelBuilder::default().open(object).context("opening the monitor BPF object")?;
        open.maps.events.set_max_entries(ring_bytes).context("sizing the events ring buffer")?;
        open.load().context("loading the monitor BPF programs (is this kernel built with BPF and BTF?)")
    })
}

/// The bytes of a plain-old-data value, as a BPF map stores it.
pub fn bytes_of<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: T is one of the shared C structs (plain old data).
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// A per-CPU map value of zeroed `T` for every possible CPU (a VM's counters, as it is added).
pub fn zeroed_per_cpu<T>() -> Result<Vec<Vec<u8>>> {
    Ok(vec![vec![0u8; std::mem::size_of::<T>()]; libbpf_rs::num_possible_cpus().context("counting CPUs")?])
}

/// The `index`-th u64 counter of a per-CPU map value, summed over CPUs.
pub fn per_cpu_counter(per_cpu: &[Vec<u8>], index: usize) -> u64 {
    let at = index * 8;
    per_cpu.iter().filter_map(|v| v.get(at..at + 8)).map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]))).sum()
}

/// The build facts the programs read one VM's hooks by (its entry in `vms`).
fn monitor_config(target: &BeamTarget, plans: &[CapabilityPlan]) -> Result<types::monitor_config> {
    let t = target.table;
    let (d, mut c) = (&t.dist, types::monitor_config::default());
    c.proc_id_offset = t.process.id;
    c.process_table = target.process_table_address();
    c.pid_tag_mask = t.pid.tag_mask;
    c.pid_tag = t.pid.tag;
    c.dist_ctx_process = d.send_context_process;
    c.ext_header_mask = d.external_header_mask;
    c.ext_pid_header = d.external_pid_header;
    c.ext_node = d.external_node;
    c.ext_pid_number = d.external_pid_number;
    c.node_sysname = t.node.sysname;
    c.pid_ref_header = t.alias.pid_ref_header;
    c.pid_ref_pid = t.alias.pid_ref_pid;
    c.list_mask = t.terms.primary_mask;
    c.list_tag = t.terms.list;
    c.nil = t.terms.nil;
    c.atom_tag_mask = t.atom.tag_mask;
    c.atom_tag = t.atom.tag;
    c.atom_index_shift = t.atom.index_shift.into();
    if plans.iter().any(|p| p.source == ProbeSource::Usdt) {
        // USDT probes name processes by strings; the programs rebuild the VM's pid terms so
        // their events key processes exactly as the uprobes' do.
        let ix = target.pid_indexing().context("reading the process table size (for USDT pid strings)")?;
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
    Ok(c)
}

/// One VM's part of the monitor object: its entry in `vms`, its counters, its links. Dropped,
/// it detaches every hook and forgets the VM.
pub struct MonitorProbes {
    skel: Rc<MonitorObject>,
    pid: i32,
    binary: PathBuf,
    hooks: Vec<ResolvedHook>,
    /// The source of each capability; a fallback rewrites its entry.
    plans: RefCell<Vec<CapabilityPlan>>,
    /// Links by the capabilities they serve (one group per attach: a multi-uprobe link serves
    /// several); a RefCell so hooks can change while the ring buffer borrows the skeleton.
    links: RefCell<Vec<(Vec<Capability>, Vec<Link>)>>,
    /// Whether the kernel takes multi-uprobe links (6.6+); learned at the first attach.
    multi: std::cell::Cell<Option<bool>>,
}

impl MonitorProbes {
    /// Adds the VM to the monitor object with its build facts; attaches nothing yet.
    pub fn add(skel: Rc<MonitorObject>, target: &BeamTarget, hooks: Vec<ResolvedHook>, plans: Vec<CapabilityPlan>) -> Result<Self> {
        let config = monitor_config(target, &plans)?;
        let key = target.pid.to_ne_bytes();
        let zero = zeroed_per_cpu::<types::monitor_counts>()?;
        skel.maps.stats.update_percpu(&key, &zero, MapFlags::ANY).context("adding the VM's counters")?;
        skel.maps
            .vms
            .update(&key, bytes_of(&config), MapFlags::ANY)
            .with_context(|| format!("adding pid {} to the monitor probes (they take {} VMs)", target.pid, skel.maps.vms.max_entries()))?;
        Ok(MonitorProbes {
            skel,
            pid: target.pid as i32,
            binary: target.host_path.clone(),
            hooks,
            plans: RefCell::new(plans),
            links: RefCell::new(Vec::new()),
            multi: std::cell::Cell::new(None),
        })
    }

    fn program(&self, point: HookPoint) -> &ProgramMut<'static> {
        let p = &self.skel.progs;
        match point {
            HookPoint::SendLocal => &p.on_send,
            HookPoint::SendAlias => &p.on_send_alias,
            HookPoint::ScheduleOut => &p.on_schedule_out,
            HookPoint::ScheduleIn => &p.on_schedule_in,
            HookPoint::GcStart => &p.on_gc_start,
            HookPoint::GcEnd => &p.on_gc_end,
            HookPoint::SpawnStart => &p.on_spawn_start,
            HookPoint::SpawnEnd => &p.on_spawn_end,
            HookPoint::ProcessGone => &p.on_process_gone,
            HookPoint::DistSend => &p.on_dist_send,
            HookPoint::DistReceive => &p.on_dist_receive,
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

    /// Attaches every hook of these capabilities (those not attached yet) from their planned
    /// sources: the USDT ones probe by probe (a USDT attach that fails falls back to the
    /// uprobes), the uprobe ones through one multi-uprobe link for the entries and one for the
    /// returns where the kernel has them, else a link per hook.
    pub fn attach(&self, capabilities: &[Capability]) -> Result<()> {
        let attached = self.attached();
        let (mut uprobe_caps, mut usdt_caps) = (Vec::new(), Vec::new());
        for &capability in capabilities.iter().filter(|c| !attached.contains(c)) {
            let usdt: Vec<ResolvedUsdt> = self
                .plans
                .borrow()
                .iter()
                .find(|p| p.capability == capability && p.source == ProbeSource::Usdt)
                .map(|p| p.usdt.clone())
                .unwrap_or_default();
            if usdt.is_empty() {
                uprobe_caps.push(capability);
                continue;
            }
            match self.attach_usdt(&usdt) {
                Ok(links) => {
                    self.links.borrow_mut().push((vec![capability], links));
                    usdt_caps.push(capability);
                }
                // The links made so far were dropped (detached) on the way out.
                Err(e) => {
                    if let Some(p) = self.plans.borrow_mut().iter_mut().find(|p| p.capability == capability) {
                        p.source = ProbeSource::Uprobe;
                        p.code = "usdt_attach_failed";
                        p.reason = format!("USDT attach failed, uprobes instead: {e:#}");
                        p.usdt.clear();
                    }
                    uprobe_caps.push(capability);
                }
            }
        }
        for c in &uprobe_caps {
            anyhow::ensure!(self.hooks.iter().any(|h| h.point.capability() == *c), "this build has no hook for {c}");
        }
        // Every hook of the capabilities uprobes serve, and beside USDT probes the hooks on
        // paths no probe of the provider covers (sends to aliases).
        let hooks: Vec<&ResolvedHook> = self
            .hooks
            .iter()
            .filter(|h| {
                let c = h.point.capability();
                uprobe_caps.contains(&c) || (usdt_caps.contains(&c) && h.point.beside_usdt())
            })
            .collect();
        if hooks.is_empty() {
            return Ok(());
        }
        // A capability's hooks need not be adjacent in the table (the alias send is last).
        let mut caps: Vec<Capability> = hooks.iter().map(|h| h.point.capability()).collect();
        caps.sort();
        caps.dedup();
        if self.multi.get() != Some(false) {
            match self.attach_multi(&hooks) {
                Ok(links) => {
                    self.multi.set(Some(true));
                    self.links.borrow_mut().push((caps, links));
                    return Ok(());
                }
                // An older kernel: a link per hook from now on.
                Err(_) if self.multi.get().is_none() => self.multi.set(Some(false)),
                Err(e) => return Err(e),
            }
        }
        for c in caps {
            let links = self.attach_uprobes(hooks.iter().copied().filter(|h| h.point.capability() == c), c)?;
            self.links.borrow_mut().push((vec![c], links));
        }
        Ok(())
    }

    /// One multi-uprobe link for the entry hooks and one for the return hooks; each hook's
    /// point travels as the link's cookie for that address.
    fn attach_multi(&self, hooks: &[&ResolvedHook]) -> Result<Vec<Link>> {
        let mut links = Vec::new();
        for returns in [false, true] {
            let hooks: Vec<&ResolvedHook> = hooks.iter().copied().filter(|h| h.point.is_return() == returns).collect();
            if hooks.is_empty() {
                continue;
            }
            let opts = UprobeMultiOpts {
                offsets: hooks.iter().map(|h| h.file_offset as usize).collect(),
                cookies: hooks.iter().map(|h| hook_id(h.point)).collect(),
                retprobe: returns,
                ..Default::default()
            };
            let prog = if returns { &self.skel.progs.on_returns } else { &self.skel.progs.on_entries };
            let link = prog.attach_uprobe_multi_with_opts(self.pid, &self.binary, "", opts).with_context(|| {
                let names: Vec<&str> = hooks.iter().map(|h| h.symbol.as_str()).collect();
                format!("attaching a multi-uprobe to {} in {}", names.join(", "), self.binary.display())
            })?;
            links.push(link);
        }
        Ok(links)
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

    /// A link per hook (kernels without multi-uprobes).
    fn attach_uprobes<'a>(&self, hooks: impl Iterator<Item = &'a ResolvedHook>, capability: Capability) -> Result<Vec<Link>> {
        let mut links = Vec::new();
        for hook in hooks {
            let link = self
                .program(hook.point)
                .attach_uprobe(hook.point.is_return(), self.pid, &self.binary, hook.file_offset as usize)
                .with_context(|| {
                    format!("attaching {} probe to {} in {}", capability, hook.symbol, self.binary.display())
                })?;
            links.push(link);
        }
        Ok(links)
    }

    /// Detaches capabilities and forgets their half-open spans, so a later attach starts
    /// clean. Exits go last, so every process whose spawn was counted can still be seen
    /// leaving while the others detach, and spawns first, since a USDT spawn takes its parent
    /// from the schedule hook. Within each of those steps the links are released at once, on a
    /// thread each: the kernel removes a uprobe's breakpoint at once but then waits for a grace
    /// period before the release returns (~0.1-0.2 s here), and one after the other that added
    /// up to over a second for the collector's ten hooks.
    pub fn detach(&self, capabilities: &[Capability]) {
        let groups: Vec<(Vec<Capability>, Vec<Link>)> = {
            let mut links = self.links.borrow_mut();
            let (gone, kept): (Vec<_>, Vec<_>) =
                std::mem::take(&mut *links).into_iter().partition(|(caps, _)| caps.iter().any(|c| capabilities.contains(c)));
            *links = kept;
            gone
        };
        let step = |caps: &[Capability]| {
            if caps.contains(&Capability::Spawn) {
                0
            } else if caps == [Capability::Exit] {
                2
            } else {
                1
            }
        };
        let mut detached = Vec::new();
        let mut groups: Vec<Option<(Vec<Capability>, Vec<Link>)>> = groups.into_iter().map(Some).collect();
        for s in 0..3 {
            for slot in groups.iter_mut() {
                if slot.as_ref().is_some_and(|(caps, _)| step(caps) == s) {
                    let (caps, links) = slot.take().expect("checked");
                    detached.extend(caps);
                    // The kernel removes a link's breakpoints at once, then waits for a grace
                    // period; a multi-uprobe link waits once for all its hooks.
                    drop(links);
                }
            }
        }
        for capability in detached {
            let pending = match capability {
                Capability::Schedule => Some(&self.skel.maps.sched_pending),
                Capability::Gc => Some(&self.skel.maps.gc_pending),
                Capability::Spawn => Some(&self.skel.maps.spawn_pending),
                Capability::Send | Capability::Exit | Capability::Distribution => None,
            };
            if let Some(map) = pending {
                self.forget_spans(map);
            }
        }
    }

    /// Detaches every hook.
    pub fn detach_all(&self) {
        self.detach(&self.attached());
    }

    /// Removes this VM's half-open spans from a pending map (other VMs' stay).
    fn forget_spans(&self, map: &dyn MapCore) {
        let keys: Vec<Vec<u8>> = map.keys().collect();
        for key in keys {
            let ours = map.lookup(&key, MapFlags::ANY).ok().flatten().is_some_and(|v| {
                v.len() >= std::mem::size_of::<types::pending_span>() && {
                    // SAFETY: the value is a `struct pending_span`, plain old data; unaligned read.
                    let span: types::pending_span = unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) };
                    span.tgid == self.pid as u32
                }
            });
            if ours {
                let _ = map.delete(&key);
            }
        }
    }

    pub fn attached(&self) -> Vec<Capability> {
        let mut caps: Vec<Capability> = self.links.borrow().iter().flat_map(|(c, _)| c.iter().copied()).collect();
        caps.sort();
        // A capability served by USDT probes and a uprobe beside them has two groups.
        caps.dedup();
        caps
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
            .filter(|h| self.attached().contains(&h.point.capability()))
            .filter(|h| !usdt.contains(&h.point.capability()) || h.point.beside_usdt())
            .map(|h| h.symbol.clone())
            .collect();
        symbols.sort();
        symbols.dedup();
        symbols
    }

    /// The VM (its OS pid).
    pub fn vm(&self) -> u32 {
        self.pid as u32
    }

    /// The VM's counters, summed over CPUs.
    pub fn kernel_stats(&self) -> Result<KernelStats> {
        let per_cpu = self.skel.maps.stats.lookup_percpu(&(self.pid as u32).to_ne_bytes(), MapFlags::ANY)?.unwrap_or_default();
        let mut stats = KernelStats::default();
        for (i, slot) in stats.0.iter_mut().enumerate() {
            *slot = per_cpu_counter(&per_cpu, i);
        }
        Ok(stats)
    }
}

impl Drop for MonitorProbes {
    fn drop(&mut self) {
        self.detach_all();
        let key = (self.pid as u32).to_ne_bytes();
        let _ = self.skel.maps.vms.delete(&key);
        let _ = self.skel.maps.stats.delete(&key);
        for map in [&self.skel.maps.sched_pending, &self.skel.maps.gc_pending, &self.skel.maps.spawn_pending] {
            self.forget_spans(map);
        }
    }
}

/// The send hook's program, attached to a function of scope-probe's own for calibration: a
/// hit there costs what a hit costs in the VM (the same trap, the same program, a ring buffer
/// record that nobody reads). Dropped, it detaches.
pub struct CalibrationProbe {
    skel: Owned<MonitorSkel<'static>>,
    exe: PathBuf,
    offset: u64,
}

impl CalibrationProbe {
    /// Loads the programs for `on_send` on the function at `address` in this very executable.
    pub fn load(table: &beam_probes::BuildTable, address: usize) -> Result<CalibrationProbe> {
        let (exe, offset) = own_file_offset(address)?;
        let skel = Owned::new(|object| {
            let mut open = MonitorSkelBuilder::default().open(object).context("opening the monitor BPF object")?;
            // This copy's ring buffer is never read: a small one is enough.
            open.maps.events.set_max_entries(1 << 16).context("sizing the calibration ring buffer")?;
            open.load().context("loading the monitor BPF programs for calibration")
        })?;
        // The hook fires in scope-probe itself, which this copy observes as if it were a VM.
        let config = types::monitor_config {
            proc_id_offset: table.process.id,
            pid_tag_mask: table.pid.tag_mask,
            pid_tag: table.pid.tag,
            ..Default::default()
        };
        skel.maps
            .vms
            .update(&std::process::id().to_ne_bytes(), bytes_of(&config), MapFlags::ANY)
            .context("configuring the calibration probe")?;
        Ok(CalibrationProbe { skel, exe, offset })
    }

    /// Attaches it, for this process only, the way the VM's hooks are attached (a multi-uprobe
    /// link through the dispatcher, where the kernel has them): that is the cost to measure, and
    /// a single uprobe's perf event needs more than the capabilities scope-probe keeps (the
    /// kernel answers EACCES without CAP_SYS_ADMIN). Dropping the link detaches it.
    pub fn attach(&self) -> Result<Link> {
        let pid = std::process::id() as i32;
        let opts = UprobeMultiOpts {
            offsets: vec![self.offset as usize],
            cookies: vec![hook_id(HookPoint::SendLocal)],
            retprobe: false,
            ..Default::default()
        };
        match self.skel.progs.on_entries.attach_uprobe_multi_with_opts(pid, &self.exe, "", opts) {
            Ok(link) => Ok(link),
            // Kernels before 6.6: a uprobe of its own.
            Err(multi) => self.skel.progs.on_send.attach_uprobe(false, pid, &self.exe, self.offset as usize).map_err(|single| {
                anyhow::anyhow!("attaching the calibration probe: as a multi-uprobe: {multi}; as a uprobe: {single}")
            }),
        }
    }
}

/// The file and file offset of an address of this process's code, from its mappings (no need
/// to read scope-probe's own executable, whose debug info makes it ~100 MB, or its symbols).
fn own_file_offset(address: usize) -> Result<(PathBuf, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(range), Some(perms), Some(offset), Some(path)) = (f.first(), f.get(1), f.get(2), f.get(5)) else { continue };
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end), Ok(offset)) =
            (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16), u64::from_str_radix(offset, 16))
        else {
            continue;
        };
        if perms.contains('x') && (start..end).contains(&address) {
            return Ok((PathBuf::from(path), offset + (address - start) as u64));
        }
    }
    anyhow::bail!("{address:#x} is in no executable mapping of scope-probe")
}

/// A hook point as the multi-uprobe dispatchers know it (the link's cookie).
fn hook_id(point: HookPoint) -> u64 {
    let id = match point {
        HookPoint::SendLocal => types::hook_id::HOOK_SEND,
        HookPoint::SendAlias => types::hook_id::HOOK_SEND_ALIAS,
        HookPoint::ScheduleOut => types::hook_id::HOOK_SCHEDULE_OUT,
        HookPoint::ScheduleIn => types::hook_id::HOOK_SCHEDULE_IN,
        HookPoint::GcStart => types::hook_id::HOOK_GC_START,
        HookPoint::GcEnd => types::hook_id::HOOK_GC_END,
        HookPoint::SpawnStart => types::hook_id::HOOK_SPAWN_START,
        HookPoint::SpawnEnd => types::hook_id::HOOK_SPAWN_END,
        HookPoint::ProcessGone => types::hook_id::HOOK_PROCESS_GONE,
        HookPoint::DistSend => types::hook_id::HOOK_DIST_SEND,
        HookPoint::DistReceive => types::hook_id::HOOK_DIST_RECEIVE,
    };
    id.0 as u64
}
