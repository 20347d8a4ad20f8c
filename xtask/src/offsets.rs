//! `cargo xtask offsets <beam.smp>`: the struct offsets of a build table, read from DWARF and
//! printed as Rust for a build table in `beam_probes/src/builds/`; `--check` compares them
//! with the table that matches the binary's release and exits non-zero on a difference.
//!
//! Supporting a new build that has DWARF (or a separate debug file) is this command plus a
//! reviewed diff.

use std::path::Path;

use anyhow::{Context, Result, bail};
use beam_probes::BuildTable;
use beam_probes::builds::{self, ERTS_VERSION_SYMBOL, OTP_RELEASE_SYMBOL};
use beam_probes::dwarf::{self, DebugInfo};
use beam_probes::elf::ElfInfo;

pub fn run(binary: &Path, debug_file: Option<&Path>, check: bool, table_id: Option<&str>) -> Result<()> {
    let elf = ElfInfo::open(binary).with_context(|| format!("reading {}", binary.display()))?;
    let release = release_strings(binary, &elf);
    let table: Option<&'static BuildTable> = match table_id {
        Some(id) => Some(
            builds::all()
                .iter()
                .copied()
                .find(|t| t.id == id)
                .with_context(|| format!("no build table with id {id}; known: {}", table_ids()))?,
        ),
        None => release.as_ref().and_then(|(rel, vsn)| builds::select(rel, vsn)),
    };
    let info = match debug_file {
        Some(debug) => DebugInfo::open_split(binary, debug)?,
        None => DebugInfo::open(binary)?,
    };
    let derived = dwarf::derive_from(&info)?;

    let (rel, vsn) = release.clone().unwrap_or_else(|| ("?".into(), "?".into()));
    println!("    // {}: OTP {rel}, ERTS {vsn}, build-id {}", binary.display(), elf.build_id.as_deref().unwrap_or("none"));
    if let Some(debug) = debug_file {
        println!("    // DWARF from {}", debug.display());
    }
    print!("{}", derived.to_rust(table));

    if !check {
        return Ok(());
    }
    let Some(table) = table else {
        bail!(
            "--check: no build table for OTP {rel} / ERTS {vsn} (known: {}); pass --table <id> to compare with one",
            builds::known_builds()
        );
    };
    let mismatches = dwarf::compare(&derived, table);
    if mismatches.is_empty() {
        eprintln!("xtask: offsets: all {} struct offsets of table {} match the DWARF", dwarf::FIELDS.len(), table.id);
        return Ok(());
    }
    for m in &mismatches {
        eprintln!("xtask: offsets: MISMATCH {m}");
    }
    bail!("{} of {} offsets in table {} differ from the DWARF of {}", mismatches.len(), dwarf::FIELDS.len(), table.id, binary.display())
}

/// `etp_otp_release` and `etp_erts_version`, read from the file (NUL-terminated strings in
/// read-only data).
fn release_strings(binary: &Path, elf: &ElfInfo) -> Option<(String, String)> {
    let data = std::fs::read(binary).ok()?;
    let read = |name: &str| -> Option<String> {
        let off = elf.file_offset(elf.symbol(name)?.address)? as usize;
        let bytes = data.get(off..)?;
        let end = bytes.iter().take(64).position(|&b| b == 0)?;
        String::from_utf8(bytes[..end].to_vec()).ok()
    };
    Some((read(OTP_RELEASE_SYMBOL)?, read(ERTS_VERSION_SYMBOL)?))
}

fn table_ids() -> String {
    builds::all().iter().map(|t| t.id).collect::<Vec<_>>().join(", ")
}
