//! `beam_probes`: the one place that knows BEAM builds.
//!
//! Nothing outside this crate names a beam.smp symbol or a struct offset. The rest of
//! scope-probe asks for a [`BeamTarget`] (a live VM, its binary and the build table that
//! matches it) and gets back symbol addresses, hook plans and decoded terms.
//!
//! Layout:
//! - [`target`]: from an OS pid to a verified BEAM (exe, root, mappings, version).
//! - [`elf`]: ELF symbols, build-id and address translation with the `object` crate.
//! - [`dwarf`]: struct layouts from DWARF (`gimli`), to derive and check a build's offsets.
//! - [`memory`]: reads of the target's memory from outside (`process_vm_readv`).
//! - [`builds`]: one table per supported build (hooks, offsets, pid layout).
//! - [`capability`]: what can be observed per event (send, schedule, gc, spawn, exit).
//! - [`hooks`]: the hook points scope-probe can attach, named by what they observe.
//! - [`terms`]: pid and atom term decoding.
//! - [`proctab`]: the process table: live count and registered names.
//! - [`snapshot`]: every process's record, read from outside; with [`mailbox`] (messages
//!   counted in the queues), [`identity`] (initial call, ancestors, label, OTP or user) and
//!   [`remote_terms`] (the few terms identity reads, bounded).
//! - [`ports`]: every open port (sockets, spawned programs, files), and each socket as the
//!   kernel sees it.
//! - [`monitors`]: whom a process monitors (what a blocked caller waits on).
//! - [`threads`]: the VM's threads by role, and each scheduler's own data.
//! - [`usdt`]: USDT probes in `.note.stapsdt`, and which source serves each capability.
//! - [`jit`]: names of JIT code ranges, from the perf map or the GDB JIT interface.

pub mod builds;
pub mod capability;
pub mod code_names;
pub mod debugfile;
pub mod debuginfod;
pub mod dwarf;
pub mod elf;
pub mod error;
pub mod ets;
pub mod hooks;
pub mod identity;
pub mod jit;
pub mod mailbox;
pub mod maps;
pub mod memory;
pub mod monitors;
pub mod ports;
pub mod proctab;
pub mod remote_terms;
pub mod roles;
pub mod snapshot;
pub mod supervision;
pub mod target;
pub mod terms;
pub mod threads;
pub mod usdt;
pub mod vm_memory;

pub use builds::BuildTable;
pub use capability::Capability;
pub use error::{Error, Result};
pub use hooks::{HookPoint, ResolvedHook};
pub use jit::{JitSource, JitSymbol, JitSymbolReader, JitSymbols};
pub use target::BeamTarget;
pub use terms::Pid;
pub use usdt::{CapabilityPlan, ProbeSource, ResolvedUsdt, SourcePreference, UsdtPoint};
