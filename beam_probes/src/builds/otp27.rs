//! OTP 27 as Debian 13 (trixie) ships it (`erlang-base` 1:27.3.4.1+dfsg-1+deb13u4, ERTS 15.2.7,
//! x86-64 JIT, built without dynamic trace, stripped but exporting ~4,800 dynamic symbols,
//! build-id c3c1e30f9638181692a0faa7554e2643b6def036).
//!
//! Struct offsets: from the DWARF of Debian's own source built with Debian's flags in a trixie
//! chroot (`cargo xtask otp-debug --suite trixie`; `cargo xtask offsets <it> --check` passes
//! and tests/dwarf_offsets.rs keeps it so). The newest source on the mirror is deb13u3 (the
//! deb13u4 security upload's source is not there); deb13u4 only touches applications
//! (inets, ssh: see its changelog), and the live tests read the packaged deb13u4 binary with
//! this table. Term layouts, hook signatures, status flags and JIT records: read from the
//! 27.3.4.1 source (files named below).

use crate::builds::{
    BitsLayout, BuildTable, DEBIAN12_OTP25, EtsLayout, ProcessLayout, PtabLayout, RegProcLayout, SchedulerLayout, TermLayout,
    MonitorLayout,
    ThreadNames,
};
use crate::terms::{PidIndex, PidLayout};

const PID: PidLayout = PidLayout {
    tag_mask: 0xf,
    tag: 0x3,
    data_shift: 4,
    data_bits: 60,
    number_bits: 28,
    serial_bits: 32,
    index: PidIndex::PixData,
};

pub static DEBIAN13_OTP27: BuildTable = BuildTable {
    id: "otp27-x86_64-jit",
    otp_release: "27",
    erts_versions: &["15.2.7"],
    // Debian 13 erlang-base 1:27.3.4.1+dfsg-1+deb13u4 (amd64).
    build_ids: &["c3c1e30f9638181692a0faa7554e2643b6def036"],
    dynamic_trace: false,
    // Every hooked function keeps OTP 25's signature in 27.3.4.1, so the conventions of
    // hooks.rs hold unchanged: erts_send_message(Process *sender, Process *receiver,
    // ErtsProcLocks *, Eterm) (erl_message.c); Process *erts_schedule(ErtsSchedulerData *,
    // Process *p, int calls) (erl_process.c); erts_garbage_collect_nobump(Process *, Uint need,
    // Eterm *, int, int fcalls), erts_garbage_collect(Process *, Uint, Eterm *, int),
    // erts_gc_after_bif_call_lhf(Process *, ErlHeapFragment *, Eterm, Eterm *, Uint),
    // erts_garbage_collect_hibernate(Process *), erts_garbage_collect_literals(Process *, ...)
    // (erl_gc.c); Eterm erl_create_process(Process *parent, Eterm, Eterm, Eterm,
    // ErlSpawnOpts *) (erl_process.c); erts_ptab_delete_element(ErtsPTab *,
    // ErtsPTabElementCommon *) (erl_ptab.c). All are exported by Debian's binary: the same
    // hook list as 25.
    hooks: DEBIAN12_OTP25.hooks,
    // Debian builds 27 without dynamic trace; no systemtap build of 27 was checked.
    usdt: crate::usdt::UsdtTable::UNCHECKED,
    // The same globals as 25; __jit_debug_descriptor keeps its four leading fields (version,
    // action, relevant, first) and appends a mutex after them (beam_jit_metadata.cpp).
    globals: DEBIAN12_OTP25.globals,
    // `struct process` moved almost everything: fcalls/flags/arity shrank and moved up,
    // ErtsPTabElementCommon lost `tracer`/`trace_flags` before `u` (reg at +32) and gained
    // `tracee` at its end; sizeof(struct process) = 760 (DWARF; the live
    // erts_proc.r.o.element_size). The queue counters are mq_len/mlenoffs (see ProcessLayout).
    process: ProcessLayout {
        id: 0,
        reg: 32,
        heap_sz: 216,
        old_heap: 512,
        old_hend: 496,
        mbuf_sz: 568,
        i: 248,
        reds: 272,
        state: 624,
        sig_qs_len: 336,
        sig_qs_cont_len: 376,
        sig_inq_len: 656,
        sig_qs_first: 312,
        sig_qs_cont: 344,
        sig_inq_first: 640,
        sig_inq_buffers: 680,
        current: 464,
        initial: 440,
        group_leader: 280,
        dictionary: 408,
        arity: 133,
        arity_bytes: 1,
        arg_reg: 136,
        def_arg_reg: 144,
        heap: 192,
        htop: 80,
        stop: 88,
        hend: 200,
        abandoned_heap: 208,
        psd: 576,
        psd_size: 96,
        size: 760,
    },
    // erl_process.h: ERTS_PSFLG_BIT(N) = 1 << (ERTS_PSFLGS_ZERO_BIT_OFFSET (6) + N), and the
    // bits erts_process_state2status tests are numbered as in 25: FREE 4, EXITING 5,
    // ACTIVE 7, RUNNING 9, SUSPENDED 10, GC 11, ACTIVE_SYS 14, RUNNING_SYS 15,
    // DIRTY_ACTIVE_SYS 22, DIRTY_RUNNING 23, DIRTY_RUNNING_SYS 24: the same flags as 25.
    status_flags: DEBIAN12_OTP25.status_flags,
    reg_proc: RegProcLayout { name: 32 },
    // ErtsPTabReadOnlyData at +192: the three masks became Uint (8 bytes) and the shifts
    // moved after them.
    ptab: PtabLayout {
        tab: 192,
        max: 208,
        pix_mask: 216,
        pix_mask_bytes: 8,
        pix_cl_mask: 224,
        pix_cl_shift: 240,
        pix_cli_mask: 232,
        pix_cli_shift: 244,
    },
    // erl_term.h: _PID_DATA_SIZE = 64 - _TAG_IMMED1_SIZE (4) = 60, _PID_NUM_SIZE 28, so
    // serial 32 bits; erl_ptab.h erts_ptab_make_id: term = (pixdata << 4) | 0x3 with the slot
    // index in pixdata's low bits. Checked live: term 0x2983 is <0.83.0> in slot 664.
    pid: PID,
    // struct _erl_drv_port, erts_driver_t_ and inet_descriptor (DWARF of Debian's 27.3.4.1
    // source): every offset is 25's (ErtsPTabElementCommon changed inside but kept its 80
    // bytes); ERTS_PTS_FLG_BUSY_PORT{,_Q}, the ERTS_PORT_SFLG_* bits and the inet drivers'
    // names are 25's too (erl_port_task.h, erl_port.h, inet_drv.c). erts_port is exported.
    port: DEBIAN12_OTP25.port,
    // erl_term.h (OTP 26+): _PORT_DATA_SIZE = 64 - _TAG_IMMED1_SIZE = 60, all of it number
    // (_PORT_NUM_SIZE); the id is (pixdata << 4) | 0x7 like a pid's, its slot index permuted
    // into pixdata by the port table's own masks (erts_ptab_make_id).
    port_id: PidLayout { tag: 0x7, number_bits: 60, serial_bits: 0, ..PID },
    // Unchanged from 25: make_atom(x) = (x << 6) + 0xb (erl_term.h); IndexTable entries @116,
    // seg_table @120, INDEX_PAGE_SHIFT 10 (index.h); Atom len @24, name @32 (atom.h).
    atom: DEBIAN12_OTP25.atom,
    // beam_jit_metadata.cpp (27.3.4.1): the same records as 25 (module_info renamed
    // erlang_module_info, same fields): debug_info { enum header @0; union @8 {
    // emulator_info { int frame_layout; const void *normal_exit }; erlang_module_info {
    // u64 base_address; u32 range_count; u32 code_size; u16 name_length; char name[] } } },
    // range_info { u32 start, end, line_count; u16 name_length; char name[] }, line_info
    // { u32 start_offset, line_number; u16 file_length; char file[] }.
    jit_records: DEBIAN12_OTP25.jit_records,
    signal_queue: DEBIAN12_OTP25.signal_queue,
    proc_dict: DEBIAN12_OTP25.proc_dict,
    // OTP 27 reworked binaries into bitstrings (erl_bits.h): HEAP_BITS_SUBTAG 0x8 << 2,
    // SUB_BITS_SUBTAG 0x9 << 2; ErlHeapBits { thing_word; size; data @16 }, ErlSubBits {
    // thing_word; base_flags @8 (low 2 bits flags); start @16; end @24 }, sizes in bits.
    terms: TermLayout {
        bits: Some(BitsLayout {
            heap_bits: 0x20,
            heap_bits_size: 8,
            heap_bits_data: 16,
            sub_bits: 0x24,
            sub_bits_base: 8,
            sub_bits_base_flags: 0x3,
            sub_bits_start: 16,
            sub_bits_end: 24,
        }),
        ..DEBIAN12_OTP25.terms
    },
    otp: DEBIAN12_OTP25.otp,
    // erl_process.h: struct ErtsSchedulerData_ (DWARF of Debian's 27.3.4.1 source; 25's
    // offsets, a larger atom cache map); the ERTS_SSI_FLG_* bits are 25's.
    scheduler: SchedulerLayout {
        aligned_size: 41792,
        current_process: 168,
        current_port: 224,
        ssi: 160,
        no: 184,
        dirty_no: 192,
        ssi_flags: 24,
        ..DEBIAN12_OTP25.scheduler
    },
    // erl_process.h: struct ErtsRunQueue_ (DWARF of Debian's 27.3.4.1 source): 25's.
    run_queue: DEBIAN12_OTP25.run_queue,
    // erl_monitor_link.h (DWARF of Debian's 27.3.4.1 source): the signal header grew, the
    // constants are 25's.
    node: DEBIAN12_OTP25.node,
    dist: DEBIAN12_OTP25.dist,
    alias: DEBIAN12_OTP25.alias,
    // The scheduler's table list moved into a union (`u.ets_tables`); magic_binary grew before
    // `refn` (DWARF of Debian 13's source). The status bits and counters are 25's.
    ets: EtsLayout { scheduler_list: 41760, scheduler_count: 41752, refn: 40, ..DEBIAN12_OTP25.ets },
    alloc: DEBIAN12_OTP25.alloc,
    monitor: MonitorLayout { monitors: 56, links: 40, other_item: 32, flags: 44, type_field: 46, ..DEBIAN12_OTP25.monitor },
    // erl_process.c (OTP 26+): "erts_sched_%d", "erts_dcpus_%d", "erts_dios_%d",
    // "erts_aux_%d", "erts_poll_%d"; erl_async.c: "erts_async_%d"; the dispatchers
    // "erts_ssig_disp" and "erts_smsg_disp" (seen on trixie's and forky's VMs).
    threads: ThreadNames {
        normal: "erts_sched_{}",
        dirty_cpu: "erts_dcpus_{}",
        dirty_io: "erts_dios_{}",
        aux: "erts_aux_{}",
        poller: "erts_poll_{}",
        async_pool: "erts_async_{}",
        dispatchers: &["erts_ssig_disp", "erts_smsg_disp"],
    },
    jit: DEBIAN12_OTP25.jit,
};
