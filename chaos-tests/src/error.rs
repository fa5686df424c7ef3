//! The crate's error type: set-up and harness failures (a checker's verdict is not an error).

/// What stopped a run from being set up or carried out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace, route or qdisc command failed, or the safety check refused.
    #[error("host: {0}")]
    Host(String),
    /// A fault that this mode cannot inject.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Starting, stopping or signalling a member failed.
    #[error("member: {0}")]
    Member(String),
    /// An etcd API call of the harness itself failed.
    #[error("rpc: {0}")]
    Rpc(#[from] tonic::Status),
    /// Reading or writing the results folder failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Bad command-line input.
    #[error("usage: {0}")]
    Usage(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
