//! The fixture sources (tests/fixtures/*.erl, tests/fixtures/elixir/*.ex), compiled once per
//! compiler and set of sources into a directory named after both, and reused by later runs:
//! compiled fixtures do not pile up under target/ or a chroot's /tmp.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// The Erlang and the Elixir fixture sources, sorted.
pub fn sources() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let dir = crate::workspace_root().join("tests/fixtures");
    let list = |dir: &Path, ext: &str| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect();
        v.sort();
        v
    };
    (list(&dir, "erl"), list(&dir.join("elixir"), "ex"))
}

/// A hash of the sources' names and contents and of `compiler` (whatever identifies the
/// compilers that will build them).
pub fn key(compiler: &str) -> u64 {
    let mut h = DefaultHasher::new();
    compiler.hash(&mut h);
    let (erl, ex) = sources();
    for p in erl.iter().chain(&ex) {
        p.file_name().hash(&mut h);
        std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).hash(&mut h);
    }
    h.finish()
}

/// `parent/<prefix>-<key>`, built by `build` the first time (into a temporary directory that
/// is renamed into place when complete, so test binaries running at once never see half of
/// it) and reused afterwards.
pub fn cached_dir(parent: &Path, prefix: &str, key: u64, build: impl FnOnce(&Path)) -> PathBuf {
    let dir = parent.join(format!("{prefix}-{key:016x}"));
    if dir.is_dir() {
        return dir;
    }
    std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    let tmp = tempfile::Builder::new().prefix(&format!("{prefix}-tmp")).tempdir_in(parent).expect("temp dir");
    build(tmp.path());
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another test binary finished first: its directory is as good.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}

/// What identifies a host tool for [`key`]: its resolved path, size and modification time
/// (an upgraded OTP or Elixir compiles anew).
pub fn host_tool(name: &str) -> String {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or_default();
    let Some(path) = found.and_then(|p| p.canonicalize().ok()) else { return format!("{name}: none") };
    let meta = std::fs::metadata(&path).ok();
    let mtime = meta.as_ref().and_then(|m| m.modified().ok());
    format!("{} {:?} {:?}", path.display(), meta.map(|m| m.len()), mtime)
}
