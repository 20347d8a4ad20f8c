use std::path::PathBuf;

/// Errors name the fact that is missing so the user knows what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no process with pid {0}")]
    NoSuchProcess(u32),
    #[error(
        "permission denied reading /proc/{pid}/{what}: scope-probe needs CAP_SYS_PTRACE (root has it); with it, the process \
         belongs to a user namespace or security policy that keeps it from this one"
    )]
    PermissionDenied { pid: u32, what: &'static str },
    #[error("pid {pid} ({comm}) is not a BEAM VM: {reason}")]
    NotBeam { pid: u32, comm: String, reason: String },
    #[error(
        "unsupported BEAM build: OTP {otp_release}, ERTS {erts_version}, build-id {build_id} ({path}); \
         scope-probe has no table for it: {missing}"
    )]
    UnsupportedBuild {
        otp_release: String,
        erts_version: String,
        build_id: String,
        path: PathBuf,
        missing: String,
    },
    #[error("{0}")]
    MissingDebugInfo(Box<MissingDebugInfo>),
    #[error("cannot read {what} from the target's memory at {addr:#x}: {source}")]
    Memory {
        what: &'static str,
        addr: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid data in the target's memory: {0}")]
    Corrupt(String),
    #[error("{path} is not this VM's debug file: its build-id is {found}, the VM's beam.smp has {expected}")]
    WrongDebugFile { path: PathBuf, found: String, expected: String },
    #[error("cannot parse ELF file {path}: {reason}")]
    Elf { path: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A stripped build whose debug info was not found, and what a capability needed from it.
#[derive(Debug, thiserror::Error)]
#[error(
    "BEAM build OTP {otp_release}, ERTS {erts_version}, build-id {build_id} ({path}) is stripped: \
     {what} needs symbols it does not export ({missing}); {hint}"
)]
pub struct MissingDebugInfo {
    pub otp_release: String,
    pub erts_version: String,
    pub build_id: String,
    pub path: PathBuf,
    pub what: String,
    pub missing: String,
    pub hint: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}
