//! Registered names of processes, read from the VM's process and atom tables on demand and
//! cached (bounded). Only the processes being shown are looked up.

use std::collections::HashMap;

use beam_probes::BeamTarget;

const MAX_CACHED: usize = 50_000;

#[derive(Default)]
pub struct NameCache {
    names: HashMap<u64, String>,
}

impl NameCache {
    /// The registered name of a pid term; "" when it has none (or is gone and was never seen
    /// with one). A name once seen is kept for the process's lifetime in the cache.
    pub fn name(&mut self, target: &BeamTarget, pid: u64) -> String {
        if let Some(n) = self.names.get(&pid) {
            return n.clone();
        }
        match target.process_table().registered_name(pid) {
            Ok(Some(name)) => {
                if self.names.len() >= MAX_CACHED {
                    self.names.clear();
                }
                self.names.insert(pid, name.clone());
                name
            }
            _ => String::new(),
        }
    }
}
