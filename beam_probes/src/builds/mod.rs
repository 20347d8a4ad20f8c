//! One table per supported BEAM build. A table holds every fact scope-probe relies on for
//! that build: which functions implement each hook point, the struct offsets it reads, and
//! the term layouts. Nothing outside `beam_probes` knows any of these numbers.

mod otp25;

pub use otp25::DEBIAN12_OTP25;

use crate::hooks::HookSpec;
use crate::terms::{AtomLayout, PidLayout};

/// Symbols that hold the release strings, read before a table is chosen. They exist in every
/// OTP build that keeps its dynamic symbols (`const char etp_otp_release[]`).
pub const OTP_RELEASE_SYMBOL: &str = "etp_otp_release";
pub const ERTS_VERSION_SYMBOL: &str = "etp_erts_version";

/// Offsets inside `Process`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessLayout {
    /// `common.id`: the pid term.
    pub id: u64,
    /// `common.u.alive.reg`: pointer to the `RegProc` when the process is registered.
    pub reg: u64,
}

/// Offset of the name atom inside a `RegProc`.
#[derive(Debug, Clone, Copy)]
pub struct RegProcLayout {
    pub name: u64,
}

/// Offsets inside the `ErtsPTab` behind the process table symbol.
#[derive(Debug, Clone, Copy)]
pub struct PtabLayout {
    /// Pointer to the array of element pointers (0 = free slot).
    pub tab: u64,
    /// Number of slots (u32).
    pub max: u64,
}

/// Names of the global data symbols a build table relies on.
#[derive(Debug, Clone, Copy)]
pub struct GlobalSymbols {
    pub process_table: &'static str,
    pub atom_table: &'static str,
}

#[derive(Debug)]
pub struct BuildTable {
    /// Short stable name, printed at attach and in `scope_probe_build_info`.
    pub id: &'static str,
    pub otp_release: &'static str,
    /// ERTS versions this layout was verified on.
    pub erts_versions: &'static [&'static str],
    pub hooks: &'static [HookSpec],
    pub globals: GlobalSymbols,
    pub process: ProcessLayout,
    pub reg_proc: RegProcLayout,
    pub ptab: PtabLayout,
    pub pid: PidLayout,
    pub atom: AtomLayout,
}

/// Every table, in the order they are tried.
pub fn all() -> &'static [&'static BuildTable] {
    static ALL: [&BuildTable; 1] = [&DEBIAN12_OTP25];
    &ALL
}

/// The table for a release and ERTS version, if there is one.
pub fn select(otp_release: &str, erts_version: &str) -> Option<&'static BuildTable> {
    all()
        .iter()
        .copied()
        .find(|t| t.otp_release == otp_release && t.erts_versions.contains(&erts_version))
}

/// What the user should know when no table matches: the builds that are known.
pub fn known_builds() -> String {
    all()
        .iter()
        .map(|t| format!("OTP {} (ERTS {})", t.otp_release, t.erts_versions.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}
