//! The latest reads of the process table and /proc, as their sources published them, for the
//! exporters and anything else that wants the VM's state now.

use crate::event::{ProcRead, SharedTableRead};
use crate::pipeline::Sink;

#[derive(Default, Clone)]
pub struct TableState {
    pub latest: Option<SharedTableRead>,
    pub proc: Option<ProcRead>,
    /// Records skipped as torn, over every read so far.
    pub torn_total: u64,
    /// ETS tables skipped as torn, over every read so far.
    pub ets_torn_total: u64,
    /// Ports skipped as torn, over every read so far.
    pub ports_torn_total: u64,
    /// Reads so far.
    pub reads: u64,
}

impl Sink for TableState {
    fn table(&mut self, read: &SharedTableRead) {
        self.torn_total += read.snapshot.as_ref().map_or(0, |s| s.torn);
        self.ets_torn_total += read.ets.as_ref().map_or(0, |e| e.torn);
        self.ports_torn_total += read.ports.as_ref().map_or(0, |p| p.torn);
        self.reads += 1;
        self.latest = Some(read.clone());
    }

    fn proc(&mut self, read: &ProcRead) {
        self.proc = Some(read.clone());
    }
}
