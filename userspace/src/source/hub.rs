//! A thread shared by every VM observed. The BPF objects that serve all VMs at once (the
//! monitor probes, the sampler of one frequency) live on one thread each, since libbpf objects
//! stay on the thread that made them; the first VM to need one starts it, the last to leave
//! stops it, so nothing stays loaded while no VM is observed. VMs join and leave by commands
//! over a channel, and wait for the thread's answer.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

/// One shared thread and the channel its commands go over (`C`: its command type).
pub struct Hub<C> {
    commands: Sender<C>,
    thread: Mutex<Option<JoinHandle<Result<()>>>>,
    /// The command that ends the thread's loop.
    stop: fn() -> C,
}

impl<C: Send + 'static> Hub<C> {
    /// Starts `run` on a thread named `name`; returns once it says it is ready (or failed).
    pub fn spawn(
        name: &str,
        stop: fn() -> C,
        run: impl FnOnce(Receiver<C>, Sender<Result<()>>) -> Result<()> + Send + 'static,
    ) -> Result<Hub<C>> {
        let (commands, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread =
            std::thread::Builder::new().name(name.into()).spawn(move || run(rx, ready_tx)).with_context(|| format!("starting {name}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Hub { commands, thread: Mutex::new(Some(thread)), stop }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(match thread.join() {
                Ok(Err(e)) => e,
                Ok(Ok(())) => anyhow::anyhow!("{name} ended before it was ready"),
                Err(_) => anyhow::anyhow!("{name} panicked"),
            }),
        }
    }

    /// Sends a command; false when the thread has ended.
    fn send(&self, command: C) -> bool {
        self.commands.send(command).is_ok()
    }

    /// A sender of commands, for other threads.
    pub fn sender(&self) -> Sender<C> {
        self.commands.clone()
    }

    /// Sends the command `make` builds around a reply channel and waits for the reply; `None`
    /// when the thread has ended.
    pub fn request<R>(&self, make: impl FnOnce(Sender<R>) -> C) -> Option<R> {
        let (reply, answer) = mpsc::channel();
        self.send(make(reply)).then(|| answer.recv().ok()).flatten()
    }

    fn stop(&self) -> Result<()> {
        let _ = self.commands.send((self.stop)());
        match self.thread.lock().unwrap_or_else(|e| e.into_inner()).take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => anyhow::bail!("a probe thread panicked"),
            None => Ok(()),
        }
    }
}

/// The hubs running, by key (the sampler's frequency; `()` for the one monitor hub), each with
/// how many VMs it serves.
pub struct Hubs<K, C> {
    running: Mutex<Vec<Running<K, C>>>,
}

/// A hub of a key and how many VMs it serves.
type Running<K, C> = (K, Arc<Hub<C>>, usize);

impl<K: PartialEq, C: Send + 'static> Hubs<K, C> {
    pub const fn new() -> Self {
        Hubs { running: Mutex::new(Vec::new()) }
    }

    /// Joins the hub of `key`, started by `spawn` when none runs: `join` adds the VM (by
    /// command). The VM is counted before it joins, so the hub cannot stop meanwhile, and the
    /// hubs are not locked while it joins (attaching takes a while; other VMs come and go). A
    /// hub that a failed join leaves without VMs is stopped.
    pub fn join<T>(
        &self,
        key: K,
        spawn: impl FnOnce() -> Result<Hub<C>>,
        join: impl FnOnce(&Hub<C>) -> Result<T>,
    ) -> Result<(Arc<Hub<C>>, T)> {
        let hub = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            match running.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, hub, n)) => {
                    *n += 1;
                    hub.clone()
                }
                None => {
                    let hub = Arc::new(spawn()?);
                    running.push((key, hub.clone(), 1));
                    hub
                }
            }
        };
        match join(&hub) {
            Ok(t) => Ok((hub, t)),
            Err(e) => {
                self.release(&hub)?;
                Err(e)
            }
        }
    }

    /// Leaves `hub`: `leave` removes the VM (by command); the last VM to leave stops it.
    pub fn leave(&self, hub: &Arc<Hub<C>>, leave: impl FnOnce(&Hub<C>)) -> Result<()> {
        leave(hub);
        self.release(hub)
    }

    /// One VM fewer on `hub`; stopped when none is left.
    fn release(&self, hub: &Arc<Hub<C>>) -> Result<()> {
        let last = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let Some(i) = running.iter().position(|(_, h, _)| Arc::ptr_eq(h, hub)) else { return Ok(()) };
            running[i].2 = running[i].2.saturating_sub(1);
            running[i].2 == 0 && {
                running.remove(i);
                true
            }
        };
        if last { hub.stop() } else { Ok(()) }
    }
}
