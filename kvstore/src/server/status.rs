//! The one mapping from kvstore's errors to gRPC statuses: etcd's codes and messages
//! (etcd's `api/v3rpc/rpctypes`), so clients' error handling works unchanged.

use tonic::{Code, Status};

use crate::mvcc::Error as StoreError;
use crate::Error;

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = match &err {
            Error::Store(e) => match e {
                StoreError::Compacted | StoreError::FutureRevision => Code::OutOfRange,
                StoreError::EmptyKey
                | StoreError::InvalidRangeEnd
                | StoreError::TooManyOps
                | StoreError::DuplicateKey
                | StoreError::RequestTooLarge
                | StoreError::KeyNotFound
                | StoreError::ValueProvided
                | StoreError::LeaseProvided => Code::InvalidArgument,
                StoreError::LeaseNotFound => Code::NotFound,
                StoreError::LeaseExists => Code::FailedPrecondition,
                StoreError::Backend(_) | StoreError::Corrupt(_) => Code::Internal,
            },
            Error::NoSpace => Code::ResourceExhausted,
            Error::Corrupt => Code::DataLoss,
            Error::LeaseTtlTooLarge => Code::OutOfRange,
            Error::NoLeader | Error::Timeout | Error::Stopped | Error::LeaderChanged => {
                Code::Unavailable
            }
            Error::Remote { code, .. } => Code::from_i32(*code),
            Error::MemberNotFound => Code::NotFound,
            Error::PeerUrlExists
            | Error::MemberNotLearner
            | Error::LearnerNotReady
            | Error::TooManyLearners => Code::FailedPrecondition,
            Error::MemberBadUrls => Code::InvalidArgument,
            Error::NotLeader | Error::LeaderTransferTimeout => Code::Unavailable,
            Error::BadLeaderTransferee => Code::FailedPrecondition,
            Error::NotSupportedForLearner => Code::Unavailable,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Config(_) | Error::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(cause = %err, "internal error serving a request");
        }
        Status::new(code, err.to_string())
    }
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        Error::Store(err).into()
    }
}

/// The status of an RPC this member does not implement yet.
pub fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("kvstore: {what} is not implemented yet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_is_out_of_range_with_etcds_message() {
        let s: Status = StoreError::Compacted.into();
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
    }

    #[test]
    fn bad_input_is_invalid_argument() {
        for e in [
            StoreError::EmptyKey,
            StoreError::TooManyOps,
            StoreError::DuplicateKey,
            StoreError::RequestTooLarge,
        ] {
            let s: Status = e.into();
            assert_eq!(s.code(), Code::InvalidArgument);
            assert!(s.message().starts_with("etcdserver: "));
        }
    }

    #[test]
    fn nospace_is_resource_exhausted() {
        let s: Status = Error::NoSpace.into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.message(), "etcdserver: mvcc: database space exceeded");
    }
}
