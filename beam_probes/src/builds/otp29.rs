//! OTP 29 as Debian forky/sid ships it (`erlang-base` 1:29.1.1+dfsg-1, ERTS 17.1, x86-64 JIT,
//! without dynamic trace, build-id a1a858f879ccf28e7871c290914b693182006115). Debian's binary is
//! stripped and, unlike 25 and 27, exports only the NIF and driver API (330 symbols): the hooks,
//! the process and atom tables and the release strings are found through its debug info (a
//! separate debug file or debuginfod; see target.rs). Without it only CPU profiling with the
//! VM's perf map works.
//!
//! Everything is OTP 27's (the hooked functions keep their signatures in the 29.1.1 source;
//! `struct process`, `ErtsPTab`, `IndexTable`, `RegProc`, `Atom` and `Port` (with `erts_driver_t`
//! and `inet_descriptor`) offsets equal 27's in the DWARF of Debian's forky source built with
//! Debian's flags, `cargo xtask otp-debug --suite forky`; the pid and port id layouts, status
//! flags, port flags and JIT records (beam_jit_metadata.cpp) are unchanged in the source) except how an atom holds its text: a binary term instead of a pointer.

use crate::builds::otp25::with_alias_send;
use crate::builds::{AllocLayout, BuildTable, CodeStatics, DEBIAN13_OTP27, FunTable, StaticRef, EtsLayout, MonitorLayout, ProcessLayout, RunQueueLayout};
use crate::hooks::HookSpec;
use crate::terms::{AtomLayout, AtomName};

static HOOKS: [HookSpec; 19] = with_alias_send("erts_proc_sig_send_altact_msg");

pub static DEBIAN_FORKY_OTP29: BuildTable = BuildTable {
    id: "otp29-x86_64-jit",
    otp_release: "29",
    erts_versions: &["17.1"],
    // Debian forky erlang-base 1:29.1.1+dfsg-1 (amd64).
    build_ids: &["a1a858f879ccf28e7871c290914b693182006115"],
    // atom.h: `union { byte *name; Eterm bin; } u` at the old `name` offset. erl_term.h:
    // boxed terms have primary tag 0x2 (mask 0x3); header subtags (mask 0x3f)
    // HEAP_BITS = 0x8 << 2 = 0x20, SUB_BITS = 0x9 << 2 = 0x24. erl_bits.h: ErlHeapBits
    // { thing_word @0; size @8; data @16 }, ErlSubBits { thing_word @0; base_flags @8 (low 2
    // bits: ERL_SUB_BITS_FLAG_MASK); start @16; end @24; orig @32 }.
    atom: AtomLayout {
        name: AtomName::Bitstring {
            boxed_tag_mask: 0x3,
            boxed_tag: 0x2,
            header_tag_mask: 0x3f,
            heap_bits_tag: 0x20,
            heap_bits_data: 16,
            sub_bits_tag: 0x24,
            sub_bits_base: 8,
            sub_bits_base_flags: 0x3,
            sub_bits_start: 16,
        },
        ..DEBIAN13_OTP27.atom
    },
    // struct process grew by 8 bytes at its end, and ErtsPSD by two slots (data[14]); every
    // offset scope-probe reads is OTP 27's.
    process: ProcessLayout { psd_size: 112, size: 768, ..DEBIAN13_OTP27.process },
    // erl_monitor_link.h: type and flags share a Uint32 `flags`: the type in its low 5 bits
    // (ERTS_ML_TYPE_BITS), ERTS_ML_FLG_TARGET at bit 7 (ERTS_ML_F_BASE: 5 type bits + 2
    // alias-state bits).
    monitor: MonitorLayout { flags_bytes: 4, type_field: 0, type_mask: 0x1f, target_flag: 1 << 7, ..DEBIAN13_OTP27.monitor },
    // The scheduler's table list moved (DWARF of Debian's forky source); the rest of ETS is 27's
    // (`counters.is_decentralized` became a bool: read as its first byte on every build).
    ets: EtsLayout { scheduler_list: 41784, scheduler_count: 41776, ..DEBIAN13_OTP27.ets },
    // Atom texts are literal binaries: no text chunks.
    // The fun table is staged like the exports (erl_code_staged.h).
    alloc: AllocLayout {
        atom_text_chunk_bytes: 0,
        code: CodeStatics {
            funs: FunTable::Staged {
                tables: StaticRef { function: "erts_fun_table_sz", nth: 1 },
                entry_bytes: StaticRef { function: "erts_fun_entries_sz", nth: 0 },
            },
            ..DEBIAN13_OTP27.alloc.code
        },
        ..DEBIAN13_OTP27.alloc
    },
    // ErtsRunQueue lost fields before `len` (DWARF of Debian's forky source).
    run_queue: RunQueueLayout { aligned_size: 384, len: 164 },
    // bif.c do_send: a send to an alias (and a priority message to a pid) goes through
    // erts_proc_sig_send_altact_msg(Process *c_p, Eterm from, Eterm to, Eterm msg, Eterm token,
    // int prio), which replaced 27's erts_proc_sig_send_to_alias.
    hooks: &HOOKS,
    ..DEBIAN13_OTP27
};
