//! Exporters: Prometheus metrics and the HTTP endpoint, and the profile's output formats (one
//! module each). They read aggregated state only: no BPF type and no `BeamTarget` in here; pids
//! are named through [`PidNames`].

pub mod alertmanager;
pub mod chrome_json;
pub mod flamegraph;
pub mod folded;
pub mod http;
pub mod metrics;
pub mod perfetto;
pub mod requests;
pub mod report;
pub mod speedscope;
pub mod timeline;
pub mod web_config;

/// Names pids for the exporters, which know nothing of the VM (implemented over it in
/// `enrich::names`).
pub trait PidNames: Send + Sync {
    /// `<0.N.S>`, as Erlang prints the pid.
    fn pid(&self, term: u64) -> String;
    /// Who the process is: its registered name, else its label, else its initial call; ""
    /// when that is not known.
    fn name(&self, term: u64) -> String;
    /// The name of a node, from its name atom (`b@host`).
    fn node(&self, atom: u64) -> String;
    /// What the process is for, when it is a library process scope-probe knows (a pool).
    fn role(&self, _term: u64) -> Option<beam_probes::roles::Role> {
        None
    }
    /// `<0.80.0> (name)`, or the bare pid when it has no name (as a recording's `who` says it).
    fn who(&self, term: u64) -> String {
        let (pid, name) = (self.pid(term), self.name(term));
        if name.is_empty() { pid } else { format!("{pid} ({name})") }
    }
}

/// For the sinks that hold names (their state derives Debug).
impl std::fmt::Debug for dyn PidNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PidNames")
    }
}

#[cfg(test)]
mod tests {
    /// The layout's rule, checked: exporters read aggregated state only, never the BPF side or
    /// the VM itself.
    #[test]
    fn exporters_see_no_bpf_and_no_vm() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/export");
        // The exporters' files, those in folders of their own (the report's) too.
        let mut paths = Vec::new();
        let mut dirs = vec![dir.clone()];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    paths.push(path);
                }
            }
        }
        for path in paths {
            // This file names them to forbid them.
            if path == dir.join("mod.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for forbidden in ["source::bpf", "libbpf", "BeamTarget", "source::sampler"] {
                let code = text.lines().filter(|l| !l.trim_start().starts_with("//")).any(|l| l.contains(forbidden));
                assert!(!code, "{} uses {forbidden}", path.display());
            }
        }
    }
}
