//! kvctl's one error type, and the exit code etcdctl uses for each kind of failure.
//!
//! etcdctl prints `Error: <message>` on standard error and exits with a code that says what
//! went wrong (its `ExitWithError` codes). Which code a failure gets depends on where it
//! happens, not only on what it is: a failed `lease timetolive` request exits 2 while a
//! failed `get` exits 1. Call sites therefore choose the variant; [`Error::exit_code`] maps
//! each variant to its code in one place.

/// etcdctl's `ExitError`: a request failed.
pub const EXIT_ERROR: i32 = 1;
/// etcdctl's `ExitBadConnection`.
pub const EXIT_BAD_CONNECTION: i32 = 2;
/// etcdctl's `ExitInvalidInput`: bad standard input (`txn`, `watch -i`).
pub const EXIT_INVALID_INPUT: i32 = 3;
/// etcdctl's `ExitBadFeature`: an unsupported option value or output format.
pub const EXIT_BAD_FEATURE: i32 = 4;
/// etcdctl's `ExitInterrupted`: a watch ended.
pub const EXIT_INTERRUPTED: i32 = 5;
/// etcdctl's `ExitIO`.
pub const EXIT_IO: i32 = 6;
/// etcdctl's `ExitBadArgs`: wrong arguments.
pub const EXIT_BAD_ARGS: i32 = 128;

/// Everything that makes kvctl exit unsuccessfully. The `Display` text is what follows
/// `Error: ` on standard error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Wrong arguments or flags (exit 128).
    #[error("{0}")]
    BadArgs(String),
    /// Malformed standard input (exit 3).
    #[error("{0}")]
    InvalidInput(String),
    /// An option value or output format the command does not support (exit 4).
    #[error("{0}")]
    BadFeature(String),
    /// A request failed, or the cluster is unhealthy (exit 1).
    #[error("{0}")]
    Request(String),
    /// A request failed where etcdctl reports a bad connection (exit 2).
    #[error("{0}")]
    Connection(String),
    /// A watch was cancelled or its stream ended (exit 5).
    #[error("{0}")]
    Interrupted(String),
    /// Reading standard input or writing output failed (exit 6).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The failure was already reported line by line on standard error (exit 1, no message).
    #[error("")]
    Reported,
}

impl Error {
    /// The process exit code etcdctl uses for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::BadArgs(_) => EXIT_BAD_ARGS,
            Self::InvalidInput(_) => EXIT_INVALID_INPUT,
            Self::BadFeature(_) => EXIT_BAD_FEATURE,
            Self::Request(_) | Self::Reported => EXIT_ERROR,
            Self::Connection(_) => EXIT_BAD_CONNECTION,
            Self::Interrupted(_) => EXIT_INTERRUPTED,
            Self::Io(_) => EXIT_IO,
        }
    }

    /// Whether `Error: <message>` should be printed (not for [`Error::Reported`]).
    pub fn has_message(&self) -> bool {
        !matches!(self, Self::Reported)
    }
}

/// A failed request: the message etcdctl would print for it (the etcd error text such as
/// `etcdserver: mvcc: required revision has been compacted`, `context deadline exceeded`
/// for a timeout, or gRPC's `rpc error: code = ... desc = ...` for anything else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError(pub String);

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<RpcError> for Error {
    fn from(e: RpcError) -> Self {
        Self::Request(e.0)
    }
}

impl RpcError {
    /// The same failure, reported as a bad connection (exit 2) as etcdctl does for some
    /// commands (`lease timetolive`, `lease list`, `lease keep-alive`).
    pub fn connection(self) -> Error {
        Error::Connection(self.0)
    }
}

/// `Result` with kvctl's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
