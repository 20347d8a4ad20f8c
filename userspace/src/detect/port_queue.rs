//! Port queues: a port whose driver says busy (processes sending to it are suspended) or whose
//! queue holds more than `enable_bytes`, the way a socket fills when its peer stops reading. It
//! stays firing until the port is not busy and holds less than `disable_bytes`. The finding
//! names the port, the process connected to it, and for a socket its peer and the kernel's
//! queues (whether the bytes wait in the VM or in the kernel).

use std::collections::HashMap;

use super::settings::PortQueue as Settings;
use super::{Context, Detector, Kind, Observation, Severity, Subject};
use crate::event::SharedTableRead;

/// Ports kept between reads at most (the fullest).
const TRACKED: usize = 200;

/// What the latest read said of a port worth watching.
struct Seen {
    name: String,
    driver: String,
    connected: Option<u64>,
    connected_text: String,
    queue_bytes: u64,
    busy: bool,
    busy_queue: bool,
    peer: Option<String>,
    kernel_send_queue: Option<u64>,
    /// Queue bytes at the previous read, for the trend.
    previous: Option<u64>,
}

pub struct PortQueue {
    s: Settings,
    ports: HashMap<String, Seen>,
}

impl PortQueue {
    pub fn new(s: Settings) -> PortQueue {
        PortQueue { s, ports: HashMap::new() }
    }
}

impl Detector for PortQueue {
    fn kind(&self) -> Kind {
        Kind::PortQueue
    }

    fn table(&mut self, read: &SharedTableRead) {
        let Some(ports) = &read.ports else { return };
        let mut next = HashMap::new();
        // Worth watching: busy, or holding more than the release level (a firing port is
        // watched down to it).
        for p in ports.ports.iter().filter(|p| p.busy || p.busy_queue || p.queue_bytes >= self.s.disable_bytes).take(TRACKED) {
            let previous = self.ports.get(&p.id).map(|s| s.queue_bytes);
            next.insert(
                p.id.clone(),
                Seen {
                    name: p.name.clone(),
                    driver: p.driver.clone(),
                    connected: p.connected_pid.map(|pid| pid.term),
                    connected_text: p.connected.clone(),
                    queue_bytes: p.queue_bytes,
                    busy: p.busy,
                    busy_queue: p.busy_queue,
                    peer: p.socket.as_ref().and_then(|s| s.peer.clone()),
                    kernel_send_queue: p.socket.as_ref().map(|s| s.send_queue),
                    previous,
                },
            );
        }
        self.ports = next;
    }

    fn observe(&mut self, ctx: &Context<'_>) -> Vec<Observation> {
        let mut out = Vec::new();
        for (id, p) in &self.ports {
            let subject = Subject::Port { id: id.clone(), name: p.name.clone(), connected: p.connected };
            let firing = ctx.is_firing(Kind::PortQueue, &subject);
            let busy = p.busy || p.busy_queue;
            let over = busy || p.queue_bytes >= if firing { self.s.disable_bytes } else { self.s.enable_bytes };
            if !over {
                continue;
            }
            let owner = p.connected.map_or_else(|| p.connected_text.clone(), |c| ctx.who(c));
            let trend = match p.previous {
                Some(before) if p.queue_bytes > before => ", growing",
                Some(before) if p.queue_bytes < before => ", draining",
                _ => "",
            };
            let mut evidence = vec![
                ("port", id.clone()),
                ("name", p.name.clone()),
                ("driver", p.driver.clone()),
                ("connected", owner.clone()),
                ("queue_bytes", p.queue_bytes.to_string()),
                ("busy", p.busy.to_string()),
            ];
            if p.busy_queue {
                evidence.push(("busy_task_queue", "true".into()));
            }
            if let Some(peer) = &p.peer {
                evidence.push(("peer", peer.clone()));
            }
            if let Some(q) = p.kernel_send_queue {
                evidence.push(("kernel_send_queue_bytes", q.to_string()));
            }
            out.push(Observation {
                kind: Kind::PortQueue,
                subject,
                severity: Severity::Warning,
                value: p.queue_bytes as f64,
                summary: format!(
                    "port {id} ({}{}) of {owner} {} {} bytes queued{trend}",
                    p.name,
                    p.peer.as_ref().map(|peer| format!(" to {peer}")).unwrap_or_default(),
                    if busy { "is busy with" } else { "holds" },
                    p.queue_bytes
                ),
                evidence,
            });
        }
        out
    }
}
