//! Debug info from debuginfod servers, the way elfutils' client (gdb, perf, systemtap) gets it:
//! `GET <url>/buildid/<BUILD-ID>/debuginfo` on each server of `DEBUGINFOD_URLS` in turn, kept in
//! the same cache layout (`<cache>/<BUILD-ID>/debuginfo`), so a file gdb already fetched is reused
//! and the other way round.
//!
//! Environment, as elfutils reads it: `DEBUGINFOD_URLS` (space-separated base URLs; unset or
//! empty: nothing is fetched), `DEBUGINFOD_CACHE_PATH` (else `$XDG_CACHE_HOME/debuginfod_client`,
//! else `$HOME/.cache/debuginfod_client`), `DEBUGINFOD_TIMEOUT` (seconds to connect and between
//! reads, default 90), `DEBUGINFOD_MAXSIZE` (bytes; larger files are refused, default 0 =
//! unlimited; scope-probe caps it at [`MAX_BYTES`] anyway since it reads the file whole).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Upper bound on a fetched file: scope-probe reads debug files into memory. A beam.smp's debug
/// file is tens of MiB.
pub const MAX_BYTES: u64 = 1 << 30;

/// Where and how to fetch, from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub urls: Vec<String>,
    pub cache: PathBuf,
    pub timeout: Duration,
    pub max_bytes: u64,
}

impl Config {
    /// The configuration elfutils would use, or `None` when `DEBUGINFOD_URLS` names no server.
    pub fn from_env() -> Option<Config> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Config> {
        let urls: Vec<String> = var("DEBUGINFOD_URLS")?
            .split_whitespace()
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return None;
        }
        let nonempty = |k: &str| var(k).filter(|v| !v.is_empty());
        let cache = nonempty("DEBUGINFOD_CACHE_PATH")
            .map(PathBuf::from)
            .or_else(|| nonempty("XDG_CACHE_HOME").map(|x| Path::new(&x).join("debuginfod_client")))
            .or_else(|| nonempty("HOME").map(|h| Path::new(&h).join(".cache/debuginfod_client")))
            .unwrap_or_else(|| PathBuf::from("/var/cache/debuginfod_client"));
        let timeout = nonempty("DEBUGINFOD_TIMEOUT").and_then(|t| t.parse().ok()).unwrap_or(90);
        let max_bytes = match nonempty("DEBUGINFOD_MAXSIZE").and_then(|m| m.parse::<u64>().ok()) {
            Some(m) if m > 0 => m.min(MAX_BYTES),
            _ => MAX_BYTES,
        };
        Some(Config { urls, cache, timeout: Duration::from_secs(timeout), max_bytes })
    }

    /// `<cache>/<build-id>/debuginfo`.
    pub fn cached_path(&self, build_id: &str) -> PathBuf {
        self.cache.join(build_id).join("debuginfo")
    }
}

/// The debug file of `build_id`: from the cache, else from the first server that has it (then
/// cached). `progress` hears about network work (it can take a while). Errors say, per server,
/// why nothing came back.
pub fn fetch(config: &Config, build_id: &str, progress: &dyn Fn(&str)) -> Result<PathBuf, String> {
    if build_id.len() < 8 || !build_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("invalid build-id {build_id:?}"));
    }
    let cached = config.cached_path(build_id);
    if cached.is_file() && std::fs::metadata(&cached).is_ok_and(|m| m.len() > 0) {
        return Ok(cached);
    }
    let mut failures = Vec::new();
    for url in &config.urls {
        let started = Instant::now();
        progress(&format!("fetching debug info for build-id {build_id} from {url}"));
        match download(config, url, build_id, &cached) {
            Ok(bytes) => {
                progress(&format!(
                    "fetched {:.1} MiB in {:.1}s into {}",
                    bytes as f64 / (1 << 20) as f64,
                    started.elapsed().as_secs_f64(),
                    cached.display()
                ));
                return Ok(cached);
            }
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    Err(failures.join("; "))
}

/// One server: streams the body into a temporary file next to the cache entry, checks its size
/// bound and build-id, then renames it into place (a reader never sees half a file).
fn download(config: &Config, url: &str, build_id: &str, dest: &Path) -> Result<u64, String> {
    let agent = ureq::AgentBuilder::new().timeout_connect(config.timeout).timeout_read(config.timeout).build();
    let response = agent
        .get(&format!("{url}/buildid/{build_id}/debuginfo"))
        .set("User-Agent", concat!("scope-probe/", env!("CARGO_PKG_VERSION")))
        .call()
        .map_err(|e| match e {
            ureq::Error::Status(404, _) => "not found on this server".to_owned(),
            other => other.to_string(),
        })?;
    if let Some(len) = response.header("Content-Length").and_then(|l| l.parse::<u64>().ok())
        && len > config.max_bytes
    {
        return Err(format!("{len} bytes is over the limit of {} (DEBUGINFOD_MAXSIZE)", config.max_bytes));
    }
    let dir = dest.parent().ok_or("cache path has no parent")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // Removed on drop unless persisted: no half or rejected file stays behind.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("creating a file in {}: {e}", dir.display()))?;
    let mut body = response.into_reader().take(config.max_bytes + 1);
    let bytes = std::io::copy(&mut body, &mut tmp).map_err(|e| format!("downloading: {e}"))?;
    if bytes > config.max_bytes {
        return Err(format!("more than {} bytes (DEBUGINFOD_MAXSIZE)", config.max_bytes));
    }
    let elf = crate::elf::ElfInfo::open(tmp.path()).map_err(|e| e.to_string())?;
    match elf.build_id.as_deref() {
        Some(id) if id.eq_ignore_ascii_case(build_id) => {}
        other => return Err(format!("the server sent a file with build-id {}", other.unwrap_or("none"))),
    }
    tmp.persist(dest).map_err(|e| format!("moving into {}: {e}", dest.display()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn no_urls_means_no_debuginfod() {
        assert!(Config::from_vars(vars(&[])).is_none());
        assert!(Config::from_vars(vars(&[("DEBUGINFOD_URLS", "  ")])).is_none());
    }

    #[test]
    fn environment_as_elfutils_reads_it() {
        let c = Config::from_vars(vars(&[
            ("DEBUGINFOD_URLS", "http://127.0.0.1:8002/ https://debuginfod.example.org"),
            ("HOME", "/root"),
            ("DEBUGINFOD_TIMEOUT", "5"),
        ]))
        .unwrap();
        assert_eq!(c.urls, ["http://127.0.0.1:8002", "https://debuginfod.example.org"]);
        assert_eq!(c.cached_path("ab12cd34"), Path::new("/root/.cache/debuginfod_client/ab12cd34/debuginfo"));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.max_bytes, MAX_BYTES);
        let c = Config::from_vars(vars(&[
            ("DEBUGINFOD_URLS", "http://x"),
            ("DEBUGINFOD_CACHE_PATH", "/tmp/dc"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("DEBUGINFOD_MAXSIZE", "1000"),
        ]))
        .unwrap();
        assert_eq!(c.cache, Path::new("/tmp/dc"));
        assert_eq!(c.max_bytes, 1000);
        let c = Config::from_vars(vars(&[("DEBUGINFOD_URLS", "http://x"), ("XDG_CACHE_HOME", "/xdg")])).unwrap();
        assert_eq!(c.cache, Path::new("/xdg/debuginfod_client"));
    }
}
