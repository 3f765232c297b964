//! K2's error model. Each domain has its own typed error:
//!
//! | domain | type | where |
//! |---|---|---|
//! | configuration | `ConfigError` | [`crate::runtime::config`] |
//! | start-up | `StartError` | [`crate::service`] (the builder's phases) |
//! | a stage's batch | [`StageError`] | here ([`crate::runtime::supervision::guarded`]) |
//! | sources | `SourceError` | [`crate::sources`] |
//! | sinks | `SinkError` | [`crate::sinks`] |
//! | the lake | `LakeError` | [`crate::lake`] |
//! | Kafka | `KafkaError` | [`crate::kafka`] |
//! | shared state | `StateError` | [`crate::state::shared`] |
//!
//! This module holds what they share, and the one error type of the
//! runtime itself. Every one says through [`Retryable`] whether trying the same thing again
//! can help. The loops that retry (the flusher, `k2 load`, the Kafka
//! consumer) back off on a transient error and stop retrying on a permanent
//! one: its dependency's breaker opens, `/health` names the error, and the
//! work waits (nothing is dropped) until the breaker lets a probe through
//! after its cool-down, which succeeds once an operator has fixed the cause.

use std::io::ErrorKind;

use thiserror::Error;

/// Whether trying the same thing again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A passing fault (a timeout, a refused connection, a conflict): back
    /// off and try again.
    Transient,
    /// Needs someone to change something first (a permission, a bucket that
    /// does not exist, a bad configuration): retrying at once only burns.
    Permanent,
}

/// An error that knows whether retrying can help.
pub trait Retryable {
    fn retry(&self) -> Retry;

    fn is_permanent(&self) -> bool {
        self.retry() == Retry::Permanent
    }
}

/// Local I/O: the kinds no retry can fix without someone acting.
pub fn io_retry(kind: ErrorKind) -> Retry {
    match kind {
        ErrorKind::PermissionDenied
        | ErrorKind::NotFound
        | ErrorKind::ReadOnlyFilesystem
        | ErrorKind::StorageFull
        | ErrorKind::QuotaExceeded
        | ErrorKind::FileTooLarge
        | ErrorKind::InvalidInput
        | ErrorKind::InvalidData
        | ErrorKind::Unsupported
        | ErrorKind::IsADirectory
        | ErrorKind::NotADirectory
        | ErrorKind::DirectoryNotEmpty => Retry::Permanent,
        _ => Retry::Transient,
    }
}

/// Texts of errors that come through libraries as strings (iceberg's and
/// OpenDAL's wrap the object store's answer): what a retry cannot fix.
pub fn text_retry(text: &str) -> Retry {
    const PERMANENT: [&str; 10] = [
        "permission denied",
        "read-only file system",
        "no space left",
        "nosuchbucket",
        "bucket does not exist",
        "the specified bucket does not exist",
        "accessdenied",
        "access denied",
        "invalidaccesskeyid",
        "signaturedoesnotmatch",
    ];
    let lower = text.to_ascii_lowercase();
    let permanent_os_error =
        os_errors(text).any(|n| io_retry(std::io::Error::from_raw_os_error(n).kind()) == Retry::Permanent);
    if permanent_os_error || PERMANENT.iter().any(|p| lower.contains(p)) { Retry::Permanent } else { Retry::Transient }
}

/// The error numbers in `text`: a local I/O error shown as text ends in
/// "(os error N)", and libraries that keep only the text (iceberg's local
/// file storage) still carry that, whatever the wording or the locale.
fn os_errors(text: &str) -> impl Iterator<Item = i32> + '_ {
    const MARK: &str = "(os error ";
    text.match_indices(MARK).filter_map(|(at, _)| {
        let rest = &text[at + MARK.len()..];
        rest[..rest.find(')')?].parse().ok()
    })
}

/// A stage could not process a batch: the supervisor restarts the stage and
/// the batch is counted as a dead letter.
#[derive(Debug, Error)]
pub enum StageError {
    /// The stage's own work failed (a sink refused the batch, say).
    #[error("{0}")]
    Failed(String, Retry),
    #[error("panicked: {0}")]
    Panicked(String),
}

impl Retryable for StageError {
    fn retry(&self) -> Retry {
        match self {
            StageError::Failed(_, retry) => *retry,
            // The same batch would panic again.
            StageError::Panicked(_) => Retry::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_someone_must_fix_is_permanent_and_the_rest_transient() {
        assert_eq!(io_retry(ErrorKind::PermissionDenied), Retry::Permanent);
        assert_eq!(io_retry(ErrorKind::ReadOnlyFilesystem), Retry::Permanent);
        assert_eq!(io_retry(ErrorKind::TimedOut), Retry::Transient);
        assert_eq!(io_retry(ErrorKind::ConnectionRefused), Retry::Transient);
        assert_eq!(text_retry("Unexpected => Failure, source: Permission denied (os error 13)"), Retry::Permanent);
        assert_eq!(text_retry("S3 answered 404 NoSuchBucket: The specified bucket does not exist"), Retry::Permanent);
        assert_eq!(text_retry("connection reset by peer"), Retry::Transient);
    }

    /// iceberg's local storage keeps an I/O error's text only: its error
    /// number says what the kind would have.
    #[test]
    fn local_io_errors_in_text_are_classified_by_their_error_number() {
        // A file where a table's data directory should be (the fault test's).
        let enotdir = "iceberg: Unexpected => Failed to create directory /data/warehouse/market/trades/data/timestamp_day=2024-08-04: Not a directory (os error 20)";
        assert_eq!(text_retry(enotdir), Retry::Permanent);
        // A directory made immutable (chattr +i): EPERM, even for root.
        assert_eq!(
            text_retry("Failed to create file /w/x.parquet: Operation not permitted (os error 1)"),
            Retry::Permanent
        );
        assert_eq!(text_retry("Failed to create file /w/x.parquet: Permission denied (os error 13)"), Retry::Permanent);
        assert_eq!(
            text_retry("Failed to write file /w/x.parquet: Read-only file system (os error 30)"),
            Retry::Permanent
        );
        assert_eq!(
            text_retry("Failed to write file /w/x.parquet: No space left on device (os error 28)"),
            Retry::Permanent
        );
        assert_eq!(text_retry("tcp connect: Connection refused (os error 111)"), Retry::Transient);
        assert_eq!(text_retry("read: Connection timed out (os error 110)"), Retry::Transient);
        assert_eq!(text_retry("(os error x) and (os error"), Retry::Transient, "no number, no verdict");
    }
}
