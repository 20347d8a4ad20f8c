//! A private copy of the installed OTP (/usr/lib/erlang) whose beam.smp a test can replace:
//! a real VM of another build (patched, debug, systemtap) without touching the system's.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct OtpCopy {
    /// Removed with the copy.
    pub root: tempfile::TempDir,
    /// The copy's `erl`, pointed at the copy.
    pub erl: PathBuf,
    /// The copy's beam.smp, to replace or patch before starting a VM.
    pub beam_smp: PathBuf,
}

impl OtpCopy {
    pub fn new() -> OtpCopy {
        let root = tempfile::Builder::new().prefix("scope-probe-otp").tempdir().expect("temp dir");
        let status = Command::new("cp").args(["-a", "/usr/lib/erlang/."]).arg(root.path()).status().expect("cp");
        assert!(status.success(), "copying /usr/lib/erlang");
        let beam_smp = std::fs::read_dir(root.path())
            .expect("the copy")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin/beam.smp"))
            .find(|p| p.exists())
            .expect("erts-*/bin/beam.smp in the copy");
        // Debian's erl script hard-codes its root (even ERL_ROOTDIR is ignored): point the
        // copy's script at the copy.
        let erl = root.path().join("bin/erl");
        let script = std::fs::read_to_string(&erl).expect("bin/erl");
        std::fs::write(&erl, script.replace("/usr/lib/erlang", &root.path().to_string_lossy())).expect("bin/erl");
        OtpCopy { root, erl, beam_smp }
    }

    /// A copy whose beam.smp is the given binary.
    pub fn with_beam(beam_smp: &Path) -> OtpCopy {
        let copy = OtpCopy::new();
        std::fs::copy(beam_smp, &copy.beam_smp).expect("replacing beam.smp");
        copy
    }

    /// Starts the fixture controller on this copy and checks the VM runs the copy's beam.smp.
    pub fn start(&self) -> crate::Beam {
        let beam = crate::Beam::start_fresh_binary(&self.erl, &[]);
        let exe = std::fs::read_link(format!("/proc/{}/exe", beam.os_pid)).expect("/proc/PID/exe");
        assert_eq!(exe, self.beam_smp, "the VM runs the copy's beam.smp");
        beam
    }
}

impl Default for OtpCopy {
    fn default() -> Self {
        OtpCopy::new()
    }
}
