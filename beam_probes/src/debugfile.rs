//! Finding a separate debug file the way gdb and perf do: by build-id under
//! `/usr/lib/debug/.build-id/`, then by the `.gnu_debuglink` name next to the binary, in its
//! `.debug/` folder and under `/usr/lib/debug/<dir>/`. Paths are seen through the target's root
//! (`/proc/PID/root`), so a VM in a container finds the debug files installed in it.

use std::path::{Path, PathBuf};

/// Candidate debug files for the executable `exe` (a path inside the target's root), in search
/// order, as paths reachable from here through `root`.
pub fn candidates(root: &Path, exe: &Path, build_id: Option<&str>, debuglink: Option<&str>) -> Vec<PathBuf> {
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let mut out = Vec::new();
    if let Some(id) = build_id.filter(|id| id.len() > 2) {
        out.push(inside(&Path::new("/usr/lib/debug/.build-id").join(&id[..2]).join(format!("{}.debug", &id[2..]))));
    }
    if let (Some(link), Some(dir)) = (debuglink, exe.parent()) {
        out.push(inside(&dir.join(link)));
        out.push(inside(&dir.join(".debug").join(link)));
        out.push(inside(&Path::new("/usr/lib/debug").join(dir.strip_prefix("/").unwrap_or(dir)).join(link)));
    }
    out
}

/// The first candidate that exists and is not the executable itself.
pub fn find(root: &Path, exe: &Path, build_id: Option<&str>, debuglink: Option<&str>) -> Option<PathBuf> {
    let own = root.join(exe.strip_prefix("/").unwrap_or(exe));
    candidates(root, exe, build_id, debuglink).into_iter().find(|p| p.is_file() && *p != own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdb_search_order_under_the_target_root() {
        let c = candidates(
            Path::new("/proc/42/root"),
            Path::new("/usr/lib/erlang/erts-17.1/bin/beam.smp"),
            Some("a1a858f879ccf28e7871c290914b693182006115"),
            Some("beam.smp.debug"),
        );
        assert_eq!(
            c,
            vec![
                PathBuf::from("/proc/42/root/usr/lib/debug/.build-id/a1/a858f879ccf28e7871c290914b693182006115.debug"),
                PathBuf::from("/proc/42/root/usr/lib/erlang/erts-17.1/bin/beam.smp.debug"),
                PathBuf::from("/proc/42/root/usr/lib/erlang/erts-17.1/bin/.debug/beam.smp.debug"),
                PathBuf::from("/proc/42/root/usr/lib/debug/usr/lib/erlang/erts-17.1/bin/beam.smp.debug"),
            ]
        );
    }
}
