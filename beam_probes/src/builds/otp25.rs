//! OTP 25 as Debian 12 ships it (`erlang-base` 1:25.2.3, ERTS 13.1.5, x86-64 JIT, built
//! without dynamic trace, stripped but exporting ~4,600 dynamic symbols).
//!
//! Offsets were read from the OTP 25.2.3 source and validated against a live VM (pid term at
//! +0 of every process table entry, registered names through the atom table).

use crate::builds::{
    BuildTable, GlobalSymbols, JitConventions, JitRecordLayout, OTP_PROCESSES, ProcDictLayout, ProcessLayout,
    AliasLayout, AllocLayout, CodeStatics, DistLayout, EtsFlags, EtsLayout, FunTable, StaticRef, MonitorLayout, NodeLayout, PortLayout, ProcessStatusFlags, PtabLayout, RegProcLayout, Register, RunQueueLayout, SchedulerLayout, SignalQueueLayout, SleepFlags,
    TermLayout, ThreadNames,
};
use crate::capability::Capability;
use crate::hooks::{HookPoint, HookSpec};
use crate::terms::{AtomLayout, AtomName, PidIndex, PidLayout};
use crate::usdt::{UsdtPoint, UsdtSpec, UsdtTable};

/// The hooks of 25, 27 and 29 (29 keeps these functions' signatures) but the alias send, whose
/// function each names (see [`with_alias_send`]).
const HOOKS: [HookSpec; 18] = [
    // erts_send_message(Process *sender, Process *receiver, ErtsProcLocks *, Eterm msg)
    HookSpec { point: HookPoint::SendLocal, symbol: "erts_send_message" },
    // Process *erts_schedule(ErtsSchedulerData *, Process *p, int calls)
    HookSpec { point: HookPoint::ScheduleOut, symbol: "erts_schedule" },
    HookSpec { point: HookPoint::ScheduleIn, symbol: "erts_schedule" },
    // Every exported entry into the collector. nobump: from JIT code and system tasks
    // (erlang:garbage_collect/1 of another process); erts_garbage_collect: from C and
    // erlang:garbage_collect/0; after_bif_call_lhf: after BIFs that built heap fragments;
    // hibernate and literals: hibernation and code purging.
    HookSpec { point: HookPoint::GcStart, symbol: "erts_garbage_collect_nobump" },
    HookSpec { point: HookPoint::GcEnd, symbol: "erts_garbage_collect_nobump" },
    HookSpec { point: HookPoint::GcStart, symbol: "erts_garbage_collect" },
    HookSpec { point: HookPoint::GcEnd, symbol: "erts_garbage_collect" },
    HookSpec { point: HookPoint::GcStart, symbol: "erts_gc_after_bif_call_lhf" },
    HookSpec { point: HookPoint::GcEnd, symbol: "erts_gc_after_bif_call_lhf" },
    HookSpec { point: HookPoint::GcStart, symbol: "erts_garbage_collect_hibernate" },
    HookSpec { point: HookPoint::GcEnd, symbol: "erts_garbage_collect_hibernate" },
    HookSpec { point: HookPoint::GcStart, symbol: "erts_garbage_collect_literals" },
    HookSpec { point: HookPoint::GcEnd, symbol: "erts_garbage_collect_literals" },
    // Eterm erl_create_process(Process *parent, Eterm mod, Eterm func, Eterm args, opts*)
    HookSpec { point: HookPoint::SpawnStart, symbol: "erl_create_process" },
    HookSpec { point: HookPoint::SpawnEnd, symbol: "erl_create_process" },
    // erts_ptab_delete_element(ErtsPTab *, ErtsPTabElementCommon *): every process leaves
    // the table here exactly once, however it died (normal exit, kill, exit signal).
    HookSpec { point: HookPoint::ProcessGone, symbol: "erts_ptab_delete_element" },
    // int erts_dsig_send_msg(ErtsDSigSendContext *ctx, Eterm remote, ...): a send to a
    // remote pid, once the connection is prepared (25 and 27: (ctx, remote, message); 29
    // adds full_to and a priority after remote).
    HookSpec { point: HookPoint::DistSend, symbol: "erts_dsig_send_msg" },
    // void erts_queue_dist_message(Process *rcvr, ErtsProcLocks, ErtsDistExternal *,
    // ErlHeapFragment *, Eterm token, Eterm from): a message from a connection, decoded.
    HookSpec { point: HookPoint::DistReceive, symbol: "erts_queue_dist_message" },
];

/// [`HOOKS`] and the alias send through `symbol`.
pub(crate) const fn with_alias_send(symbol: &'static str) -> [HookSpec; 19] {
    let alias = HookSpec { point: HookPoint::SendAlias, symbol };
    let mut all = [alias; 19];
    let mut i = 0;
    while i < HOOKS.len() {
        all[i] = HOOKS[i];
        i += 1;
    }
    all
}

static HOOKS_25_27: [HookSpec; 19] = with_alias_send("erts_proc_sig_send_to_alias");

pub static DEBIAN12_OTP25: BuildTable = BuildTable {
    id: "otp25-x86_64-jit",
    otp_release: "25",
    erts_versions: &["13.1.5"],
    // Debian 12 erlang-base 1:25.2.3+dfsg-1+deb12u4 (amd64).
    build_ids: &["94bcd90b66fca38e41e627fa3a2ec089b2e498be"],
    dynamic_trace: false,
    // erts_proc_sig_send_to_alias(Process *c_p, Eterm from, Eterm to, Eterm msg, Eterm token):
    // `Alias ! Msg` from erlang:send (bif.c do_send), a gen_server reply.
    hooks: &HOOKS_25_27,
    // The `erlang` provider's probes (erlang_dtrace.d) in builds configured
    // `--with-dynamic-trace=systemtap`; Debian's own build has none. Pids are strings made by
    // `"%T"` of the pid term: `<0.N.S>`. Sites and semaphores: beam_probes/notes/
    // otp25-systemtap-usdt-probes.md.
    usdt: UsdtTable {
        probes: &[
            // message__send(char *sender, char *receiver, uint32_t size, label, prev, current).
            // Five sites: two in erts_send_message (every local process-to-process send fires
            // exactly one of them, the same calls the uprobe counts), the others in
            // erts_dsig_send_msg / erts_dsig_send_reg_msg (distribution) and enif_send (NIFs),
            // which the uprobe does not count either: only erts_send_message's sites serve.
            UsdtSpec {
                point: UsdtPoint::Send,
                provider: "erlang",
                name: "message__send",
                pid_args: &[0, 1],
                only_in: Some("erts_send_message"),
            },
            // gc_{minor,major}__{start,end}(char *pid, int need | reclaimed), all in the static
            // garbage_collect(), which every collector entry reaches. A minor collection that
            // escalates to a major one fires minor start/end then major start/end: two
            // collections, as erlang:trace reports them (the uprobes count one invocation).
            UsdtSpec { point: UsdtPoint::GcStart, provider: "erlang", name: "gc_minor__start", pid_args: &[0], only_in: None },
            UsdtSpec { point: UsdtPoint::GcEnd, provider: "erlang", name: "gc_minor__end", pid_args: &[0], only_in: None },
            UsdtSpec { point: UsdtPoint::GcStart, provider: "erlang", name: "gc_major__start", pid_args: &[0], only_in: None },
            UsdtSpec { point: UsdtPoint::GcEnd, provider: "erlang", name: "gc_major__end", pid_args: &[0], only_in: None },
            // process__spawn(char *pid, char *mfa) in erl_create_process: no parent.
            UsdtSpec { point: UsdtPoint::Spawn, provider: "erlang", name: "process__spawn", pid_args: &[0], only_in: None },
            // process__exit(char *pid, char *reason) in erts_do_exit_process, which every dying
            // process passes through (killed ones too, via beam_exit), before it leaves the table.
            UsdtSpec { point: UsdtPoint::Exit, provider: "erlang", name: "process__exit", pid_args: &[0], only_in: None },
        ],
        auto_uprobe: &[(
            Capability::Spawn,
            "process__spawn has no parent pid; with USDT the parent is taken from the process \
             the schedule hook saw scheduled in on that thread, the uprobe reads it directly",
        )],
        unavailable: &[(
            Capability::Schedule,
            "under the JIT process__scheduled fires only on dirty schedulers, and \
             process__unscheduled lacks the reductions the erts_schedule uprobe reads",
        )],
    },
    globals: GlobalSymbols {
        process_table: "erts_proc",
        // io.c: `ErtsPTab erts_port` (exported).
        port_table: "erts_port",
        atom_table: "erts_atom_table",
        jit_debug_descriptor: "__jit_debug_descriptor",
        // ERTS_FRAME_LAYOUT_RA = 0, ERTS_FRAME_LAYOUT_FP_RA = 1 (beam_jit_common.hpp).
        frame_layout: "erts_frame_layout",
        // erl_process.c: `ErtsAlignedSchedulerData *erts_aligned_scheduler_data` and its
        // dirty CPU and dirty I/O twins (exported).
        schedulers: "erts_aligned_scheduler_data",
        dirty_cpu_schedulers: "erts_aligned_dirty_cpu_scheduler_data",
        dirty_io_schedulers: "erts_aligned_dirty_io_scheduler_data",
        // erl_process.c, exported.
        run_queues: "erts_aligned_run_queues",
        run_queue_count: "erts_no_run_queues",
        // erl_node_tables.c, exported.
        this_node: "erts_this_node",
        // erl_alloc.c, erl_alloc_util.c, beam_load.c, erl_db.c: exported.
        allocators: "erts_allctrs_info",
        allocator_instances: "erts_allctr_thr_spec",
        total_code_size: "erts_total_code_size",
        ets_misc_memory: "erts_ets_misc_mem_size",
    },
    // From `struct process` in erl_process.h (25.2.3, no dynamic trace): heap_sz, i, reds,
    // sig_qs.len and sig_inq.len validated live; the old heap, mbuf_sz and state follow from the
    // declarations between those anchors (gen_gcs at +528, off_heap 16 bytes).
    process: ProcessLayout {
        id: 0,
        reg: 48,
        heap_sz: 152,
        old_heap: 520,
        old_hend: 504,
        mbuf_sz: 584,
        i: 256,
        reds: 280,
        state: 640,
        sig_qs_len: 392,
        sig_qs_cont_len: 0,
        sig_inq_len: 672,
        sig_qs_first: 328,
        sig_qs_cont: 352,
        sig_inq_first: 656,
        sig_inq_buffers: 696,
        current: 472,
        initial: 448,
        group_leader: 296,
        dictionary: 416,
        arity: 184,
        arity_bytes: 8,
        arg_reg: 192,
        def_arg_reg: 208,
        heap: 128,
        htop: 80,
        stop: 88,
        hend: 136,
        abandoned_heap: 144,
        psd: 592,
        psd_size: 80,
        size: 776,
    },
    // ERTS_PSFLG_BIT(N) = 1 << (6 + N): FREE 4, EXITING 5, ACTIVE 7, RUNNING 9, SUSPENDED 10,
    // GC 11, ACTIVE_SYS 14, RUNNING_SYS 15, DIRTY_ACTIVE_SYS 22, DIRTY_RUNNING 23,
    // DIRTY_RUNNING_SYS 24.
    status_flags: ProcessStatusFlags {
        free: 1 << 10,
        exiting: 1 << 11,
        gc: 1 << 17,
        suspended: 1 << 16,
        running: (1 << 15) | (1 << 21) | (1 << 29) | (1 << 30),
        active: (1 << 13) | (1 << 20) | (1 << 28),
    },
    reg_proc: RegProcLayout { name: 32 },
    // ErtsPTabReadOnlyData at +192: tab +0, max +16, pix_mask..pix_cli_shift +20..+36 (u32s).
    ptab: PtabLayout {
        tab: 192,
        max: 208,
        pix_mask: 212,
        pix_mask_bytes: 4,
        pix_cl_mask: 216,
        pix_cl_shift: 220,
        pix_cli_mask: 224,
        pix_cli_shift: 228,
    },
    // erl_port.h: struct _erl_drv_port (DWARF of Debian's 25.2.3 source): common +0 (80
    // bytes), sched +80 (flags at +72 in it), connected +232, bytes_in/out +256/+264, ioq +272
    // (size at +8 in it), name +472, drv_ptr +480, drv_data +488, os_pid +496, state +520,
    // sizeof 560; erts_driver_t_.name +24; inet_drv.c inet_descriptor { int s @0; ...;
    // ErlDrvPort port @24 }. erl_port_task.h: ERTS_PTS_FLG_BUSY_PORT 1 << 4, BUSY_PORT_Q
    // 1 << 5; erl_port.h: ERTS_PORT_SFLG_EXITING 1 << 1, CLOSING 1 << 5, FREE 1 << 8,
    // INITIALIZING 1 << 9, INVALID 1 << 11.
    port: PortLayout {
        id: 0,
        sched_flags: 152,
        connected: 232,
        bytes_in: 256,
        bytes_out: 264,
        ioq_size: 280,
        name: 472,
        drv_ptr: 480,
        driver_name: 24,
        drv_data: 488,
        os_pid: 496,
        state: 520,
        size: 560,
        inet_socket: 0,
        inet_port: 24,
        inet_drivers: &["tcp_inet", "udp_inet", "sctp_inet"],
        busy_port: 1 << 4,
        busy_port_queue: 1 << 5,
        not_alive: (1 << 8) | (1 << 9) | (1 << 11) | (1 << 1) | (1 << 5),
    },
    // erl_term.h: an internal port is (ptab index << 32) | (data << 4) | 0x7 (_TAG_IMMED1_PORT),
    // like a pid (erts_ptab_make_id), its 28 data bits all number (_PORT_NUM_SIZE =
    // _PORT_DATA_SIZE = 28): #Port<0.N> prints the data.
    port_id: PidLayout {
        tag_mask: 0xf,
        tag: 0x7,
        data_shift: 4,
        data_bits: 28,
        number_bits: 28,
        serial_bits: 0,
        index: PidIndex::Above { shift: 32 },
    },
    // (ptab index << 32) | (data << 4) | 0x3, data = (serial << 15) | number, 28 bits
    // (erl_term.h: _PID_DATA_SIZE 28, _PID_NUM_SIZE 15; erts_ptab_make_id in erl_ptab.h).
    pid: PidLayout {
        tag_mask: 0xf,
        tag: 0x3,
        data_shift: 4,
        data_bits: 28,
        number_bits: 15,
        serial_bits: 13,
        index: PidIndex::Above { shift: 32 },
    },
    // (index << 6) | 0xb; IndexTable { Hash htable (104 bytes); type; size; limit; entries @116;
    // IndexSlot ***seg_table @120 }, 1024 slots per segment; Atom { len @24, name @32 }.
    atom: AtomLayout {
        tag_mask: 0x3f,
        tag: 0xb,
        index_shift: 6,
        table_entries: 116,
        table_seg_table: 120,
        segment_bits: 10,
        atom_len: 24,
        atom_name: 32,
        name: AtomName::Pointer,
    },
    // erts/emulator/beam/jit/beam_jit_metadata.cpp (OTP 25.2.3), x86-64 C layout:
    // debug_info { u32 header @0; union @8 { emulator_info { int frame_layout @8;
    // void *normal_exit @16 }; module_info { u64 base_address @8; u32 range_count @16;
    // u32 code_size @20; u16 name_length @24; char name[] @26 } } }, sizeof 32, and the
    // first range_info at 32 + name_length. range_info { u32 start_offset @0; u32 end_offset
    // @4; u32 line_count @8; u16 name_length @12; char name[] @14 }, sizeof 16. line_info
    // { u32 start_offset @0; u32 line_number @4; u16 file_length @8; char file[] @10 },
    // sizeof 12. Checked live: every record of a running VM decodes to exactly the ranges
    // and names its perf map lists.
    jit_records: JitRecordLayout {
        header_emulator: 0,
        header_module: 1,
        emulator_frame_layout: 8,
        debug_info_size: 32,
        module_base_address: 8,
        module_range_count: 16,
        module_code_size: 20,
        module_name_length: 24,
        module_name: 26,
        range_start_offset: 0,
        range_end_offset: 4,
        range_line_count: 8,
        range_name_length: 12,
        range_name: 14,
        range_info_size: 16,
        line_file_length: 8,
        line_info_size: 12,
    },
    // erl_message.h: struct erl_mesg { next; data; m[3]; ErlHeapFragment hfrag }, hfrag {
    // next; off_heap (16); alloc_size; used_size @32; mem }; 64 in-queue buffers of 128
    // bytes (ERTS_PROC_SIG_INQ_BUFFERED_NR_OF_BUFFERS); a non-message signal's tag is an
    // external-pid header ((tag & 0x3f) == 0x30); ERTS_MSG_COMBINED_HFRAG is 0x1.
    signal_queue: SignalQueueLayout {
        msg_next: 0,
        msg_attached: 8,
        msg_tag: 16,
        msg_hfrag_used: 72,
        msg_size: 88,
        frag_next: 0,
        frag_used: 32,
        buffer_size: 128,
        buffers_slots: 0,
        buffer_queue_first: 56,
        buffer_count: 64,
        non_message_tag_mask: 0x3f,
        non_message_tag: 0x30,
        combined_hfrag: 0x1,
    },
    // erl_process_dict.h: { u32 sizeMask; u32 usedSlots; u32 arraySize; u32 splitPosition;
    // Uint numElements; Eterm data[1] }.
    proc_dict: ProcDictLayout { used_slots: 4, array_size: 8, data: 24, size: 32 },
    // erl_term.h: primary tags header 0, list 1, boxed 2, immediate 3; small integers
    // (v << 4) | 0xf; NIL 0x3b; header subtag mask 0x3f, tuples ARITYVAL 0 with the arity
    // from bit 6.
    terms: TermLayout {
        primary_mask: 0x3,
        list: 0x1,
        boxed: 0x2,
        immed: 0x3,
        small_mask: 0xf,
        small_tag: 0xf,
        small_shift: 4,
        nil: 0x3b,
        header_mask: 0x3f,
        arityval: 0x0,
        arity_shift: 6,
        bits: None,
    },
    otp: OTP_PROCESSES,
    // erl_process.h: struct ErtsSchedulerData_ (DWARF of Debian's 25.2.3 source);
    // ERTS_SSI_FLG_SLEEPING 1 << 0, POLL_SLEEPING 1 << 1, TSE_SLEEPING 1 << 2, WAITING 1 << 3.
    scheduler: SchedulerLayout {
        aligned_size: 41728,
        current_process: 168,
        current_port: 224,
        ssi: 160,
        no: 184,
        dirty_no: 192,
        ssi_flags: 24,
        sleep_flags: SleepFlags { sleeping: 1 << 0, poll_sleeping: 1 << 1, tse_sleeping: 1 << 2, waiting: 1 << 3 },
    },
    // erl_process.h: struct ErtsRunQueue_ (DWARF of Debian's 25.2.3 source).
    run_queue: RunQueueLayout { aligned_size: 448, len: 208 },
    // erl_monitor_link.h (DWARF of Debian's 25.2.3 source); ERTS_MON_TYPE_PROC 0,
    // ERTS_ML_FLG_TARGET 1 << 0, the type a Uint16 of its own.
    monitor: MonitorLayout {
        monitors: 72,
        links: 56,
        tree_right: 8,
        tree_left: 16,
        other_item: 24,
        flags: 36,
        flags_bytes: 2,
        type_field: 38,
        type_mask: 0xffff,
        type_proc: 0,
        // ERTS_MON_TYPE_MAX (9) + 1, the same in 27 and 29.
        link_type_proc: 10,
        target_flag: 1,
    },
    // erl_node_tables.h: struct erl_node_ (DWARF of Debian's 25.2.3, 27 and 29 sources alike).
    node: NodeLayout { sysname: 24 },
    // dist.h: ErtsDSigSendContext's c_p; erl_term.h: ExternalThing {header, node, next,
    // data.pid {num, ser}}, EXTERNAL_PID_SUBTAG (0xc << 2) under _TAG_HEADER_MASK (0x3f).
    // DWARF of Debian's 25.2.3, 27 and 29 sources alike.
    dist: DistLayout {
        send_context_process: 240,
        external_header_mask: 0x3f,
        external_pid_header: 0x30,
        external_node: 8,
        external_pid_number: 24,
    },
    // erl_term.h: ERTS_PID_REF_THING_SIZE is 4 words (header, marker, num[5]), so the header
    // is (4 - 1) << 6 | _TAG_HEADER_REF (0x10); the pid is num[3] | num[4] << 32 at 8 + 4 + 12.
    alias: AliasLayout { pid_ref_header: 0xd0, pid_ref_pid: 24 },
    // erl_db.h, erl_db_util.h, erl_binary.h, erl_flxctr.h (DWARF of Debian's 25.2.3 source);
    // DB_* status bits from erl_db_util.h; ERTS_REF_NUMBERS 3 (erl_term.h); at most
    // ERTS_MAX_FLXCTR_GROUPS (256) decentralized counter groups (erl_flxctr.h, `+dcg`).
    ets: EtsLayout {
        scheduler_list: 41720,
        scheduler_count: 41712,
        next: 16,
        owner: 176,
        name: 208,
        btid: 216,
        status: 280,
        counters_decentralized: 236,
        counters: 240,
        counter_slots: 16,
        counter_slot_size: 64,
        refn: 32,
        ref_numbers: 3,
        max_counter_groups: 256,
        flags: EtsFlags {
            private: 1 << 0,
            protected: 1 << 1,
            public: 1 << 2,
            delete: 1 << 3,
            set: 1 << 4,
            bag: 1 << 5,
            duplicate_bag: 1 << 6,
            ordered_set: 1 << 7,
            ca_ordered_set: 1 << 8,
            write_concurrency: 1 << 9,
            read_concurrency: 1 << 10,
            named_table: 1 << 11,
        },
    },
    // erl_alloc.h / erl_alloc_util.h (DWARF of Debian's 25.2.3 source, the same in 27 and 29);
    // the allocator numbers from the generated erl_alloc_types.h (the same in 25, 27, 29: the
    // fixed-size types are numbered from 197, 201 and 210, in the same order).
    alloc: AllocLayout {
        info_size: 24,
        info_alloc_util: 0,
        info_enabled: 4,
        info_thr_spec: 8,
        info_extra: 16,
        thr_spec_size: 24,
        thr_spec_count: 12,
        thr_spec_instances: 16,
        mbcs_blocks: 0x720,
        sbcs_blocks: 0x490,
        block_stats_size: 48,
        block_curr_size: 8,
        cpool_util_limit: 0x1a0,
        cpool_blocks_size: 0x1c8,
        fix: 0x3a8,
        fix_size: 64,
        fix_type_size: 0,
        fix_cpool_allocated: 32,
        fix_cpool_used: 40,
        fix_nocpool_allocated: 40,
        fix_nocpool_used: 48,
        index_table_bytes: 128,
        index_table_size: 0x6c,
        hash_shift: 0x48,
        hash_name: 0x40,
        atom_text_chunk_bytes: 8 + 32768,
        hash_bytes: 104,
        // The references as Debian's 25.2.3 and 27.3.4.1 and Debian forky's 29.1.1 compile
        // them (x86-64, gcc -O2): the atomics are each function's first reference;
        // export_table_sz and erts_fun_table_sz read a lock or the crash-dump key first.
        code: CodeStatics {
            module_bytes: StaticRef { function: "module_table_sz", nth: 0 },
            export_tables: StaticRef { function: "export_table_sz", nth: 1 },
            export_entry_bytes: StaticRef { function: "export_entries_sz", nth: 0 },
            funs: FunTable::Hash(StaticRef { function: "erts_fun_table_sz", nth: 1 }),
            ranges: StaticRef { function: "erts_ranges_sz", nth: 0 },
            range_bytes: 16,
            code_indices: 3,
        },
        ptab_free_id_data: 200,
        max_type: 12,
        temporary: 2,
        eheap: 6,
        ets: 7,
        fixed_size: 8,
        binary: 10,
        test: 12,
        fixed_sizes: 15,
        process_fixed_types: &[0, 2, 3, 4, 5, 11, 12],
    },
    // erl_process.c (erts_start_schedulers): "%lu_scheduler", "%d_dirty_cpu_scheduler",
    // "%d_dirty_io_scheduler", "%d_aux", "%d_poller"; erl_async.c: "async_%d"; the
    // dispatchers are "sys_sig_dispatcher" and "sys_msg_dispatcher", cut to 15 characters.
    threads: ThreadNames {
        normal: "{}_scheduler",
        dirty_cpu: "{}_dirty_cpu_scheduler",
        dirty_io: "{}_dirty_io_scheduler",
        aux: "{}_aux",
        poller: "{}_poller",
        async_pool: "async_{}",
        dispatchers: &["sys_sig_dispatc", "sys_msg_dispatc"],
    },
    // beam_asm.hpp (x86): `c_p` is r13; `aligned_call` pads calls so that the return address
    // is a valid CP (`_CPMASK` 3).
    jit: JitConventions { process_register: Register::R13, cp_alignment: 4 },
};
