//! A process's messages counted where the VM keeps them, at any moment: its inner queue
//! (received), its middle queue (fetched, not handled yet), its outer queue and, when many
//! processes send to it at once, the per-sender buffers the VM switches to. The queue-length
//! counters in `Process` are not the queue length while the process runs, handles signals or
//! collects garbage (and are used as offsets while a `process_info` request is in transit), so
//! the lists themselves are walked: each element's tag says message or other signal, and its
//! heap fragment says how much memory it holds outside the heap, as
//! `process_info(P, memory)` counts it.
//!
//! The VM keeps changing the lists while they are read: every pointer is checked (aligned,
//! readable), the walk is bounded, and a walk that breaks off says so (the caller then falls
//! back to the counters).

use crate::builds::{BuildTable, SignalQueueLayout};
use crate::memory::{PageCache, RemoteMemory};

/// Longest heap-fragment chain followed for one message.
const MAX_FRAGMENTS: usize = 64;
/// In-queue buffers looked at (the VM has 64).
const MAX_BUFFERS: u64 = 256;
/// More words than any message holds: a torn read.
const MAX_WORDS: u64 = 1 << 40;

/// What the queues hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mailbox {
    /// Messages in all queues and buffers.
    pub messages: u64,
    /// Bytes they take outside the heap: each message's `ErtsMessage` and the heap fragments
    /// holding its data when it is not on the heap yet.
    pub bytes: u64,
}

/// Why a walk stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// An element could not be read or did not look like one (freed or moved meanwhile).
    Torn,
    /// The snapshot's budget of elements ran out.
    Budget,
}

/// Walks the queues of the process at `proc_addr` whose `Process` image is `rec`, spending at
/// most `*budget` elements (decremented).
pub fn walk(
    t: &BuildTable,
    cache: &mut PageCache,
    mem: &RemoteMemory,
    proc_addr: u64,
    rec: &[u8],
    budget: &mut u64,
) -> Result<Mailbox, WalkError> {
    let p = &t.process;
    let q = &t.signal_queue;
    let record = |off: u64| crate::snapshot::u64_at(rec, off);
    if [p.sig_qs_first, p.sig_qs_cont, p.sig_inq_first, p.sig_inq_buffers].iter().all(|&o| record(o) == 0) {
        return Ok(Mailbox::default());
    }
    // The heads, read afresh and in the order messages move: the in-queue buffers, then the
    // outer queue, the middle and the inner one. A message that moves while they are read
    // moves into a list whose head is read later, so none is missed. One may then be reached
    // twice (a flushed buffer's elements are appended to the outer queue, a fetched outer
    // queue to the middle or inner one): the elements of the buffers and the outer queue are
    // remembered and counted once. While the process handles signals the inner queue's end is
    // briefly linked to the middle queue's head: its walk stops there.
    let live = |off: u64| mem.read_u64(proc_addr + off, "signal queue head").map_err(|_| WalkError::Torn);
    let mut transit = Vec::new();
    let buffers = live(p.sig_inq_buffers)?;
    if buffers != 0 {
        // Every slot, not only those `nonempty_slots` marks: a flush clears the marks first and
        // then moves each slot's messages to the outer queue.
        let n = q.buffer_count.min(MAX_BUFFERS);
        let slots = mem.read_vec(buffers + q.buffers_slots, (n * q.buffer_size) as usize, "in-queue buffers")
            .map_err(|_| WalkError::Torn)?;
        transit.extend((0..n).map(|i| crate::snapshot::u64_at(&slots, i * q.buffer_size + q.buffer_queue_first)));
    }
    transit.push(live(p.sig_inq_first)?);
    let cont = live(p.sig_qs_cont)?;
    let first = live(p.sig_qs_first)?;
    let mut mb = Mailbox::default();
    let mut seen = Seen::default();
    for head in transit {
        walk_list(q, cache, head, None, Visit::Remember(&mut seen), budget, &mut mb)?;
    }
    walk_list(q, cache, cont, None, Visit::Skip(&seen), budget, &mut mb)?;
    walk_list(q, cache, first, Some(cont), Visit::Skip(&seen), budget, &mut mb)?;
    Ok(mb)
}

/// Elements of the buffers and the outer queue, by address.
type Seen = std::collections::HashSet<u64, std::hash::BuildHasherDefault<crate::memory::LineHasher>>;

/// Transit elements remembered past this many: the walk gives up (the counters serve).
const MAX_SEEN: usize = 4 << 20;

enum Visit<'a> {
    /// Count each element and remember it.
    Remember(&'a mut Seen),
    /// Count the elements not remembered.
    Skip(&'a Seen),
}

fn walk_list(
    q: &SignalQueueLayout,
    cache: &mut PageCache,
    mut at: u64,
    stop_at: Option<u64>,
    mut visit: Visit<'_>,
    budget: &mut u64,
    mb: &mut Mailbox,
) -> Result<(), WalkError> {
    // Only the head every element has: a message without data of its own is allocated
    // without the embedded fragment (`ErtsMessageRef`), and other signals are shorter still.
    let head = q.msg_next.max(q.msg_attached).max(q.msg_tag) + 8;
    let mut node = vec![0u8; head as usize];
    while at != 0 && Some(at) != stop_at {
        if !at.is_multiple_of(8) {
            return Err(WalkError::Torn);
        }
        if *budget == 0 {
            return Err(WalkError::Budget);
        }
        *budget -= 1;
        cache.read(at, &mut node).ok_or(WalkError::Torn)?;
        let word = |off: u64| crate::snapshot::u64_at(&node, off);
        let counted = match &mut visit {
            Visit::Remember(seen) => {
                if seen.len() >= MAX_SEEN {
                    return Err(WalkError::Budget);
                }
                seen.insert(at)
            }
            Visit::Skip(seen) => !seen.contains(&at),
        };
        if counted && word(q.msg_tag) & q.non_message_tag_mask != q.non_message_tag {
            mb.messages += 1;
            mb.bytes += q.msg_size + 8 * attached_words(q, cache, at, word(q.msg_attached))?;
        }
        at = word(q.msg_next);
    }
    Ok(())
}

/// Words of message data held in heap fragments (`erts_msg_attached_data_size`).
fn attached_words(q: &SignalQueueLayout, cache: &mut PageCache, msg: u64, attached: u64) -> Result<u64, WalkError> {
    if attached == 0 {
        return Ok(0);
    }
    let words = if attached == q.combined_hfrag {
        cache.u64(msg + q.msg_hfrag_used).ok_or(WalkError::Torn)?
    } else {
        let (mut words, mut frag, mut hops) = (0u64, attached, 0);
        while frag != 0 {
            hops += 1;
            if !frag.is_multiple_of(8) || hops > MAX_FRAGMENTS {
                return Err(WalkError::Torn);
            }
            words = words.saturating_add(cache.u64(frag + q.frag_used).ok_or(WalkError::Torn)?);
            frag = cache.u64(frag + q.frag_next).ok_or(WalkError::Torn)?;
        }
        words
    };
    if words < MAX_WORDS { Ok(words) } else { Err(WalkError::Torn) }
}
