//! Compiles the BPF programs under ../ebpf and generates their libbpf-rs skeletons. The event
//! structs of each `<name>.h` reach Rust through the skeleton's `types` module, so each event
//! has one definition.

use std::ffi::OsStr;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: &[&str] = &["monitor", "profile"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let ebpf = manifest.join("../ebpf");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in PROGRAMS {
        let src = ebpf.join(format!("{name}.bpf.c"));
        SkeletonBuilder::new()
            .source(&src)
            .clang_args([
                OsStr::new("-I"),
                ebpf.as_os_str(),
                // -target bpf drops Debian's multiarch include dir (asm/ headers).
                OsStr::new("-idirafter"),
                OsStr::new("/usr/include/x86_64-linux-gnu"),
                OsStr::new("-Wall"),
            ])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {}: {e:#}", src.display()));
    }
    println!("cargo:rerun-if-changed={}", ebpf.display());
}
