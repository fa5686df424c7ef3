//! The Watch service: etcd's bidirectional Watch stream (etcd's `v3rpc/watch.go`) over the
//! member's [`crate::watch::WatchHub`].
//!
//! Each stream is a [`Session`] that owns the client's request stream and the stream's
//! [`HubStream`](crate::watch::HubStream), and whose stream of response batches is the gRPC
//! response body. It handles, one at a time: a request (create, cancel, progress), the
//! deliveries queued in the hub (events, a compaction cancel, progress), and the
//! progress-notify tick. A create is answered before the session looks at the hub again, so a
//! watch's `created` response always precedes its events. When the client goes away (gRPC
//! drops the body), the member shuts down or the request stream fails, the session ends and
//! dropping its [`HubStream`] removes every watcher of the stream.
//!
//! # Why no task of its own
//! The session ran as a task of its own that sent its batches to gRPC through a channel, so
//! each commit woke two tasks per stream: the session's, then the HTTP/2 stream's that encodes
//! and sends. gRPC now polls the session's responses on the HTTP/2 stream's task, which the
//! hub's delivery wakes directly. Flow control works as before: a client that does not read
//! stops gRPC polling the body, the session stops taking from the hub's queue, and the hub sets
//! the stream's watchers aside once that queue is full.
//!
//! # Why batches
//! The responses of one step (typically one commit's events for every watcher of the stream)
//! go to gRPC as one batch, which tonic encodes into one buffer and h2 sends as one DATA frame.
//! Sent one by one, each response became its own DATA frame, and h2 writes a DATA frame of 256
//! bytes or more with a `writev` of its own: one syscall and one TCP segment per event, which
//! was a quarter of the member's CPU in the watch fan-out benchmark.
//!
//! # Why the gRPC service is written out
//! A commit's event goes to each watcher of its key in a response of that watcher's own (one
//! watch ID per response). Handing tonic `WatchResponse` messages meant cloning the event for
//! every watcher and encoding each clone field by field: with 1000 watchers of a key, a
//! thousand copies of the same bytes. The stream's session now hands gRPC the commit's shared
//! events ([`crate::watch::SharedEvent`]) and the codec copies each one's encoding, made once
//! per commit, into the response (10 % less server CPU per event in the fan-out benchmark).
//! tonic's generated service fixes the codec, so the service ([`WatchServer`]) is that
//! generated code written out around our own.
//!
//! # Layout
//! - [`session`]: one stream: requests, deliveries, progress, batches.
//! - [`wire`]: responses as handed to gRPC, their encoding (byte for byte prost's), fragments,
//!   the codec.
//! - [`grpc`]: the `etcdserverpb.Watch` gRPC service over the codec.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kvstore_proto::etcdserverpb::WatchRequest;
use tonic::{Status, Streaming};

use crate::node::Node;
use session::Session;
use wire::Outbound;

pub use grpc::WatchServer;

mod grpc;
mod session;
mod wire;

/// etcd's default progress-notify interval.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);
/// etcd's floor for the progress-notify interval.
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// etcd's `grpcOverheadBytes`: a response is fragmented (when the watch asked for it) once it
/// reaches `--max-request-bytes` plus this.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The Watch service of one member.
pub struct WatchService {
    /// The member serving.
    node: Arc<Node>,
    /// How often a synced, idle watcher that asked for progress notifications gets one.
    progress_interval: Duration,
}

impl WatchService {
    /// The Watch service over a node, with the node's configured progress-notify interval
    /// (`--experimental-watch-progress-notify-interval`, etcd's default of 10 minutes).
    pub fn new(node: Arc<Node>) -> Self {
        let interval = node.config.experimental_watch_progress_notify_interval;
        Self::with_progress_interval(node, interval)
    }

    /// The Watch service with an explicit progress-notify interval (raised to etcd's minimum
    /// of 100 ms).
    pub fn with_progress_interval(node: Arc<Node>, interval: Duration) -> Self {
        if interval < MIN_PROGRESS_INTERVAL {
            tracing::warn!(
                ?interval,
                "adjusting watch progress notify interval to the minimum of 100ms"
            );
        }
        Self {
            node,
            progress_interval: interval.max(MIN_PROGRESS_INTERVAL),
        }
    }
}

/// Parses a duration written as Go's `time.ParseDuration` would: a number with `ms`, `s`, `m`
/// or `h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// The responses of one stream, one gRPC message each.
type ResponseStream = Pin<Box<dyn Stream<Item = Result<Outbound, Status>> + Send>>;

impl WatchService {
    /// Starts serving one Watch stream: the responses its session sends.
    fn open(&self, inbound: Streaming<WatchRequest>) -> ResponseStream {
        let session = Session::new(
            Arc::clone(&self.node),
            self.progress_interval,
            self.node.config.max_request_bytes + GRPC_OVERHEAD_BYTES,
        );
        let responses = session
            .responses(inbound)
            .flat_map(|batch: Vec<Outbound>| futures::stream::iter(batch.into_iter().map(Ok)));
        Box::pin(responses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("x"), None);
    }
}
