//! The processes a process monitors or is linked to, read from its trees from outside. A caller blocked
//! in `gen:do_call` monitors the process it called: the monitor says whom it waits on, without
//! reading any message. Only the monitored pids are read; the walk is bounded and checked.

use crate::builds::BuildTable;
use crate::memory::RemoteMemory;

/// Nodes visited at most (a process with more monitors than this is not waiting on a call).
const MAX_NODES: usize = 1_000;

/// The local processes `process` (a `Process *`) monitors, from the origin side of its
/// monitors of processes; `None` when the tree could not be read whole.
pub fn monitored_processes(mem: &RemoteMemory, t: &BuildTable, process: u64) -> Option<Vec<u64>> {
    let m = &t.monitor;
    // The origin side only: the target side's copy is a monitor held on this process.
    walk(mem, t, process + m.monitors, |kind, flags| kind & m.type_mask == m.type_proc && flags & m.target_flag == 0)
}

/// The local processes `process` is linked to (a supervisor and its children are); `None` when
/// the tree could not be read whole.
pub fn linked_processes(mem: &RemoteMemory, t: &BuildTable, process: u64) -> Option<Vec<u64>> {
    let m = &t.monitor;
    walk(mem, t, process + m.links, |kind, _| kind & m.type_mask == m.link_type_proc)
}

/// The other ends (local pids) of the nodes of the tree whose root pointer is at `root_field`
/// that `wanted(type, flags)` keeps.
fn walk(mem: &RemoteMemory, t: &BuildTable, root_field: u64, wanted: impl Fn(u32, u32) -> bool) -> Option<Vec<u64>> {
    let m = &t.monitor;
    let root = mem.read_u64(root_field, "monitor or link tree").ok()?;
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut visited = 0;
    while let Some(node) = stack.pop() {
        if node == 0 {
            continue;
        }
        visited += 1;
        if visited > MAX_NODES || node % 8 != 0 {
            return None;
        }
        let word = |off: u64| mem.read_u64(node + off, "monitor node");
        let (right, left, item) = (word(m.tree_right).ok()?, word(m.tree_left).ok()?, word(m.other_item).ok()?);
        let flags = if m.flags_bytes == 4 {
            mem.read_u32(node + m.flags, "monitor flags").ok()?
        } else {
            u32::from(mem.read_u16(node + m.flags, "monitor flags").ok()?)
        };
        let kind = if m.type_field == 0 { flags } else { u32::from(mem.read_u16(node + m.type_field, "monitor type").ok()?) };
        if wanted(kind, flags) && item & t.pid.tag_mask == t.pid.tag {
            out.push(item);
        }
        stack.push(right);
        stack.push(left);
    }
    Some(out)
}
