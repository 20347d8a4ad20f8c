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
use crate::memory::PageCache;

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

/// Walks the queues of the process whose `Process` image is `rec`, spending at most `*budget`
/// elements (decremented).
pub fn walk(t: &BuildTable, cache: &mut PageCache, rec: &[u8], budget: &mut u64) -> Result<Mailbox, WalkError> {
    let p = &t.process;
    let q = &t.signal_queue;
    let field = |off: u64| crate::snapshot::u64_at(rec, off);
    // The lists, in the order messages move through them (outer -> middle -> inner). While
    // the process fetches or handles signals, the end of one list is briefly linked to the
    // head of the next, and a list read later may have been appended to one read earlier:
    // each walk stops at the head of any list still to walk, so no element counts twice.
    let mut heads = vec![field(p.sig_qs_first), field(p.sig_qs_cont), field(p.sig_inq_first)];
    let buffers = field(p.sig_inq_buffers);
    if buffers != 0 {
        // Every slot, not only those `nonempty_slots` marks: a flush clears the marks first and
        // then moves each slot's messages to the outer queue.
        for slot in 0..q.buffer_count.min(MAX_BUFFERS) {
            let first = buffers + q.buffers_slots + slot * q.buffer_size + q.buffer_queue_first;
            heads.push(cache.u64(first).ok_or(WalkError::Torn)?);
        }
    }
    let mut mb = Mailbox::default();
    for (i, &head) in heads.iter().enumerate() {
        walk_list(q, cache, head, &heads[i + 1..], budget, &mut mb)?;
    }
    Ok(mb)
}

fn walk_list(
    q: &SignalQueueLayout,
    cache: &mut PageCache,
    mut at: u64,
    later: &[u64],
    budget: &mut u64,
    mb: &mut Mailbox,
) -> Result<(), WalkError> {
    // Only the head every element has: a message without data of its own is allocated
    // without the embedded fragment (`ErtsMessageRef`), and other signals are shorter still.
    let head = q.msg_next.max(q.msg_attached).max(q.msg_tag) + 8;
    let mut node = vec![0u8; head as usize];
    while at != 0 && !later.contains(&at) {
        if !at.is_multiple_of(8) {
            return Err(WalkError::Torn);
        }
        if *budget == 0 {
            return Err(WalkError::Budget);
        }
        *budget -= 1;
        cache.read(at, &mut node).ok_or(WalkError::Torn)?;
        let word = |off: u64| crate::snapshot::u64_at(&node, off);
        if word(q.msg_tag) & q.non_message_tag_mask != q.non_message_tag {
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
