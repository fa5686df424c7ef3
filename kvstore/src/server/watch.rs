//! The Watch service: etcd's bidirectional Watch stream (etcd's `v3rpc/watch.go`) over the
//! member's [`crate::watch::WatchHub`].
//!
//! Each stream is served by one task that owns the client's request stream, the stream's
//! [`HubStream`] and a small bounded channel of response batches to gRPC. It handles, one at a
//! time: a request (create, cancel, progress), the deliveries queued in the hub (events, a
//! compaction cancel, progress), and the progress-notify tick. A create is answered before the
//! task looks at the hub again, so a watch's `created` response always precedes its events.
//! When the client goes away, the member shuts down or the request stream fails, the task ends
//! and dropping its [`HubStream`] removes every watcher of the stream.
//!
//! # Why batches
//! The responses of one step (typically one commit's events for every watcher of the stream)
//! go to gRPC as one batch, which tonic encodes into one buffer and h2 sends as one DATA frame.
//! Sent one by one, each response became its own DATA frame, and h2 writes a DATA frame of 256
//! bytes or more with a `writev` of its own: one syscall and one TCP segment per event, which
//! was a quarter of the member's CPU in the watch fan-out benchmark.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kvstore_proto::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch,
    ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse,
};
use kvstore_proto::mvccpb::{event::EventType, Event};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::mvcc::{Error as StoreError, KeyRange, KvStore, RangeOptions};
use crate::node::Node;
use crate::watch::{Delivery, Filters, HubStream, WatchSpec, WatcherKey};

/// etcd's default progress-notify interval.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);
/// etcd's floor for the progress-notify interval.
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// etcd's `grpcOverheadBytes`: a response is fragmented (when the watch asked for it) once it
/// reaches `--max-request-bytes` plus this.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// Response batches buffered between a stream's task and gRPC; the hub's queue holds the rest.
/// A batch holds what one step took from the hub's queue (bounded by the queue's bytes) plus
/// the `prev_kv` it asked for, so two keep memory per slow stream near the queue's own bound.
const OUTBOUND_BATCHES: usize = 2;
/// Deliveries handled in one go after the first (requests and shutdown wait at most this long).
const DRAIN_AT_ONCE: usize = 64;
/// The watch ID of a refused create and of a stream-wide progress notification.
const INVALID_WATCH_ID: i64 = -1;
/// A create asking for watch ID 0 gets the next free ID of the stream.
const AUTO_WATCH_ID: i64 = 0;
/// etcd's `ErrWatcherDuplicateID`.
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's `ErrEmptyWatcherRange`.
const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";

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

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = req.into_inner();
        let (out, batches) = mpsc::channel(OUTBOUND_BATCHES);
        let session = Session {
            hub: self.node.watch_hub.open_stream(),
            node: Arc::clone(&self.node),
            out,
            pending: Vec::new(),
            step_header: ResponseHeader::default(),
            watches: HashMap::new(),
            ids: HashMap::new(),
            next_id: 0,
            progress_interval: self.progress_interval,
            max_response_bytes: self.node.config.max_request_bytes + GRPC_OVERHEAD_BYTES,
        };
        tokio::spawn(session.run(inbound));
        let responses = ReceiverStream::new(batches)
            .flat_map(|batch: Vec<WatchResponse>| futures::stream::iter(batch.into_iter().map(Ok)));
        Ok(Response::new(Box::pin(responses)))
    }
}

/// One watch of a stream, as the client named it.
#[derive(Debug)]
struct WatchEntry {
    /// Its watcher in the hub.
    key: WatcherKey,
    /// Events carry the key's previous value.
    prev_kv: bool,
    /// Large responses are split into fragments.
    fragment: bool,
    /// Periodic progress notifications asked for.
    progress_notify: bool,
    /// No events were sent since the last progress tick (etcd elides the next notification
    /// after an event).
    quiet: bool,
}

/// The client went away (or the member is stopping): stop serving the stream.
#[derive(Debug)]
struct Gone;

/// The state of one Watch stream; see the module docs.
struct Session {
    /// The member serving.
    node: Arc<Node>,
    /// This stream's registration in the hub.
    hub: HubStream,
    /// Response batches to the client.
    out: mpsc::Sender<Vec<WatchResponse>>,
    /// Responses of the current step, sent as one batch when it ends.
    pending: Vec<WatchResponse>,
    /// This member's header as of the start of the current step (the revision is per response).
    step_header: ResponseHeader,
    /// The stream's watches by the client's watch ID.
    watches: HashMap<i64, WatchEntry>,
    /// Watch IDs by hub watcher, to route deliveries (a delivery for a watcher no longer here
    /// is dropped).
    ids: HashMap<WatcherKey, i64>,
    /// The next automatic watch ID to try (etcd 3.5: per stream, from 0).
    next_id: i64,
    /// Progress-notify interval.
    progress_interval: Duration,
    /// Size at which a response of a fragmenting watch is split.
    max_response_bytes: usize,
}

impl Session {
    /// Serves the stream until the client goes away or the member stops.
    async fn run(mut self, mut inbound: Streaming<WatchRequest>) {
        let metrics_streams = self.node.metrics.watch_streams.clone();
        metrics_streams.inc();
        let period = jittered(self.progress_interval);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.node.shutdown.clone();
        let mut inbound_open = true;
        loop {
            let mut step = tokio::select! {
                _ = shutdown.cancelled() => Err(Gone),
                _ = self.out.closed() => Err(Gone),
                req = inbound.message(), if inbound_open => match req {
                    Ok(Some(req)) => {
                        self.handle(req);
                        Ok(())
                    }
                    Ok(None) => {
                        // etcd keeps serving a stream whose client closed its sending side.
                        inbound_open = false;
                        Ok(())
                    }
                    Err(status) => {
                        tracing::debug!(cause = %status, "watch request stream failed");
                        Err(Gone)
                    }
                },
                delivery = self.hub.recv() => self.deliver_queued(delivery).await,
                _ = ticker.tick() => {
                    self.progress_tick();
                    Ok(())
                }
            };
            if step.is_ok() {
                step = self.flush().await;
            }
            if step.is_err() {
                break;
            }
        }
        self.node.metrics.watchers.sub(self.watches.len() as i64);
        metrics_streams.dec();
    }

    /// A header for `revision` from this member, with the Raft term read at the start of the
    /// step (reading it per response was 1 % of a member's CPU in the fan-out benchmark).
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            ..self.step_header
        })
    }

    /// Adds one response to the current step's batch.
    fn send(&mut self, resp: WatchResponse) {
        self.pending.push(resp);
    }

    /// Sends the current step's batch; fails once the client is gone.
    async fn flush(&mut self) -> Result<(), Gone> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.out.send(batch).await.map_err(|_| Gone)
    }

    /// Handles one client request; its answer goes out with the step's batch.
    fn handle(&mut self, req: WatchRequest) {
        self.step_header = self.node.header(0);
        match req.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create),
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id),
            Some(RequestUnion::ProgressRequest(_)) => self.hub.request_progress_all(),
            None => {}
        }
    }

    /// Answers a create that etcd refuses: created and cancelled at once, watch ID -1.
    fn refuse(&mut self, reason: &str) {
        self.send(WatchResponse {
            header: self.header(self.hub.revision()),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..WatchResponse::default()
        });
    }

    /// etcd's create: normalises the key range, picks or checks the watch ID, registers the
    /// watcher and answers `created`.
    fn create(&mut self, create: WatchCreateRequest) {
        let key = if create.key.is_empty() {
            vec![0]
        } else {
            create.key
        };
        if create.start_revision < 0 {
            return self.refuse(&StoreError::Compacted.to_string());
        }
        let range_end = create.range_end;
        if !range_end.is_empty() && range_end != [0] && key >= range_end {
            return self.refuse(ERR_EMPTY_RANGE);
        }
        let id = if create.watch_id == AUTO_WATCH_ID {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.watches.contains_key(&create.watch_id) {
            return self.refuse(ERR_DUPLICATE_ID);
        } else {
            create.watch_id
        };
        let filters = Filters {
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let registered = self.hub.watch(WatchSpec {
            range: KeyRange::from_etcd(&key, &range_end),
            start_rev: create.start_revision,
            filters,
        });
        self.watches.insert(
            id,
            WatchEntry {
                key: registered.key,
                prev_kv: create.prev_kv,
                fragment: create.fragment,
                progress_notify: create.progress_notify,
                quiet: true,
            },
        );
        self.ids.insert(registered.key, id);
        self.node.metrics.watchers.inc();
        self.send(WatchResponse {
            header: self.header(registered.rev),
            watch_id: id,
            created: true,
            ..WatchResponse::default()
        });
    }

    /// etcd's cancel: removes the watch and answers `canceled`; an unknown ID gets no answer.
    fn cancel(&mut self, id: i64) {
        let Some(entry) = self.watches.remove(&id) else {
            return;
        };
        self.ids.remove(&entry.key);
        self.hub.cancel(entry.key);
        self.node.metrics.watchers.dec();
        self.send(WatchResponse {
            header: self.header(self.hub.revision()),
            watch_id: id,
            canceled: true,
            ..WatchResponse::default()
        });
    }

    /// Handles `first` and up to [`DRAIN_AT_ONCE`] deliveries queued behind it, without a
    /// trip through `run`'s `select!` (and its five futures) for each: a commit delivers to
    /// many watchers of a stream at once.
    async fn deliver_queued(&mut self, first: Delivery) -> Result<(), Gone> {
        self.step_header = self.node.header(0);
        self.deliver(first).await?;
        for _ in 0..DRAIN_AT_ONCE {
            match self.hub.try_recv() {
                Some(next) => self.deliver(next).await?,
                None => break,
            }
        }
        Ok(())
    }

    /// Turns one delivery from the hub into responses.
    async fn deliver(&mut self, delivery: Delivery) -> Result<(), Gone> {
        match delivery {
            Delivery::Events {
                watcher,
                rev,
                events,
            } => {
                let Some(&id) = self.ids.get(&watcher) else {
                    return Ok(());
                };
                let Some(entry) = self.watches.get_mut(&id) else {
                    return Ok(());
                };
                entry.quiet = false;
                let (prev_kv, fragment) = (entry.prev_kv, entry.fragment);
                let mut events: Vec<Event> = events.iter().map(|e| Event::clone(e)).collect();
                if prev_kv {
                    events = with_prev_kv(Arc::clone(&self.node.store), events).await?;
                }
                let resp = WatchResponse {
                    header: self.header(rev),
                    watch_id: id,
                    events,
                    ..WatchResponse::default()
                };
                if fragment {
                    self.send_fragments(resp);
                } else {
                    self.send(resp);
                }
                Ok(())
            }
            Delivery::Compacted {
                watcher,
                compact_rev,
                rev,
            } => {
                let Some(id) = self.ids.remove(&watcher) else {
                    return Ok(());
                };
                self.watches.remove(&id);
                self.node.metrics.watchers.dec();
                self.send(WatchResponse {
                    header: self.header(rev),
                    watch_id: id,
                    canceled: true,
                    compact_revision: compact_rev,
                    cancel_reason: StoreError::Compacted.to_string(),
                    ..WatchResponse::default()
                });
                Ok(())
            }
            Delivery::Progress { watcher, rev } => {
                let id = match watcher {
                    None => INVALID_WATCH_ID,
                    Some(key) => match self.ids.get(&key) {
                        Some(&id) => id,
                        None => return Ok(()),
                    },
                };
                self.send(WatchResponse {
                    header: self.header(rev),
                    watch_id: id,
                    ..WatchResponse::default()
                });
                Ok(())
            }
        }
    }

    /// Sends a response of a fragmenting watch, split as [`fragments`] does.
    fn send_fragments(&mut self, resp: WatchResponse) {
        for part in fragments(resp, self.max_response_bytes) {
            self.send(part);
        }
    }

    /// The progress-notify tick: every watch that asked for notifications and saw no events
    /// since the last tick gets one, if it is synced (etcd's `progressTicker`).
    fn progress_tick(&mut self) {
        for entry in self.watches.values_mut() {
            if entry.progress_notify {
                if entry.quiet {
                    self.hub.request_progress(entry.key);
                }
                entry.quiet = true;
            }
        }
    }
}

/// etcd's `sendFragments`: a response of at least `max_bytes` with two or more events is split
/// into pieces, each under the limit unless a single event is larger, all but the last marked
/// `fragment`; the client joins them back into one response.
fn fragments(resp: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if resp.encoded_len() < max_bytes || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut template = resp;
    let events = std::mem::take(&mut template.events);
    template.fragment = true;
    let base = template.encoded_len();
    let mut out = Vec::new();
    let mut current = template.clone();
    let mut size = base;
    for event in events {
        let len = event.encoded_len();
        let field = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if !current.events.is_empty() && size + field >= max_bytes {
            out.push(std::mem::replace(&mut current, template.clone()));
            size = base;
        }
        current.events.push(event);
        size += field;
    }
    current.fragment = false;
    out.push(current);
    out
}

/// The interval plus up to a tenth of it at random, so streams opened together do not all
/// notify together (as etcd does).
fn jittered(interval: Duration) -> Duration {
    let tenth = (interval.as_millis() / 10).max(1) as u64;
    interval + Duration::from_millis(rand::random::<u64>() % tenth)
}

/// Fills each event's `prev_kv` with the key's value just before it (etcd: a read at
/// `mod_revision - 1`; nothing for a creation, a compacted revision or an absent key). Reads
/// RocksDB, so it runs on the blocking pool. If that task dies the stream is ended rather than
/// sending the events without what the watch asked for; the client resumes from its last event.
async fn with_prev_kv(store: Arc<KvStore>, events: Vec<Event>) -> Result<Vec<Event>, Gone> {
    let handle = tokio::task::spawn_blocking(move || {
        let mut events = events;
        fill_prev_kv(&store, &mut events);
        events
    });
    handle.await.map_err(|err| {
        tracing::error!(cause = %err, "prev_kv lookup task failed; ending the watch stream");
        Gone
    })
}

/// The blocking part of [`with_prev_kv`].
fn fill_prev_kv(store: &KvStore, events: &mut [Event]) {
    for event in events {
        let Some(kv) = event.kv.as_ref() else {
            continue;
        };
        let created =
            event.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
        if created || kv.mod_revision <= 1 {
            continue;
        }
        let opts = RangeOptions {
            rev: kv.mod_revision - 1,
            limit: 1,
            count_only: false,
        };
        if let Ok(found) = store.read_range(&KeyRange::Single(kv.key.clone()), opts) {
            event.prev_kv = found.kvs.into_iter().next();
        }
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

    fn event(key: &str, value_len: usize) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(kvstore_proto::mvccpb::KeyValue {
                key: key.into(),
                value: vec![b'x'; value_len],
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn large_responses_are_split_into_fragments_in_order() {
        let resp = WatchResponse {
            watch_id: 7,
            events: (0..10).map(|i| event(&format!("k{i}"), 300)).collect(),
            ..WatchResponse::default()
        };
        let parts = fragments(resp.clone(), 1000);
        assert!(parts.len() > 1);
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.watch_id, 7);
            assert_eq!(
                part.fragment,
                i + 1 < parts.len(),
                "all but the last are fragments"
            );
            assert!(part.encoded_len() < 1000, "each fragment fits");
        }
        let joined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, resp.events);
    }

    #[test]
    fn small_or_single_event_responses_are_not_fragmented() {
        let small = WatchResponse {
            events: vec![event("a", 10), event("b", 10)],
            ..WatchResponse::default()
        };
        assert_eq!(fragments(small.clone(), 1000), vec![small]);
        let single = WatchResponse {
            events: vec![event("a", 5000)],
            ..WatchResponse::default()
        };
        assert_eq!(fragments(single.clone(), 1000), vec![single]);
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(10) && d < Duration::from_secs(11));
        }
    }
}
