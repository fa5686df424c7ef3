//! The one error type of kvbench: what can stop a benchmark before it reports.

/// Why a benchmark could not run. Failed requests *during* a run are not errors: they are
/// counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An endpoint could not be reached.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint as given in `--endpoints`.
        endpoint: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// An endpoint could not be reached by a raw link ([`crate::kv_link`]).
    #[error("cannot connect to {endpoint}: {}", status.message())]
    Link {
        /// The endpoint as given in `--endpoints`.
        endpoint: String,
        /// What the link reported.
        status: tonic::Status,
    },
    /// An endpoint string is not a valid URL.
    #[error("invalid endpoint {0:?}")]
    Endpoint(String),
    /// `--target-leader` was given but no endpoint reports itself as leader.
    #[error("no endpoint in --endpoints is the leader")]
    NoLeader,
    /// A request needed to set the workload up (granting leases, creating watchers, preloading)
    /// failed.
    #[error("setup failed: {0}")]
    Setup(String),
    /// A flag combination that cannot work.
    #[error("{0}")]
    Usage(String),
    /// Writing a file (`--ready-file`) failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::Setup(format!("{}: {}", s.code(), s.message()))
    }
}

/// kvbench's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
