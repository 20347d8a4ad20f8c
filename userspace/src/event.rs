//! Events as the monitor probes deliver them, decoded from the shared `struct event`
//! (ebpf/monitor.h, reaching Rust through the skeleton's `types`).

use beam_probes::Capability;

use crate::source::bpf::monitor::types;

/// One observation from the VM. Pids are raw pid terms; `beam_probes` decodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Send { from: u64, to: u64 },
    Schedule { pid: u64, run_ns: u64, reductions: u64 },
    Gc { pid: u64, duration_ns: u64 },
    Spawn { parent: Option<u64>, child: u64 },
    Exit { pid: u64 },
}


impl Event {
    /// Decodes one ring-buffer record; `None` for a record of the wrong size or kind.
    pub fn decode(bytes: &[u8]) -> Option<Event> {
        if bytes.len() < std::mem::size_of::<types::event>() {
            return None;
        }
        // SAFETY: the record holds at least one `event`, a plain-old-data C struct; the read
        // is unaligned-safe.
        let e: types::event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let kind = types::event_kind(e.kind);
        Some(match kind {
            types::event_kind::EVENT_SEND => Event::Send { from: e.a, to: e.b },
            types::event_kind::EVENT_SCHEDULE => Event::Schedule { pid: e.a, run_ns: e.b, reductions: e.c },
            types::event_kind::EVENT_GC => Event::Gc { pid: e.a, duration_ns: e.b },
            types::event_kind::EVENT_SPAWN => Event::Spawn { parent: (e.a != 0).then_some(e.a), child: e.b },
            types::event_kind::EVENT_EXIT => Event::Exit { pid: e.a },
            _ => return None,
        })
    }

    /// The capability that observes it.
    pub fn capability(&self) -> Capability {
        match self {
            Event::Send { .. } => Capability::Send,
            Event::Schedule { .. } => Capability::Schedule,
            Event::Gc { .. } => Capability::Gc,
            Event::Spawn { .. } => Capability::Spawn,
            Event::Exit { .. } => Capability::Exit,
        }
    }
}
