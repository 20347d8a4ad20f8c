//! USDT (systemtap `sdt.h`) probes of a beam.smp built `--with-dynamic-trace=systemtap`: which
//! probes the binary carries (its `.note.stapsdt` notes), which of them serve a scope-probe
//! capability in a build table, and, per capability, whether scope-probe observes it through
//! USDT or through its uprobes, and why.
//!
//! libbpf attaches USDT programs itself (it reads the same notes, decodes each site's argument
//! format and lets the kernel count the semaphore up and down with the uprobe's ref_ctr). What
//! lives here is what a BPF program cannot know: which notes exist, what each argument means,
//! which sites count, and the facts needed to turn the probes' pid strings back into the pid
//! terms the uprobes deliver.

use std::fmt;
use crate::capability::Capability;

use serde::Serialize;

use crate::elf::ElfInfo;
use crate::error::{Error, Result};
use crate::target::BeamTarget;
use crate::terms::PidDecoder;

/// `NT_STAPSDT`: the note type of `sdt.h` probes, owner "stapsdt".
const NT_STAPSDT: u32 = 3;

/// One probe site as a `.note.stapsdt` note describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsdtNote {
    pub provider: String,
    pub name: String,
    /// Link-time address of the site (a `nop`).
    pub pc: u64,
    /// Link-time address of the probe's semaphore (0: none).
    pub semaphore: u64,
    /// The argument format, e.g. `8@%rax -4@48(%rsp)`.
    pub args: String,
}

/// Every stapsdt note of an ELF image (64-bit little endian, the only kind scope-probe reads).
pub fn parse_notes(file: &object::File<'_>) -> Vec<UsdtNote> {
    use object::{Object, ObjectSection};
    let Some(data) = file.section_by_name(".note.stapsdt").and_then(|s| s.data().ok()) else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    let u32_at = |o: usize| data.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
    let u64_at = |d: &[u8], o: usize| d.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let align4 = |n: usize| (n + 3) & !3;
    let mut off = 0;
    // Each note: namesz, descsz, type, name (padded to 4), desc (padded to 4).
    while let (Some(namesz), Some(descsz), Some(kind)) = (u32_at(off), u32_at(off + 4), u32_at(off + 8)) {
        let name_start = off + 12;
        let desc_start = name_start + align4(namesz as usize);
        let next = desc_start + align4(descsz as usize);
        let (Some(owner), Some(desc)) =
            (data.get(name_start..name_start + namesz as usize), data.get(desc_start..desc_start + descsz as usize))
        else {
            break;
        };
        if kind == NT_STAPSDT
            && owner.strip_suffix(b"\0").unwrap_or(owner) == b"stapsdt"
            && let (Some(pc), Some(semaphore)) = (u64_at(desc, 0), u64_at(desc, 16))
        {
            // After pc, base and semaphore: "provider\0name\0args\0".
            let mut strings = desc.get(24..).unwrap_or_default().split(|b| *b == 0);
            let mut next_str = || strings.next().map(|s| String::from_utf8_lossy(s).into_owned()).unwrap_or_default();
            let (provider, name, args) = (next_str(), next_str(), next_str());
            notes.push(UsdtNote { provider, name, pc, semaphore, args });
        }
        off = next;
    }
    notes
}

/// What a USDT probe observes, with the argument conventions the BPF programs rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsdtPoint {
    /// A message sent: `pid_args` = [sender, receiver].
    Send,
    /// A collection starts: `pid_args` = [collected process].
    GcStart,
    /// The same collection ends (same thread): `pid_args` = [collected process].
    GcEnd,
    /// A process was created: `pid_args` = [new process]. The probe has no parent.
    Spawn,
    /// A process starts exiting: `pid_args` = [exiting process].
    Exit,
}

impl UsdtPoint {
    pub fn capability(self) -> Capability {
        match self {
            UsdtPoint::Send => Capability::Send,
            UsdtPoint::GcStart | UsdtPoint::GcEnd => Capability::Gc,
            UsdtPoint::Spawn => Capability::Spawn,
            UsdtPoint::Exit => Capability::Exit,
        }
    }
}

/// A USDT probe of a build table that serves a point.
#[derive(Debug, Clone, Copy)]
pub struct UsdtSpec {
    pub point: UsdtPoint,
    pub provider: &'static str,
    /// As spelled in the note (`message__send`).
    pub name: &'static str,
    /// Indices of the arguments that hold pid strings (`<0.N.S>`), in the point's order.
    pub pid_args: &'static [u8],
    /// When set, only the sites inside this function serve the point (the others observe
    /// something else, e.g. distribution sends); the BPF program drops the others by address.
    pub only_in: Option<&'static str>,
}

/// The USDT facts of a build table.
#[derive(Debug, Clone, Copy)]
pub struct UsdtTable {
    pub probes: &'static [UsdtSpec],
    /// Capabilities `auto` keeps on uprobes although the build may have a probe, and why.
    pub auto_uprobe: &'static [(Capability, &'static str)],
    /// Capabilities no USDT probe can serve, and why.
    pub unavailable: &'static [(Capability, &'static str)],
}

impl UsdtTable {
    /// For builds whose systemtap variant nobody has checked: every capability stays on
    /// uprobes, even if the binary has USDT notes.
    pub const UNCHECKED: UsdtTable = UsdtTable { probes: &[], auto_uprobe: &[], unavailable: &[] };
}

/// A USDT spec checked against the binary's notes.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedUsdt {
    pub point: UsdtPoint,
    pub provider: String,
    pub name: String,
    pub pid_args: Vec<u8>,
    /// Sites of the probe in the binary.
    pub sites: usize,
    /// Link-time addresses of the sites that serve the point; empty when all of them do.
    pub accepted_sites: Vec<u64>,
}

/// Where a capability's events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeSource {
    Uprobe,
    Usdt,
}

impl ProbeSource {
    pub fn label(self) -> &'static str {
        match self {
            ProbeSource::Uprobe => "uprobe",
            ProbeSource::Usdt => "usdt",
        }
    }
}

/// What the user asked for (`--probe-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePreference {
    /// USDT where the build has the probes and nothing is lost by using them.
    Auto,
    /// USDT for every capability a probe can serve; uprobes for the rest.
    Usdt,
    /// Uprobes only.
    Uprobe,
}

/// The source chosen for one capability, and why.
#[derive(Debug, Clone, Serialize)]
pub struct CapabilityPlan {
    pub capability: Capability,
    pub source: ProbeSource,
    /// Why, in one word (a metric label): `requested`, `no_usdt_notes`, `probe_missing`,
    /// `auto_prefers_uprobe`, `no_usdt_probe`, `usdt`, or `usdt_attach_failed` (set by the
    /// attacher when it falls back).
    pub code: &'static str,
    pub reason: String,
    /// The probes to attach when `source` is USDT.
    #[serde(skip)]
    pub usdt: Vec<ResolvedUsdt>,
}

impl fmt::Display for CapabilityPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.capability, self.source.label(), self.reason)
    }
}

impl ElfInfo {
    /// The distinct `(provider, name)` of the binary's USDT probes.
    pub fn usdt_probe_names(&self) -> Vec<(String, String)> {
        let mut names: Vec<(String, String)> =
            self.usdt_notes.iter().map(|n| (n.provider.clone(), n.name.clone())).collect();
        names.sort();
        names.dedup();
        names
    }
}

impl BeamTarget {
    /// The table's USDT specs that this binary has, with the sites that count.
    pub fn resolve_usdt(&self) -> Result<Vec<ResolvedUsdt>> {
        let mut out = Vec::new();
        for spec in self.table.usdt.probes {
            let sites: Vec<&UsdtNote> = self
                .elf
                .usdt_notes
                .iter()
                .filter(|n| n.provider == spec.provider && n.name == spec.name)
                .collect();
            if sites.is_empty() {
                continue;
            }
            let accepted_sites = match spec.only_in {
                None => Vec::new(),
                Some(function) => {
                    let f = self.elf.symbol(function).ok_or_else(|| {
                        Error::Corrupt(format!("{}: USDT probe {} needs symbol {function}", self.exe.display(), spec.name))
                    })?;
                    let accepted: Vec<u64> = sites
                        .iter()
                        .map(|n| n.pc)
                        .filter(|pc| *pc >= f.address && *pc < f.address + f.size.max(1))
                        .collect();
                    if accepted.is_empty() {
                        continue; // the probe exists, but not where this point needs it
                    }
                    accepted
                }
            };
            out.push(ResolvedUsdt {
                point: spec.point,
                provider: spec.provider.to_owned(),
                name: spec.name.to_owned(),
                pid_args: spec.pid_args.to_vec(),
                sites: sites.len(),
                accepted_sites,
            });
        }
        Ok(out)
    }

    /// Which source each capability uses under a preference, and why.
    pub fn plan_sources(&self, preference: SourcePreference) -> Result<Vec<CapabilityPlan>> {
        let usdt = if self.elf.has_usdt_notes { self.resolve_usdt()? } else { Vec::new() };
        let usdt_table = &self.table.usdt;
        let mut plans = Vec::new();
        for capability in Capability::ALL {
            let uprobe = |code: &'static str, reason: String| CapabilityPlan {
                capability,
                source: ProbeSource::Uprobe,
                code,
                reason,
                usdt: Vec::new(),
            };
            if preference == SourcePreference::Uprobe {
                plans.push(uprobe("requested", "--probe-source uprobe".into()));
                continue;
            }
            if let Some((_, why)) = usdt_table.unavailable.iter().find(|(c, _)| *c == capability) {
                plans.push(uprobe("no_usdt_probe", format!("no USDT probe serves it: {why}")));
                continue;
            }
            if !self.elf.has_usdt_notes {
                plans.push(uprobe(
                    "no_usdt_notes",
                    "this beam.smp has no USDT probes (built without dynamic trace)".into(),
                ));
                continue;
            }
            let needed: Vec<&UsdtSpec> =
                usdt_table.probes.iter().filter(|s| s.point.capability() == capability).collect();
            let found: Vec<ResolvedUsdt> =
                usdt.iter().filter(|r| r.point.capability() == capability).cloned().collect();
            let missing: Vec<&str> = needed
                .iter()
                .filter(|s| !found.iter().any(|r| r.name == s.name))
                .map(|s| s.name)
                .collect();
            if needed.is_empty() {
                plans.push(uprobe("no_usdt_probe", "the build table names no USDT probe for it".into()));
                continue;
            }
            if !missing.is_empty() {
                plans.push(uprobe(
                    "probe_missing",
                    format!("USDT probe missing from this beam.smp: {}", missing.join(", ")),
                ));
                continue;
            }
            if preference == SourcePreference::Auto
                && let Some((_, why)) = usdt_table.auto_uprobe.iter().find(|(c, _)| *c == capability)
            {
                plans.push(uprobe("auto_prefers_uprobe", format!("auto keeps the uprobe: {why}")));
                continue;
            }
            let names: Vec<String> = found.iter().map(|r| format!("{}:{}", r.provider, r.name)).collect();
            plans.push(CapabilityPlan {
                capability,
                source: ProbeSource::Usdt,
                code: "usdt",
                reason: names.join(", "),
                usdt: found,
            });
        }
        Ok(plans)
    }

    /// The BPF side's recipe for turning a pid string's number and serial back into the pid
    /// term the VM (and the uprobes) use: the build's pid layout with this VM's table index
    /// masks. See [`PidDecoder::encode`].
    pub fn pid_indexing(&self) -> Result<PidDecoder> {
        self.process_table().pid_encoder()
    }
}
