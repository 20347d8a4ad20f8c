//! Struct offsets from DWARF (`beam_probes::dwarf`):
//! - on a beam.smp built with DWARF from Debian's own OTP 25 source (`cargo xtask otp-debug`,
//!   cached at .cache/otp-debug/bookworm/beam.smp), every offset of the OTP 25 build table equals
//!   the DWARF's, and a VM running that binary boots and is read correctly with the table;
//! - the same for Debian 13's OTP 27 source built in its chroot (`cargo xtask otp-debug --suite
//!   trixie`, .cache/otp-debug/trixie/beam.smp) and the OTP 27 table;
//! - on small C programs compiled here, the layouts equal what the compiler's own `offsetof`
//!   prints (nested and anonymous structs and unions, typedef and qualifier chains, a struct
//!   opaque in one unit and defined in another, DWARF 4 and 5, a separate compressed debug
//!   file), and odd input gives errors, never panics.

use std::path::{Path, PathBuf};
use std::process::Command;

use beam_probes::builds::{self, DEBIAN_FORKY_OTP29, DEBIAN12_OTP25, DEBIAN13_OTP27, ERTS_VERSION_SYMBOL, OTP_RELEASE_SYMBOL};
use beam_probes::dwarf::{self, DebugInfo, DwarfError};
use beam_probes::elf::ElfInfo;

const STOCK_BEAM: &str = "/usr/lib/erlang/erts-13.1.5/bin/beam.smp";

fn debug_beam() -> PathBuf {
    let path = scope_probe_tests::otp_debug_beam(&scope_probe_tests::host_suite());
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask otp-debug` (builds beam.smp with DWARF from Debian's OTP 25 source; \
         `cargo xtask test` does it first)",
        path.display()
    );
    path
}

/// The trixie (OTP 27) build with DWARF.
fn trixie_debug_beam() -> PathBuf {
    let path = scope_probe_tests::otp_debug_beam("trixie");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask otp-debug --suite trixie` (builds Debian 13's OTP 27 source in its \
         chroot; `cargo xtask test` does it first)",
        path.display()
    );
    path
}

/// `etp_otp_release` and `etp_erts_version` as stored in the file.
fn release_strings(path: &Path) -> (String, String) {
    let elf = ElfInfo::open(path).unwrap();
    let data = std::fs::read(path).unwrap();
    let read = |name: &str| {
        let off = elf.file_offset(elf.symbol(name).unwrap().address).unwrap() as usize;
        let end = off + data[off..].iter().position(|&b| b == 0).unwrap();
        String::from_utf8(data[off..end].to_vec()).unwrap()
    };
    (read(OTP_RELEASE_SYMBOL), read(ERTS_VERSION_SYMBOL))
}

/// The size of a data symbol in the binary's symbol table (`st_size`).
fn symbol_size(path: &Path, name: &str) -> u64 {
    ElfInfo::open(path).unwrap().symbol(name).unwrap_or_else(|| panic!("{name} in {}", path.display())).size
}

/// What a live VM says the size of its processes is: `erts_proc.r.o.element_size`, set at
/// boot to `sizeof(Process)`, read from the VM's memory at the offset the DWARF gives.
fn live_element_size(vm_pid: u32, dwarf_of: &Path) -> u64 {
    let ptab = dwarf::struct_layout(dwarf_of, "ErtsPTab").unwrap();
    let offset = ptab.offset("r.o.element_size").unwrap();
    let target = beam_probes::BeamTarget::open(vm_pid).unwrap();
    target.mem.read_u64(target.process_table_address() + offset, "element_size").unwrap()
}

/// Every struct offset of `table` equals the DWARF of `beam`; the difference, by field, if not.
fn assert_table_matches_dwarf(beam: &Path, table: &beam_probes::BuildTable) {
    let mismatches = dwarf::check_table(beam, table).unwrap();
    assert!(
        mismatches.is_empty(),
        "build table {} differs from the DWARF of {}:\n{}",
        table.id,
        beam.display(),
        mismatches.iter().map(|m| format!("  {m}")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn dwarf_offsets_equal_the_otp25_table() {
    let beam = debug_beam();
    assert!(dwarf::has_debug_info(&beam));
    let (release, erts) = release_strings(&beam);
    let table = builds::select(&release, &erts).expect("the debug build's release has a table");
    assert_eq!(table.id, DEBIAN12_OTP25.id, "OTP {release} / ERTS {erts} selects the Debian 12 table");

    assert_table_matches_dwarf(&beam, table);

    // A table with one wrong offset is caught, by name.
    let wrong = beam_probes::BuildTable {
        process: beam_probes::builds::ProcessLayout { sig_inq_len: 688, ..DEBIAN12_OTP25.process },
        ..DEBIAN12_OTP25
    };
    let mismatches = dwarf::check_table(&beam, &wrong).unwrap();
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    assert_eq!((mismatches[0].field, mismatches[0].table, mismatches[0].dwarf), ("process.sig_inq_len", 688, 672));
    assert!(mismatches[0].to_string().contains("struct process: sig_inq.len"), "{}", mismatches[0]);

    // The paths the table is derived from, spelled as in erl_process.h, with their sizes.
    let process = dwarf::struct_layout(&beam, "struct process").unwrap();
    // The host's own VM (whatever test target is selected).
    let stock = scope_probe_tests::Beam::start_with(Path::new("/usr/bin/erl"), &[], &[]);
    let live = live_element_size(stock.os_pid, &beam);
    assert_eq!(process.size, Some(live), "sizeof(Process): what erts_proc.r.o.element_size says on the stock VM");
    let sized = |m: &str| process.member(m).unwrap().size;
    assert_eq!(sized("state"), Some(4), "state is an ethr_atomic32_t");
    assert_eq!(sized("sig_qs.len"), Some(8));
    assert_eq!(sized("sig_inq.len"), Some(8));
    assert_eq!(process.offset("state.counter").unwrap(), process.offset("state").unwrap());
    let ptab = dwarf::struct_layout(&beam, "ErtsPTab").unwrap();
    let stock_exe = PathBuf::from(format!("/proc/{}/exe", stock.os_pid));
    assert_eq!(ptab.size, Some(symbol_size(&stock_exe, "erts_proc")), "the size of the exported erts_proc symbol");
    assert_eq!(ptab.member("r.o.max").unwrap().size, Some(4));
}

#[test]
fn dwarf_offsets_equal_the_otp27_table() {
    let beam = trixie_debug_beam();
    let (release, erts) = release_strings(&beam);
    assert_eq!((release.as_str(), erts.as_str()), ("27", "15.2.7"));
    let table = builds::select(&release, &erts).expect("OTP 27 has a table");
    assert_eq!(table.id, DEBIAN13_OTP27.id);
    assert_table_matches_dwarf(&beam, table);
    // What changed since 25, by name: the queue counters were renamed and split, the
    // process-table masks widened.
    let process = dwarf::struct_layout(&beam, "struct process").unwrap();
    // Debian 13's own VM (the packaged binary, in the chroot) says the same.
    let root = scope_probe_tests::chroot::provisioned("trixie").unwrap();
    let packaged = scope_probe_tests::chroot::start_beam_in_chroot(&root, &[]);
    assert_eq!(process.size, Some(live_element_size(packaged.os_pid, &beam)), "sizeof(Process) in 27");
    assert!(process.member("sig_qs.len").is_err() && process.member("sig_qs.mq_len").is_ok());
    assert_eq!(process.member("sig_qs.mlenoffs").unwrap().size, Some(8));
    let ptab = dwarf::struct_layout(&beam, "ErtsPTab").unwrap();
    let packaged_smp = PathBuf::from(format!("/proc/{}/exe", packaged.os_pid));
    assert_eq!(ptab.size, Some(symbol_size(&packaged_smp, "erts_proc")), "the size of the exported erts_proc symbol in trixie's beam.smp");
    assert_eq!(ptab.member("r.o.pix_mask").unwrap().size, Some(8));
    assert_eq!(ptab.member("r.o.pix_cl_shift").unwrap().size, Some(4));
    // The OTP 25 table read against this DWARF is wrong, and says where.
    let wrong = dwarf::check_table(&beam, &DEBIAN12_OTP25).unwrap();
    assert!(wrong.iter().any(|m| m.field == "process.sig_qs_len" && m.dwarf == 336), "{wrong:?}");
}

/// Forky's OTP 29 built from Debian's source (`cargo xtask otp-debug --suite forky`): its
/// DWARF equals the OTP 29 table (OTP 27's offsets; the atom name became a union whose binary
/// term member the table reads), and the release strings, local symbols in 29, are in its
/// symbol table.
#[test]
fn dwarf_offsets_equal_the_otp29_table() {
    let beam = scope_probe_tests::otp_debug_beam("forky");
    assert!(beam.exists(), "{} is missing: run `cargo xtask otp-debug --suite forky`", beam.display());
    let (release, erts) = release_strings(&beam);
    assert_eq!((release.as_str(), erts.as_str()), ("29", "17.1"));
    let table = builds::select(&release, &erts).expect("OTP 29 has a table");
    assert_eq!(table.id, DEBIAN_FORKY_OTP29.id);
    assert_table_matches_dwarf(&beam, table);
    let atom = dwarf::struct_layout(&beam, "Atom").unwrap();
    assert!(atom.member("name").is_err(), "OTP 29 has no Atom.name any more");
    assert_eq!(atom.member("u.bin").unwrap().offset, DEBIAN_FORKY_OTP29.atom.atom_name);
}

#[test]
fn stripped_binary_has_no_dwarf() {
    let stock = Path::new(STOCK_BEAM);
    assert!(!dwarf::has_debug_info(stock));
    let err = dwarf::struct_layout(stock, "process").unwrap_err();
    assert!(matches!(err, DwarfError::NoDebugInfo { .. }), "{err}");
    assert!(err.to_string().contains("no DWARF debug info"), "{err}");
}

#[test]
fn vm_runs_from_the_debug_build_and_is_read_with_the_table() {
    let debug = debug_beam();
    let copy = scope_probe_tests::otp_copy::OtpCopy::with_beam(&debug);
    let mut vm = copy.start();
    let exe = copy.beam_smp.clone();
    assert!(dwarf::has_debug_info(&exe));
    assert_eq!(vm.call("erlang:system_info(otp_release)")["value"], "\"25\"");

    // The table (equal to this binary's DWARF) reads the live VM: a registered process is
    // found under its pid and name.
    let code_server = vm.call("pid_to_list(whereis(code_server))")["value"].trim_matches('"').to_owned();
    let target = beam_probes::BeamTarget::open(vm.os_pid).unwrap();
    assert_eq!(target.table.id, DEBIAN12_OTP25.id);
    // With DWARF in the binary, its offsets are the ones in use (and equal the table's).
    assert_eq!(target.offsets, beam_probes::target::OffsetSource::Dwarf);
    assert!(dwarf::compare(&dwarf::derive_offsets(&exe).unwrap(), target.table).is_empty());
    let out = scope_probe_tests::probe::run(&["snapshot", "--pid", &vm.os_pid.to_string(), "--json", "--all"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["offsets"], "dwarf", "the snapshot says where its offsets come from");
    assert!(json["processes"].as_array().unwrap().iter().any(|p| p["name"] == "code_server" && p["pid"] == code_server.as_str()));
    let snap = beam_probes::snapshot::snapshot(&target.process_table()).unwrap();
    let found = snap.processes.iter().find(|p| p.name.as_deref() == Some("code_server"));
    let found = found.unwrap_or_else(|| panic!("code_server in the snapshot of the debug VM: {:?}", snap.processes));
    assert_eq!(found.pid.to_string(), code_server);
    assert!(found.reductions > 0);
}

// ---------------------------------------------------------------------------------------------
// Small C programs: the layout equals the compiler's offsetof.

const HEADER: &str = r#"
#include <stddef.h>
typedef volatile long atomic_like;
typedef const atomic_like catomic;
typedef struct { int x; catomic counter; } wrapped_t;
typedef wrapped_t wrapped2_t;
struct inner {
    char c;
    union { long l; struct { short s1; int s2; } pair; } u;
};
typedef struct opaque opaque_t; /* defined in b.c only */
struct outer {
    int a;
    struct inner in;
    union { struct { int anon_x; long anon_y; }; double d; };
    wrapped2_t w;
    unsigned bf1 : 3, bf2 : 13;
    int arr[5];
    struct inner nested_arr[2];
    opaque_t *op;
    struct outer *self;
    long last;
};
size_t opaque_hidden_offset(void);
"#;

const A_C: &str = r#"
#include <stdio.h>
#include "t.h"
#define P(m) printf("%s %zu %zu\n", #m, offsetof(struct outer, m), sizeof(((struct outer *)0)->m))
int main(void) {
    P(a); P(in); P(in.c); P(in.u); P(in.u.l); P(in.u.pair); P(in.u.pair.s1); P(in.u.pair.s2);
    P(anon_x); P(anon_y); P(d); P(w); P(w.x); P(w.counter); P(arr); P(nested_arr); P(op); P(self); P(last);
    printf("sizeof %zu 0\n", sizeof(struct outer));
    printf("opaque.hidden %zu 0\n", opaque_hidden_offset());
    return 0;
}
"#;

const B_C: &str = r#"
#include "t.h"
struct opaque { long pad; char c; int hidden; };
struct opaque the_opaque; /* so that the compiler describes it */
size_t opaque_hidden_offset(void) { return offsetof(struct opaque, hidden); }
"#;

struct CProgram {
    _dir: tempfile::TempDir,
    exe: PathBuf,
    /// (member path, offset, size) as the program prints them.
    truth: Vec<(String, u64, u64)>,
}

fn compile(dwarf_flag: &str) -> CProgram {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("t.h", HEADER), ("a.c", A_C), ("b.c", B_C)] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let exe = dir.path().join("layout");
    let out = Command::new("cc")
        .args(["-g", dwarf_flag, "-O0", "-Wl,--build-id", "-o"])
        .arg(&exe)
        .args(["a.c", "b.c"])
        .current_dir(dir.path())
        .output()
        .expect("running cc (build-essential)");
    assert!(out.status.success(), "cc failed: {}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let truth = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut f = l.split(' ');
            let (m, o, s) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            (m.to_owned(), o.parse().unwrap(), s.parse().unwrap())
        })
        .collect();
    CProgram { _dir: dir, exe, truth }
}

fn check_program(p: &CProgram, info: &DebugInfo) {
    let outer = info.struct_layout("struct outer").unwrap();
    for (member, offset, size) in &p.truth {
        match member.as_str() {
            "sizeof" => assert_eq!(outer.size, Some(*offset)),
            "opaque.hidden" => {
                // opaque_t is only declared in a.c's unit; its definition is in b.c's.
                let opaque = info.struct_layout("opaque_t").unwrap();
                assert_eq!(opaque.offset("hidden").unwrap(), *offset);
            }
            m => {
                let got = outer.member(m).unwrap_or_else(|e| panic!("{e}; have {:?}", outer.members.keys()));
                assert_eq!(got.offset, *offset, "offset of {m}");
                if !matches!(m, "arr" | "nested_arr") {
                    assert_eq!(got.size, Some(*size), "size of {m}");
                }
            }
        }
    }
    // Bit fields: the byte holding their first bit, between w and arr.
    let (w_end, arr) = (outer.offset("w").unwrap() + 16, outer.offset("arr").unwrap());
    for bf in ["bf1", "bf2"] {
        let off = outer.offset(bf).unwrap();
        assert!((w_end..arr).contains(&off), "{bf} at {off}, expected in {w_end}..{arr}");
    }
    // Pointers are not followed, arrays are not expanded; typedef names resolve to the struct.
    assert!(!outer.members.keys().any(|k| k.starts_with("self.") || k.starts_with("op.") || k.starts_with("arr.")));
    let wrapped = info.struct_layout("wrapped2_t").unwrap();
    assert_eq!(wrapped.offset("counter").unwrap(), outer.offset("w.counter").unwrap() - outer.offset("w").unwrap());

    let err = info.struct_layout("no_such_struct").unwrap_err();
    assert!(matches!(err, DwarfError::NoStruct { .. }) && err.to_string().contains("no_such_struct"), "{err}");
    let err = outer.offset("in.u.nope").unwrap_err();
    assert!(err.to_string().contains("struct `outer` has no member `in.u.nope`"), "{err}");
}

#[test]
fn c_layouts_equal_offsetof_dwarf5() {
    let p = compile("-gdwarf-5");
    check_program(&p, &DebugInfo::open(&p.exe).unwrap());
}

#[test]
fn c_layouts_equal_offsetof_dwarf4() {
    let p = compile("-gdwarf-4");
    check_program(&p, &DebugInfo::open(&p.exe).unwrap());
}

#[test]
fn separate_compressed_debug_file() {
    let p = compile("-gdwarf-5");
    let debug = p.exe.with_extension("debug");
    let stripped = p.exe.with_extension("stripped");
    let objcopy = |args: &[&str], from: &Path, to: &Path| {
        let status = Command::new("objcopy").args(args).arg(from).arg(to).status().expect("objcopy (binutils)");
        assert!(status.success());
    };
    objcopy(&["--only-keep-debug", "--compress-debug-sections=zlib"], &p.exe, &debug);
    objcopy(&["--strip-debug"], &p.exe, &stripped);
    assert!(!dwarf::has_debug_info(&stripped));
    assert!(matches!(DebugInfo::open(&stripped), Err(DwarfError::NoDebugInfo { .. })));
    check_program(&p, &DebugInfo::open_split(&stripped, &debug).unwrap());

    // Another binary's debug file is refused by build-id.
    let err = DebugInfo::open_split(Path::new(STOCK_BEAM), &debug).err().expect("build-id mismatch");
    assert!(matches!(err, DwarfError::BuildIdMismatch { .. }), "{err}");
}

#[test]
fn odd_input_gives_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("not-elf");
    std::fs::write(&text, "just text\n").unwrap();
    assert!(!dwarf::has_debug_info(&text));
    assert!(matches!(dwarf::struct_layout(&text, "outer"), Err(DwarfError::Elf { .. })));
    assert!(matches!(
        dwarf::struct_layout(&dir.path().join("absent"), "outer"),
        Err(DwarfError::Io { .. })
    ));

    // Corrupt .debug_info and .debug_abbrev in many places: any result but a panic.
    let p = compile("-gdwarf-5");
    let data = std::fs::read(&p.exe).unwrap();
    let ranges: Vec<(usize, usize)> = {
        use object::{Object, ObjectSection};
        let file = object::File::parse(&*data).unwrap();
        [".debug_info", ".debug_abbrev", ".debug_str"]
            .iter()
            .filter_map(|n| file.section_by_name(n)?.file_range())
            .map(|(o, s)| (o as usize, s as usize))
            .collect()
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..60 {
        let mut bad = data.clone();
        let (off, size) = ranges[round % ranges.len()];
        for _ in 0..(1 + round % 8) {
            let at = off + (next() as usize) % size;
            bad[at] = next() as u8;
        }
        if round % 10 == 9 {
            bad.truncate(off + (next() as usize) % size); // cut inside a section
        }
        let path = dir.path().join(format!("bad-{round}"));
        std::fs::write(&path, &bad).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let _ = dwarf::has_debug_info(&path);
            if let Ok(l) = dwarf::struct_layout(&path, "outer") {
                let _ = l.offset("in.u.pair.s2");
            }
            let _ = dwarf::struct_layout(&path, "opaque_t");
        });
        assert!(outcome.is_ok(), "round {round}: a corrupt DWARF made the reader panic");
    }
}

/// A stripped beam.smp with a `.gnu_debuglink` to a debug file in its `.debug/` folder (the
/// layout gdb and perf search): scope-probe finds the file and reads the offsets from it.
#[test]
fn separate_debug_file_found_through_gnu_debuglink() {
    let debug = debug_beam();
    let copy = scope_probe_tests::otp_copy::OtpCopy::with_beam(&debug);
    let dir = copy.beam_smp.parent().unwrap().join(".debug");
    std::fs::create_dir_all(&dir).unwrap();
    let debug_file = dir.join("beam.smp.debug");
    let objcopy = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("objcopy").args(args).status().expect("objcopy (binutils)");
        assert!(status.success(), "objcopy {args:?}");
    };
    objcopy(&["--only-keep-debug".as_ref(), copy.beam_smp.as_os_str(), debug_file.as_os_str()]);
    let link = format!("--add-gnu-debuglink={}", debug_file.display());
    objcopy(&["--strip-debug".as_ref(), link.as_ref(), copy.beam_smp.as_os_str()]);
    assert!(!dwarf::has_debug_info(&copy.beam_smp), "the copy is stripped");

    let vm = copy.start();
    let out = scope_probe_tests::probe::run(&["snapshot", "--pid", &vm.os_pid.to_string(), "--json", "--all"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["offsets"], "dwarf", "{json}");
    // Found as the VM sees its files: through its root.
    assert_eq!(json["debug_file"], format!("/proc/{}/root{}", vm.os_pid, debug_file.display()));
    assert!(json["processes"].as_array().unwrap().iter().any(|p| p["name"] == "code_server"));
}
