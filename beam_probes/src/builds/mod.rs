//! One table per supported BEAM build. A table holds every fact scope-probe relies on for
//! that build: which functions implement each hook point, the struct offsets it reads, and
//! the term layouts. Nothing outside `beam_probes` knows any of these numbers.

mod otp25;
mod otp27;
mod otp29;

pub use otp25::DEBIAN12_OTP25;
pub use otp27::DEBIAN13_OTP27;
pub use otp29::DEBIAN_FORKY_OTP29;

use crate::hooks::HookSpec;
use crate::terms::{AtomLayout, PidLayout};

/// Symbols that hold the release strings, read before a table is chosen. They exist in every
/// OTP build that keeps its dynamic symbols (`const char etp_otp_release[]`).
pub const OTP_RELEASE_SYMBOL: &str = "etp_otp_release";
pub const ERTS_VERSION_SYMBOL: &str = "etp_erts_version";

/// Offsets inside `Process`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessLayout {
    /// `common.id`: the pid term.
    pub id: u64,
    /// `common.u.alive.reg`: pointer to the `RegProc` when the process is registered.
    pub reg: u64,
    /// `heap_sz`: young heap size in words.
    pub heap_sz: u64,
    /// `old_heap` and `old_hend`: the old generation (NULL when there is none).
    pub old_heap: u64,
    pub old_hend: u64,
    /// `mbuf_sz`: words in heap and message fragments.
    pub mbuf_sz: u64,
    /// `i`: where the process resumes (JIT code address).
    pub i: u64,
    /// `reds`: reductions executed (up to the last schedule out).
    pub reds: u64,
    /// `state`: the atomic state flags (`ERTS_PSFLG_*`).
    pub state: u64,
    /// Message counters whose sum is the message queue length (`process_info`'s
    /// `message_queue_len` once the process has handled its pending signals).
    /// OTP 25: `sig_qs.len` (private queue) and `sig_inq.len` (outer queue); no third counter.
    /// OTP 26+: `sig_qs.mq_len` (handled messages of the private queue), `sig_qs.mlenoffs`
    /// (fetched, not yet handled) and `sig_inq.mlenoffs` (outer queue). Messages queued in
    /// front of a pending non-message signal (a link, monitor or process_info request) are
    /// counted in that signal, not here: the sum can be short while such a signal waits.
    pub sig_qs_len: u64,
    /// 0 when the build has no such counter.
    pub sig_qs_cont_len: u64,
    pub sig_inq_len: u64,
    /// The signal queues themselves (lists of `ErtsMessage`, see [`SignalQueueLayout`]):
    /// `sig_qs.first` (inner queue: received messages), `sig_qs.cont` (middle queue: fetched,
    /// not yet handled), `sig_inq.first` (outer queue) and `sig_inq_buffers` (the per-sender
    /// buffers the VM switches to when many processes send to one: NULL until then).
    pub sig_qs_first: u64,
    pub sig_qs_cont: u64,
    pub sig_inq_first: u64,
    pub sig_inq_buffers: u64,
    /// `current`: the `ErtsCodeMFA *` of the function it is in, when the VM has set it (a
    /// dirty NIF running, or a `process_info` that looked it up since the process last ran);
    /// NULL otherwise, and the resume address `i` tells.
    pub current: u64,
    /// `u.initial`: the `ErtsCodeMFA` (module, function, arity) the process was spawned with.
    pub initial: u64,
    pub group_leader: u64,
    /// `ProcDict *dictionary` (NULL until the process first puts a key).
    pub dictionary: u64,
    /// What else `process_info(P, memory)` counts (`erts_process_memory`): `arg_reg` when it
    /// is not `def_arg_reg` (`arity` words), the `abandoned_heap` (`hend - heap` words), the
    /// `psd` block when there is one.
    pub arity: u64,
    /// Width of `arity` (a Uint in OTP 25, a byte in 27+).
    pub arity_bytes: u64,
    pub arg_reg: u64,
    pub def_arg_reg: u64,
    pub heap: u64,
    /// `htop`: the young heap's used part ends here (identity terms are read ahead from it).
    pub htop: u64,
    /// `stop`: the top of the Erlang stack, which grows down from `hend` towards `htop`. The
    /// JIT stores it when it enters C code for a BIF, a NIF or the collector; while JIT code
    /// runs, the stack pointer register is the Erlang stack pointer instead.
    pub stop: u64,
    pub hend: u64,
    pub abandoned_heap: u64,
    pub psd: u64,
    /// `sizeof(ErtsPSD)`.
    pub psd_size: u64,
    /// `sizeof(Process)`.
    pub size: u64,
}

/// The signal queues' elements (`struct erl_mesg`, erl_message.h): messages and, with the
/// same head, other signals. Walking them counts messages in transit and what they hold.
#[derive(Debug, Clone, Copy)]
pub struct SignalQueueLayout {
    /// `erl_mesg.next`, `.data.attached` (the heap fragment with the message's data, NULL when
    /// it is on the receiver's heap), `.m` (`m[0]`: the message term, or a signal's tag) and
    /// the embedded fragment's `hfrag.used_size`; `sizeof(ErtsMessage)`.
    pub msg_next: u64,
    pub msg_attached: u64,
    pub msg_tag: u64,
    pub msg_hfrag_used: u64,
    pub msg_size: u64,
    /// `erl_heap_fragment.next` and `.used_size` (words), for data in separate fragments.
    pub frag_next: u64,
    pub frag_used: u64,
    /// `ErtsSignalInQueueBufferArray.slots[]`, of `sizeof(ErtsSignalInQueueBuffer)` bytes
    /// each; in each slot, `b.queue.first`.
    pub buffer_size: u64,
    pub buffers_slots: u64,
    pub buffer_queue_first: u64,
    /// Not in DWARF. `ERTS_PROC_SIG_INQ_BUFFERED_NR_OF_BUFFERS`.
    pub buffer_count: u64,
    /// Not in DWARF. A signal that is not a message has an external-pid header as its tag
    /// (`ERTS_SIG_IS_NON_MSG_TAG`: `(tag & 0x3f) == 0x30`).
    pub non_message_tag_mask: u64,
    pub non_message_tag: u64,
    /// Not in DWARF. `ERTS_MSG_COMBINED_HFRAG`: `data.attached` when the data is in the
    /// message's own embedded fragment.
    pub combined_hfrag: u64,
}

/// The process dictionary (`struct proc_dict`, erl_process_dict.h): a hash array of
/// `usedSlots` terms, each NIL, a `{Key, Value}` tuple or a list of them. scope-probe reads
/// only the identity keys (`$initial_call`, `$ancestors`, `$process_label`).
#[derive(Debug, Clone, Copy)]
pub struct ProcDictLayout {
    pub used_slots: u64,
    pub array_size: u64,
    pub data: u64,
    /// `sizeof(ProcDict)`: the array takes `sizeof + (arraySize - 1) * 8` bytes.
    pub size: u64,
}

/// Term tags of a build (erl_term.h), for reading the few terms identity needs: lists,
/// tuples, atoms, small integers, pids and binaries. Not in DWARF.
#[derive(Debug, Clone, Copy)]
pub struct TermLayout {
    /// The primary tag (low 2 bits): list cell pointer, boxed pointer, immediate.
    pub primary_mask: u64,
    pub list: u64,
    pub boxed: u64,
    pub immed: u64,
    /// Small integers: `(value << small_shift) | small_tag` under `small_mask`.
    pub small_mask: u64,
    pub small_tag: u64,
    pub small_shift: u32,
    pub nil: u64,
    /// Header words: the subtag under `header_mask`; a tuple's is `arityval` with the arity
    /// above `arity_shift`.
    pub header_mask: u64,
    pub arityval: u64,
    pub arity_shift: u32,
    /// Bitstrings (OTP 27+; `None`: only shown as `<<...>>`).
    pub bits: Option<BitsLayout>,
}

/// Bitstrings on the heap (erl_bits.h, OTP 27+): `ErlHeapBits { thing_word; size (bits);
/// data }` and `ErlSubBits { thing_word; base_flags; start; end (bits) }`, whose base (flag
/// bits cleared) points at the bytes whether they are on a heap or off it.
#[derive(Debug, Clone, Copy)]
pub struct BitsLayout {
    pub heap_bits: u64,
    pub heap_bits_size: u64,
    pub heap_bits_data: u64,
    pub sub_bits: u64,
    pub sub_bits_base: u64,
    pub sub_bits_base_flags: u64,
    pub sub_bits_start: u64,
    pub sub_bits_end: u64,
}

/// OTP's own processes, as a build names them: what tells a process of the runtime or of
/// OTP's applications (kernel, stdlib, sasl...) from the user's, wherever either is blocked.
#[derive(Debug, Clone, Copy)]
pub struct OtpProcesses {
    /// Registered names of processes OTP starts (exact, or prefixes ending in `*`).
    pub names: &'static [&'static str],
    /// Modules (exact) and module prefixes (ending in `*`) whose code a process of OTP's own
    /// was started in: its initial call (`$initial_call` when proc_lib set one, else the
    /// spawn's MFA).
    pub modules: &'static [&'static str],
    /// A process spawned from a fun (`erlang:apply/2`, with no `$initial_call`) belongs to OTP
    /// when its group leader is the group leader of one of these registered processes: init
    /// (the runtime's own), kernel_sup and sasl_sup (their application masters).
    pub group_leaders_of: &'static [&'static str],
    /// Behaviours whose `$initial_call` names the user's callback module second
    /// (`{supervisor, Module, 1}`).
    pub callback_second: &'static [&'static str],
    /// Where a process waits for the reply to a call (`gen_server:call`, `gen_statem:call`...
    /// all wait in `gen:do_call/4`, which monitors the process called).
    pub call_waits: &'static [&'static str],
}

/// Bits of `Process.state` that decide what `process_info(P, status)` reports. Each field is
/// the union of the flags tested for that status, in `erts_process_state2status`'s order.
#[derive(Debug, Clone, Copy)]
pub struct ProcessStatusFlags {
    pub free: u32,
    pub exiting: u32,
    pub gc: u32,
    pub suspended: u32,
    /// RUNNING | RUNNING_SYS | DIRTY_RUNNING | DIRTY_RUNNING_SYS
    pub running: u32,
    /// ACTIVE | ACTIVE_SYS | DIRTY_ACTIVE_SYS
    pub active: u32,
}

/// Offset of the name atom inside a `RegProc`.
#[derive(Debug, Clone, Copy)]
pub struct RegProcLayout {
    pub name: u64,
}

/// Offsets inside the `ErtsPTab` behind the process table symbol.
#[derive(Debug, Clone, Copy)]
pub struct PtabLayout {
    /// Pointer to the array of element pointers (0 = free slot).
    pub tab: u64,
    /// Number of slots (u32).
    pub max: u64,
    /// The index masks and shifts (u32 each) that map a pid's data to its slot
    /// (`erts_ptab_data2pix` / `erts_ptab_pixdata2data`). Set at boot from the table size
    /// (`+P`), so read from the VM rather than assumed; OTP 26+ pid terms need them to decode.
    pub pix_mask: u64,
    /// Width of `pix_mask`, `pix_cl_mask` and `pix_cli_mask` (4 bytes in OTP 25, 8 in 27;
    /// the shifts stay u32).
    pub pix_mask_bytes: u64,
    pub pix_cl_mask: u64,
    pub pix_cl_shift: u64,
    pub pix_cli_mask: u64,
    pub pix_cli_shift: u64,
}

/// A port (`struct _erl_drv_port`, erl_port.h: `Port`), an element of the port table
/// (`erts_port`, an `ErtsPTab` read with [`PtabLayout`]'s offsets like the process table),
/// and what scope-probe reads through it: the driver's name (`erts_driver_t`, erl_driver.h
/// internals in global.h) and, for the inet drivers, the socket's descriptor
/// (`inet_descriptor`, inet_drv.c). Only metadata: never the data queued or buffered.
#[derive(Debug, Clone, Copy)]
pub struct PortLayout {
    /// `common.id`: the port id term (see [`BuildTable::port_id`]).
    pub id: u64,
    /// `sched.flags` (`ErtsPortTaskSched`, an atomic32): the `ERTS_PTS_FLG_*` bits.
    pub sched_flags: u64,
    /// `connected`: the pid term of the connected (owning) process, as
    /// `erlang:port_info(P, connected)` reports it.
    pub connected: u64,
    /// `bytes_in` and `bytes_out` (Uint): `port_info(P, input | output)`.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `ioq.size` (`ErtsIOQueue`): bytes queued in the driver's queue, what
    /// `port_info(P, queue_size)` reports (`erts_port_ioq_size`, which only takes the port
    /// data lock around this same read).
    pub ioq_size: u64,
    /// `name` (char *): `port_info(P, name)`: the driver's name, or the command spawned.
    pub name: u64,
    /// `drv_ptr` (`erts_driver_t *`) and, in it, `name` (char *): the driver's name.
    pub drv_ptr: u64,
    pub driver_name: u64,
    /// `drv_data` (UWord): what the driver's start callback returned, for the inet drivers a
    /// pointer to their descriptor, which starts with an `inet_descriptor`.
    pub drv_data: u64,
    /// `os_pid` (SWord): the spawned OS process, -1 when none (`port_info(P, os_pid)`).
    pub os_pid: u64,
    /// `state` (an atomic32): the `ERTS_PORT_SFLG_*` bits.
    pub state: u64,
    /// `sizeof(Port)`.
    pub size: u64,
    /// `inet_descriptor.s` (int): the socket's file descriptor in the VM, -1 once closed.
    pub inet_socket: u64,
    /// `inet_descriptor.port` (ErlDrvPort): its port, the `Port *` itself in a non-debug
    /// build (`ERTS_Port2ErlDrvPort`): checked before the socket number is trusted.
    pub inet_port: u64,
    /// Not in DWARF. Drivers whose `drv_data` is an inet descriptor (inet_drv.c's
    /// `tcp_inet`, `udp_inet`, `sctp_inet` driver entries).
    pub inet_drivers: &'static [&'static str],
    /// Not in DWARF. `ERTS_PTS_FLG_BUSY_PORT` (the driver said it is busy:
    /// `set_busy_port`, e.g. a socket whose queue passed its high watermark) and
    /// `ERTS_PTS_FLG_BUSY_PORT_Q` (the port's task queue passed its limit), erl_port_task.h.
    pub busy_port: u32,
    pub busy_port_queue: u32,
    /// Not in DWARF. `ERTS_PORT_SFLGS_INVALID_LOOKUP` (erl_port.h): FREE | INITIALIZING |
    /// INVALID | EXITING | CLOSING, the states in which `erlang:port_info/2` says
    /// `undefined` and `erlang:ports/0` leaves the port out.
    pub not_alive: u32,
}

/// Names of the global data symbols a build table relies on.
#[derive(Debug, Clone, Copy)]
pub struct GlobalSymbols {
    pub process_table: &'static str,
    /// The port table (`ErtsPTab erts_port`, io.c): same layout as the process table.
    pub port_table: &'static str,
    pub atom_table: &'static str,
    /// The GDB JIT interface's `jit_descriptor` (list of the JIT's code records).
    pub jit_debug_descriptor: &'static str,
    /// `int erts_frame_layout`: 1 when JIT code keeps frame pointers (`+JPperf true|fp`).
    pub frame_layout: &'static str,
    /// `ErtsAlignedSchedulerData *` of the normal, dirty CPU and dirty I/O schedulers: arrays
    /// indexed by the scheduler's number minus one (see [`SchedulerLayout`]).
    pub schedulers: &'static str,
    pub dirty_cpu_schedulers: &'static str,
    pub dirty_io_schedulers: &'static str,
    /// `ErtsAlignedRunQueue *erts_aligned_run_queues` and `Uint erts_no_run_queues`: the normal
    /// schedulers' run queues (see [`RunQueueLayout`]).
    pub run_queues: &'static str,
    pub run_queue_count: &'static str,
    /// `ErlNode *erts_this_node`: this VM's node (its name, see [`NodeLayout`]).
    pub this_node: &'static str,
    /// What `erlang:memory()` adds up (erl_alloc.c, all exported): `ErtsAllocatorInfo_t
    /// erts_allctrs_info[]` and `ErtsAllocatorThrSpec_t erts_allctr_thr_spec[]` (the allocator
    /// instances, see [`AllocLayout`]), `Uint erts_total_code_size` (loaded code, which the JIT
    /// maps outside the allocators) and `erts_atomic_t erts_ets_misc_mem_size` (ETS memory
    /// outside ets_alloc).
    pub allocators: &'static str,
    pub allocator_instances: &'static str,
    pub total_code_size: &'static str,
    pub ets_misc_memory: &'static str,
}

/// Pids of other nodes as the distribution hooks see them (dist.c, erl_term.h).
#[derive(Debug, Clone, Copy)]
pub struct DistLayout {
    /// `Process *c_p` in `ErtsDSigSendContext`: the sender of a remote send.
    pub send_context_process: u64,
    /// An external pid's header (`ExternalThing.header`): `header & header_mask == header_tag`.
    pub external_header_mask: u64,
    pub external_pid_header: u64,
    /// `struct erl_node_ *node` in `ExternalThing`: the pid's node (its name at
    /// [`NodeLayout::sysname`]).
    pub external_node: u64,
    /// `data.pid.num` and `data.pid.ser` (two Uint32): the pid as its own node prints it,
    /// `<0.num.ser>`.
    pub external_pid_number: u64,
}

/// Process aliases (erl_term.h, OTP 24+): an alias is a pid reference, `ErtsPRefThing {
/// header; Uint32 marker; Uint32 num[5] }` on 64-bit little-endian builds, whose `num[3..5]`
/// hold the owner's pid term. Read by the alias-send hook to name the receiver.
#[derive(Debug, Clone, Copy)]
pub struct AliasLayout {
    /// The whole header word of a pid reference: `_make_header(3, _TAG_HEADER_REF)`.
    pub pid_ref_header: u64,
    /// Offset of the owner's pid term in the reference thing.
    pub pid_ref_pid: u64,
}

/// This VM's node (`struct erl_node_`, erl_node_tables.h): only its name is read.
#[derive(Debug, Clone, Copy)]
pub struct NodeLayout {
    /// `Eterm sysname`: the node name atom (`a@host`, `nonode@nohost`).
    pub sysname: u64,
}

/// A process's monitors (`ErtsMonLnkNode`, erl_monitor_link.h): the ones it holds on others
/// are what a caller blocked in `gen:do_call` waits on (the call monitors its server). Only the
/// monitored pid of each is read.
#[derive(Debug, Clone, Copy)]
pub struct MonitorLayout {
    /// `Process.common.u.alive.monitors`: the root of a red-black tree of monitors.
    pub monitors: u64,
    /// `Process.common.u.alive.links`: the root of its tree of links, nodes of the same shape
    /// (each side of a link has its own node, `other.item` the process at the other end).
    pub links: u64,
    /// In a node: `node.tree.right`, `node.tree.left`, `other.item` (the other end's pid),
    /// `flags` (and its width), `type` (0: the type is in `flags`, OTP 29).
    pub tree_right: u64,
    pub tree_left: u64,
    pub other_item: u64,
    pub flags: u64,
    pub flags_bytes: u64,
    pub type_field: u64,
    /// Not in DWARF: where the type is in `type` or `flags` (mask), `ERTS_MON_TYPE_PROC`,
    /// and `ERTS_ML_FLG_TARGET` (set on the monitored side's copy).
    pub type_mask: u32,
    pub type_proc: u32,
    /// Not in DWARF: `ERTS_LNK_TYPE_PROC` (a link to a local process).
    pub link_type_proc: u32,
    pub target_flag: u32,
}

/// The run queues of the normal schedulers (`ErtsRunQueue`, erl_process.h): how many processes
/// and ports wait to run on each.
#[derive(Debug, Clone, Copy)]
pub struct RunQueueLayout {
    /// `sizeof(ErtsAlignedRunQueue)`: the array's stride.
    pub aligned_size: u64,
    /// `len`: processes and ports in the queue (a 32-bit atomic).
    pub len: u64,
}

/// A scheduler's own data (`ErtsSchedulerData`, erl_process.h), which tells what the thread
/// that owns it is doing at any moment: the process (or port) it runs, or whether it waits
/// for work. Every scheduler thread has one, in a cache-line padded array per kind.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerLayout {
    /// `sizeof(ErtsAlignedSchedulerData)`: the arrays' stride.
    pub aligned_size: u64,
    /// `current_process`: the `Process *` the scheduler runs, NULL between processes. Set by
    /// `erts_schedule` when it picks a process and cleared when it takes it out, so it holds
    /// while the process runs JIT code, a BIF, a NIF or the collector.
    pub current_process: u64,
    /// `current_port`: the `Port *` whose tasks it runs, NULL otherwise.
    pub current_port: u64,
    /// `ssi`: its `ErtsSchedulerSleepInfo *`, whose `flags` say whether it waits for work.
    pub ssi: u64,
    /// `no` (normal schedulers) and `dirty_no` (dirty ones): its number, from 1; checked
    /// against the thread's name before the data is trusted.
    pub no: u64,
    pub dirty_no: u64,
    /// `ErtsSchedulerSleepInfo.flags` (a 32-bit atomic).
    pub ssi_flags: u64,
    /// Not in DWARF: `ERTS_SSI_FLG_*` (erl_process.h).
    pub sleep_flags: SleepFlags,
}

/// The bits of `ErtsSchedulerSleepInfo.flags` (`ERTS_SSI_FLG_*`). A scheduler out of work
/// sets `waiting | sleeping` and spins for a while; when the spinning ends without work it
/// adds `tse_sleeping` (it blocks on its event) or `poll_sleeping` (it blocks in the poll
/// set, waiting for I/O).
#[derive(Debug, Clone, Copy)]
pub struct SleepFlags {
    pub sleeping: u32,
    pub poll_sleeping: u32,
    pub tse_sleeping: u32,
    pub waiting: u32,
}

/// ETS tables (erl_db.h, erl_db_util.h, erl_flxctr.h): each normal scheduler keeps the tables
/// created on it in a circular list (`ErtsSchedulerData.ets_tables`), linked through
/// `DbTableCommon.all`; `ets:all()` walks the same lists. Only a table's metadata is read, never
/// its objects.
#[derive(Debug, Clone, Copy)]
pub struct EtsLayout {
    /// `ErtsSchedulerData_.ets_tables.clist` (the first table, NULL when none) and `.count`.
    pub scheduler_list: u64,
    pub scheduler_count: u64,
    /// In `db_table_common` (the start of every `DbTable`): `all.next`, `owner` (a pid term),
    /// `the_name` (an atom), `btid` (the magic binary whose ref numbers are the table's id),
    /// `status` (a u32 of [`EtsFlags`]).
    pub next: u64,
    pub owner: u64,
    pub name: u64,
    pub btid: u64,
    pub status: u64,
    /// `counters` (an `ErtsFlxCtr`): `is_decentralized` (an int; a bool in 29) and `u.counters`: the objects
    /// (`[0]`) and the bytes (`[1]`) of a centralized counter, or, decentralized (tables with
    /// write_concurrency), a pointer to an `ErtsFlxCtrDecentralizedCtrArray` whose slots each
    /// hold a share of both.
    pub counters_decentralized: u64,
    pub counters: u64,
    /// `ErtsFlxCtrDecentralizedCtrArray.array` and `sizeof(ErtsFlxCtrDecentralizedCtrArrayElem)`.
    pub counter_slots: u64,
    pub counter_slot_size: u64,
    /// `magic_binary.refn`: the u32 ref numbers, printed last to first (`#Ref<0.N2.N1.N0>`).
    pub refn: u64,
    /// Not in DWARF: `ERTS_REF_NUMBERS`.
    pub ref_numbers: u64,
    /// Not in DWARF: the most decentralized counter groups a VM makes (`+dcg`'s default,
    /// erl_cpu_topology.c); a counter array has one slot more than the VM's groups.
    pub max_counter_groups: u64,
    pub flags: EtsFlags,
}

/// The bits of `DbTableCommon.status` (erl_db_util.h `DB_*`). Not in DWARF.
#[derive(Debug, Clone, Copy)]
pub struct EtsFlags {
    pub private: u32,
    pub protected: u32,
    pub public: u32,
    /// Being deleted: `ets:all()` skips it.
    pub delete: u32,
    pub set: u32,
    pub bag: u32,
    pub duplicate_bag: u32,
    pub ordered_set: u32,
    /// An ordered_set with write_concurrency (a contention adapting tree).
    pub ca_ordered_set: u32,
    pub named_table: u32,
    /// `DB_FINE_LOCKED` (write_concurrency) and `DB_FREQ_READ` (read_concurrency).
    pub write_concurrency: u32,
    pub read_concurrency: u32,
}

/// How a build names its threads (`/proc/PID/task/TID/comm`, which the kernel cuts at 15
/// characters): one pattern per role, `{}` standing for the thread's number.
#[derive(Debug, Clone, Copy)]
pub struct ThreadNames {
    pub normal: &'static str,
    pub dirty_cpu: &'static str,
    pub dirty_io: &'static str,
    pub aux: &'static str,
    pub poller: &'static str,
    pub async_pool: &'static str,
    /// Threads of other roles, by exact (cut) name: the signal and message dispatchers.
    pub dispatchers: &'static [&'static str],
}

/// Conventions of the x86-64 JIT's generated code (beam_asm.hpp), which CPU samples rely on.
#[derive(Debug, Clone, Copy)]
pub struct JitConventions {
    /// The register that holds the running `Process *` (`c_p`) while JIT code runs.
    pub process_register: Register,
    /// Continuation pointers (return addresses) on the Erlang stack are aligned to this many
    /// bytes (`aligned_call`: the CP tag is 0b00), which tells them from terms: a boxed,
    /// list or immediate term has one of its two low bits set.
    pub cp_alignment: u64,
}

/// A user-mode x86-64 register, as the JIT uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    R13,
    Rbx,
    Rbp,
    Rsp,
}

/// Layout of the records ERTS hangs on the GDB JIT interface (`symfile_addr` of each
/// `jit_code_entry`). They are ERTS's own structures, not ELF, and OTP has changed them
/// between releases (OTP 24 had no header and 64-bit ranges), so they belong to the build.
///
/// A record starts with `struct debug_info { u32 header; union payload }`; header 0 is the
/// emulator record, 1 a module record. A module record is followed by `range_count`
/// `range_info` records, each followed by its `line_count` `line_info` records; the strings
/// are NUL-terminated and their lengths include the NUL.
#[derive(Debug, Clone, Copy)]
pub struct JitRecordLayout {
    /// `debug_info.header` of the one emulator record (`emulator_info` payload).
    pub header_emulator: u32,
    /// `debug_info.header` of a module record (`module_info` payload).
    pub header_module: u32,
    /// `emulator_info.frame_layout` (0: return address only, 1: frame pointer + return address).
    pub emulator_frame_layout: u64,
    /// `sizeof(struct debug_info)`: a module's first range follows at this offset plus the
    /// module name's length.
    pub debug_info_size: u64,
    /// `module_info` fields, from the start of the record.
    pub module_base_address: u64,
    pub module_range_count: u64,
    pub module_code_size: u64,
    pub module_name_length: u64,
    pub module_name: u64,
    /// `range_info` fields (offsets from `base_address`, u32) and `sizeof(struct range_info)`.
    pub range_start_offset: u64,
    pub range_end_offset: u64,
    pub range_line_count: u64,
    pub range_name_length: u64,
    pub range_name: u64,
    pub range_info_size: u64,
    /// `line_info.file_length` and `sizeof(struct line_info)`: enough to step over line
    /// records (scope-probe does not use line numbers yet).
    pub line_file_length: u64,
    pub line_info_size: u64,
}

/// The memory allocators as `erlang:memory()` reads them (`erts_memory`, `alcu_size` in
/// erl_alloc.c; `erts_alcu_current_size`/`erts_alcu_foreign_size` in erl_alloc_util.c): each
/// allocator type has one instance (`ErtsAllocatorInfo_t.extra`) or one per scheduler
/// (`thr_spec`: `ErtsAllocatorThrSpec_t.allctr[size]`); each instance (`Allctr_t`) counts the
/// bytes of the blocks it holds per allocator type, in its multiblock and singleblock carriers
/// and in the carriers it gave to the pool (carriers migrate between instances and types, so
/// a type's bytes are summed over every instance). Only counters: never a block is read.
#[derive(Debug, Clone, Copy)]
pub struct AllocLayout {
    /// `ErtsAllocatorInfo_t`: its size and `alloc_util`, `enabled`, `thr_spec` (ints) and
    /// `extra` (the `Allctr_t *` of a single instance).
    pub info_size: u64,
    pub info_alloc_util: u64,
    pub info_enabled: u64,
    pub info_thr_spec: u64,
    pub info_extra: u64,
    /// `ErtsAllocatorThrSpec_t`: its size, `size` (an int: instances) and `allctr` (`Allctr_t **`).
    pub thr_spec_size: u64,
    pub thr_spec_count: u64,
    pub thr_spec_instances: u64,
    /// In `Allctr_t`: `mbcs.blocks` and `sbcs.blocks` (a `BlockStats_t` per allocator type from
    /// `ERTS_ALC_A_MIN`), `sizeof(BlockStats_t)` and `curr.size` in it.
    pub mbcs_blocks: u64,
    pub sbcs_blocks: u64,
    pub block_stats_size: u64,
    pub block_curr_size: u64,
    /// `cpool.util_limit` (non-zero: the carrier pool is on) and `cpool.stat.blocks_size` (an
    /// atomic per allocator type: bytes of blocks in pooled carriers).
    pub cpool_util_limit: u64,
    pub cpool_blocks_size: u64,
    /// `fix` (`ErtsAlcFixList_t *`, one per fixed-size type, fix_alloc only), its size,
    /// `type_size`, and the `allocated`/`used` counts with the pool on (`u.cpool`) and off
    /// (`u.nocpool`).
    pub fix: u64,
    pub fix_size: u64,
    pub fix_type_size: u64,
    pub fix_cpool_allocated: u64,
    pub fix_cpool_used: u64,
    pub fix_nocpool_allocated: u64,
    pub fix_nocpool_used: u64,
    /// The atom table (`erts_atom_table`, an `IndexTable`) as `atom_table_sz` sizes it:
    /// `sizeof(IndexTable)`, its `size` (slots allocated, an int), `htable.shift` (an int: the
    /// hash has `1 << (64 - shift)` buckets) and `htable.name` (a C string, counted too).
    pub index_table_bytes: u64,
    pub index_table_size: u64,
    pub hash_shift: u64,
    pub hash_name: u64,
    /// Not in DWARF: `sizeof(AtomText)` (atom.c: a next pointer and `ATOM_TEXT_SIZE` bytes),
    /// the chunks atom texts are allocated from up to OTP 28 (the atoms built into the VM
    /// keep their text in the executable and take none); 0 from OTP 29, where an atom's text
    /// is a literal binary and the atom space is the sum of the atoms' lengths.
    pub atom_text_chunk_bytes: u64,
    /// `sizeof(Hash)` (hash.h): `hash_table_sz` counts it, its buckets and its name (the
    /// `shift` and `name` offsets are the same as in an `IndexTable`, whose first member is
    /// its hash).
    pub hash_bytes: u64,
    /// How the code kind's static tables are found (see [`CodeStatics`]).
    pub code: CodeStatics,
    /// `ErtsPTab.r.o.free_id_data`: when set, the process table keeps a 4-byte free-id slot
    /// beside each element pointer (`erts_ptab_mem_size`).
    pub ptab_free_id_data: u64,
    /// Not in DWARF (the generated erl_alloc_types.h): the last allocator type
    /// (`ERTS_ALC_A_MAX`; `ERTS_ALC_A_MIN` is 1) and the types `erts_memory` treats apart.
    pub max_type: u64,
    pub temporary: u64,
    pub eheap: u64,
    pub ets: u64,
    pub fixed_size: u64,
    pub binary: u64,
    pub test: u64,
    /// Not in DWARF: `ERTS_ALC_NO_FIXED_SIZES`, and the fixed-size types counted as
    /// processes' memory (`PROC`, `MSG_REF`, `LL_PTIMER`, `HL_PTIMER`, `BIF_TIMER`,
    /// `MONITOR`, `LINK`) as indices from `ERTS_ALC_N_MIN_A_FIXED_SIZE`.
    pub fixed_sizes: u64,
    pub process_fixed_types: &'static [u64],
}

/// A static variable found through an exported function that reads it: the `nth` data
/// reference relative to the instruction pointer in the function's code (0 the first). A
/// stripped build names no static; the functions `erts_memory` calls to size them are
/// exported, and they read them directly.
#[derive(Debug, Clone, Copy)]
pub struct StaticRef {
    pub function: &'static str,
    pub nth: usize,
}

/// What `erlang:memory(code)` adds to the loaded code (`erts_memory`): the module table's
/// bytes (`module_table_sz`: an atomic), the export tables (`export_table_sz`: an
/// `IndexTable` per code index, back to back) and their entries (`export_entries_sz`: an
/// atomic), the fun table, and the code ranges (`erts_ranges_sz`: an atomic count of
/// `range_bytes` records).
#[derive(Debug, Clone, Copy)]
pub struct CodeStatics {
    pub module_bytes: StaticRef,
    pub export_tables: StaticRef,
    pub export_entry_bytes: StaticRef,
    pub funs: FunTable,
    pub ranges: StaticRef,
    /// Not in DWARF: `sizeof(Range)` (beam_ranges.c) and `ERTS_NUM_CODE_IX`.
    pub range_bytes: u64,
    pub code_indices: u64,
}

/// The fun table as `erts_fun_table_sz` sizes it.
#[derive(Debug, Clone, Copy)]
pub enum FunTable {
    /// Up to OTP 28: one `Hash` (`erts_fun_table`), its entries not counted.
    Hash(StaticRef),
    /// OTP 29: staged like the exports, an `IndexTable` per code index and the entries'
    /// bytes (`erts_fun_entries_sz`: an atomic).
    Staged { tables: StaticRef, entry_bytes: StaticRef },
}

#[derive(Debug, Clone)]
pub struct BuildTable {
    /// Short stable name, printed at attach and in `scope_probe_build_info`.
    pub id: &'static str,
    pub otp_release: &'static str,
    /// ERTS versions this layout was verified on.
    pub erts_versions: &'static [&'static str],
    /// GNU build-ids of the packaged binaries this table was checked against. A binary with
    /// one of them is this build even when nothing else can be read from it (stripped, and
    /// installed in an unusual layout).
    pub build_ids: &'static [&'static str],
    /// Whether the build was configured `--with-dynamic-trace` (it has USDT notes): that adds
    /// fields to `struct process`, so a table describes builds with or without it, not both.
    pub dynamic_trace: bool,
    pub hooks: &'static [HookSpec],
    /// USDT probes of this release's systemtap builds (used only when the binary has them).
    pub usdt: crate::usdt::UsdtTable,
    pub globals: GlobalSymbols,
    pub process: ProcessLayout,
    pub status_flags: ProcessStatusFlags,
    pub reg_proc: RegProcLayout,
    pub ptab: PtabLayout,
    pub pid: PidLayout,
    pub port: PortLayout,
    /// Not in DWARF. Internal port id terms (erl_term.h), decoded like pids (a port has a
    /// number and no serial; it prints `#Port<0.N>`) with the port table's index masks.
    pub port_id: PidLayout,
    pub atom: AtomLayout,
    pub jit_records: JitRecordLayout,
    pub signal_queue: SignalQueueLayout,
    pub proc_dict: ProcDictLayout,
    pub terms: TermLayout,
    pub otp: OtpProcesses,
    pub scheduler: SchedulerLayout,
    pub run_queue: RunQueueLayout,
    pub monitor: MonitorLayout,
    pub node: NodeLayout,
    pub dist: DistLayout,
    pub alias: AliasLayout,
    pub ets: EtsLayout,
    pub alloc: AllocLayout,
    pub threads: ThreadNames,
    pub jit: JitConventions,
}

/// OTP's own processes in OTP 25-29: erts, kernel, stdlib's servers, sasl, the shell's I/O and
/// the other OTP applications that start processes.
pub static OTP_PROCESSES: OtpProcesses = OtpProcesses {
    names: &[
        "init", "erts_code_purger", "erl_prim_loader", "socket_registry", "logger", "logger_sup",
        "logger_handler_watcher", "logger_proxy", "logger_std_h_default", "application_controller",
        "kernel_sup", "kernel_refc", "kernel_safe_sup", "code_server", "file_server_2", "inet_db",
        "global_name_server", "global_group", "global_group_check", "rex", "erl_signal_server",
        "standard_error", "standard_error_sup", "user", "user_drv", "user_drv_reader", "user_drv_writer",
        "erl_epmd", "net_kernel", "net_sup", "auth", "timer_server", "error_logger",
        "erts_dirty_process_signal_handler", "erts_literal_area_collector", "erts_trace_cleaner",
        "sasl_sup", "sasl_safe_sup", "release_handler", "alarm_handler", "overload", "pg",
        "erpc_server", "peer_sup", "trace_sup", "mnesia_*", "ssl_*", "tls_*", "dtls_*", "inets_sup",
        "httpc_*", "httpd_*", "os_mon*", "disksup", "memsup", "cpu_sup", "ssh_*", "crypto_*",
    ],
    modules: &[
        // erts and its preloaded modules
        "erts_*", "init", "erl_prim_loader", "prim_*", "erl_init", "zlib", "socket_registry", "erl_tracer",
        // kernel
        "application", "application_controller", "application_master", "application_starter",
        "kernel", "kernel_*", "code", "code_server", "erl_boot_server", "erl_ddll", "erl_distribution",
        "erl_epmd", "erl_signal_handler", "error_handler", "error_logger", "file", "file_io_server",
        "file_server", "gen_tcp_socket", "gen_udp_socket", "global", "global_*", "group", "group_history",
        "heart", "inet", "inet_*", "net_kernel", "net_adm", "os", "pg", "pg2", "ram_file", "rpc", "erpc",
        "standard_error", "user", "user_drv", "user_sup", "logger", "logger_*", "disk_log", "disk_log_*",
        "dist_ac", "dist_util", "auth", "seq_trace", "wrap_log_reader", "raw_file_io*", "socket", "net",
        "peer", "prim_tty", "shell",
        // stdlib's own servers (not its behaviours: a user's gen_server runs in gen_server's
        // code, but its initial call is the user's module)
        "timer", "erl_eval", "io", "io_lib", "edlin*", "shell_default",
        // sasl
        "sasl", "sasl_*", "release_handler", "release_handler_*", "alarm_handler", "overload", "rb",
        // the other OTP applications that start processes of their own (a RabbitMQ node runs
        // ssl, inets, mnesia and os_mon beside its own)
        "dets", "dets_*", "ssl", "ssl_*", "tls_*", "dtls_*", "inet_tls_*", "httpc*", "httpd*", "inets*",
        "ftp*", "tftp*", "ssh", "ssh_*", "crypto", "public_key", "pubkey_*", "mnesia", "mnesia_*", "os_mon",
        "os_mon_*", "disksup", "memsup", "cpu_sup", "snmp*", "diameter*", "megaco*", "eldap", "observer*",
        "dbg", "ttb", "runtime_tools*", "observer_backend", "system_information", "erts_alloc_config",
        "cover", "eprof", "fprof", "debugger", "dbg_*", "int", "wx", "wx_*", "et", "et_*", "asn1*", "xmerl*",
        "tools", "erl_reply", "ct_*", "test_server*", "common_test",
    ],
    group_leaders_of: &["init", "kernel_sup", "sasl_sup"],
    callback_second: &["supervisor", "supervisor_bridge"],
    call_waits: &["gen:do_call/4"],
};

/// Every table, in the order they are tried.
pub fn all() -> &'static [&'static BuildTable] {
    static ALL: [&BuildTable; 3] = [&DEBIAN12_OTP25, &DEBIAN13_OTP27, &DEBIAN_FORKY_OTP29];
    &ALL
}

/// The table for a release and ERTS version, if there is one.
pub fn select(otp_release: &str, erts_version: &str) -> Option<&'static BuildTable> {
    all()
        .iter()
        .copied()
        .find(|t| t.otp_release == otp_release && t.erts_versions.contains(&erts_version))
}

/// The table whose packaged binary has this build-id.
pub fn by_build_id(build_id: &str) -> Option<&'static BuildTable> {
    all().iter().copied().find(|t| t.build_ids.contains(&build_id))
}

/// What the user should know when no table matches: the builds that are known.
pub fn known_builds() -> String {
    all()
        .iter()
        .map(|t| format!("OTP {} (ERTS {})", t.otp_release, t.erts_versions.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each build-id is a GNU build-id (40 hex digits) and names one table only. That the ids
    /// are the real binaries' is checked against the installed files
    /// (tests/chroot_targets.rs).
    #[test]
    fn build_ids_are_well_formed_and_unique() {
        let mut seen = std::collections::BTreeMap::new();
        for t in all() {
            for id in t.build_ids {
                assert!(id.len() == 40 && id.chars().all(|c| c.is_ascii_hexdigit()), "{}: {id:?}", t.id);
                assert_eq!(seen.insert(*id, t.id), None, "{id} is in two tables");
                assert_eq!(by_build_id(id).map(|f| f.id), Some(t.id));
            }
        }
    }
}
