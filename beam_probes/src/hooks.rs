//! Hook points: the places in a BEAM scope-probe can attach a probe to, named by what they
//! observe rather than by the C function that happens to implement them in one build.

use serde::Serialize;

use crate::capability::Capability;

/// What a hook observes. The build table maps each point to the function(s) that implement
/// it in that build, and the argument conventions documented here hold for every table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    /// Entry of the local send: arg0 = sending `Process*`, arg1 = receiving `Process*`.
    SendLocal,
    /// Entry of a send that does not pass through the local send: to a process alias (a
    /// reference that names a process, OTP 24+: the replies of gen_server, gen_statem and erpc
    /// calls) and, on OTP 29, a priority message. arg1 = the sender's pid term, arg2 = the
    /// target term: a pid reference, which holds its owner's pid (see
    /// [`crate::builds::AliasLayout`]), or a local pid.
    SendAlias,
    /// Entry of the scheduler loop: arg1 = `Process*` scheduled out (NULL on the first call),
    /// arg2 = reductions it used.
    ScheduleOut,
    /// Return of the scheduler loop: the `Process*` scheduled in.
    ScheduleIn,
    /// Entry of a collector: arg0 = `Process*` being collected.
    GcStart,
    /// Return of the same collector.
    GcEnd,
    /// Entry of process creation: arg0 = parent `Process*`.
    SpawnStart,
    /// Return of process creation: the new pid term (0 when creation failed).
    SpawnEnd,
    /// Removal from a pointer table: arg0 = the table, arg1 = the element (its id at +0).
    /// Fires for ports too: the probe keeps only the process table.
    ProcessGone,
    /// Entry of a send to a pid on another node: arg0 = the send context (its sending
    /// `Process*` at [`crate::builds::DistLayout::send_context_process`]), arg1 = the remote pid
    /// term (boxed: an external pid).
    DistSend,
    /// Entry of queueing a message from another node: arg0 = receiving `Process*`, arg5 = the
    /// sender's pid term (an external pid, or an immediate when the sender is unknown).
    DistReceive,
}

impl HookPoint {
    pub fn is_return(self) -> bool {
        matches!(self, HookPoint::ScheduleIn | HookPoint::GcEnd | HookPoint::SpawnEnd)
    }

    /// Whether the hook is attached beside its capability's USDT probes: the `erlang` provider
    /// has no probe on the path it observes (message__send does not fire for alias sends).
    pub fn beside_usdt(self) -> bool {
        matches!(self, HookPoint::SendAlias)
    }

    /// The capability a hook point serves.
    pub fn capability(self) -> Capability {
        match self {
            HookPoint::SendLocal | HookPoint::SendAlias => Capability::Send,
            HookPoint::ScheduleOut | HookPoint::ScheduleIn => Capability::Schedule,
            HookPoint::GcStart | HookPoint::GcEnd => Capability::Gc,
            HookPoint::SpawnStart | HookPoint::SpawnEnd => Capability::Spawn,
            HookPoint::ProcessGone => Capability::Exit,
            HookPoint::DistSend | HookPoint::DistReceive => Capability::Distribution,
        }
    }
}

/// A hook point implemented by a named function in a build table.
#[derive(Debug, Clone, Copy)]
pub struct HookSpec {
    pub point: HookPoint,
    pub symbol: &'static str,
}

/// A hook point resolved against a concrete binary: what a uprobe is attached to.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedHook {
    pub point: HookPoint,
    pub symbol: String,
    /// Where the uprobe goes, as an offset in the ELF file (uprobes attach by file offset):
    /// the function's entry, or just past its `endbr64` (see `BeamTarget::resolve_hooks`).
    pub file_offset: u64,
}
