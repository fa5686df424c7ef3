//! One Watch stream's state (see the [module docs](super)): the client's request stream, the
//! stream's [`HubStream`] and the responses of the current step, handed to gRPC as one batch
//! (encoded there, see [`super::wire`]) by the stream of responses [`Session::responses`] makes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use kvstore_proto::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, ResponseHeader,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use kvstore_proto::mvccpb::{event::EventType, Event};
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use super::wire::{fragments, EventsBody, Outbound};
use crate::mvcc::{Error as StoreError, KeyRange, KvStore, RangeOptions};
use crate::node::Node;
use crate::watch::{Delivery, Filters, HubStream, WatchSpec, WatcherKey};

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

/// One watch of a stream.
#[derive(Debug)]
struct WatchEntry {
    /// The client's ID for it.
    id: i64,
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
pub(super) struct Session {
    /// The member serving.
    node: Arc<Node>,
    /// This stream's registration in the hub.
    hub: HubStream,
    /// Responses of the current step, sent as one batch when it ends.
    pending: Vec<Outbound>,
    /// This member's header as of the start of the current step (the revision is per response).
    step_header: ResponseHeader,
    /// The stream's watches by hub watcher, to route deliveries (a delivery for a watcher no
    /// longer here is dropped). Keys are the hub's own IDs, so a fast hash is safe; one lookup
    /// per delivery (two, with SipHash, were a tenth of a member's CPU in the fan-out).
    watches: FxHashMap<WatcherKey, WatchEntry>,
    /// Hub watchers by the client's watch ID (the client picks these: SipHash).
    ids: HashMap<i64, WatcherKey>,
    /// The next automatic watch ID to try (etcd 3.5: per stream, from 0).
    next_id: i64,
    /// Progress-notify interval.
    progress_interval: Duration,
    /// Size at which a response of a fragmenting watch is split.
    max_response_bytes: usize,
}

impl Session {
    /// A new stream of `node`.
    pub(super) fn new(
        node: Arc<Node>,
        progress_interval: Duration,
        max_response_bytes: usize,
    ) -> Self {
        node.metrics.watch_streams.inc();
        Self {
            hub: node.watch_hub.open_stream(),
            node,
            pending: Vec::new(),
            step_header: ResponseHeader::default(),
            watches: FxHashMap::default(),
            ids: HashMap::new(),
            next_id: 0,
            progress_interval,
            max_response_bytes,
        }
    }

    /// The stream's responses, one batch per step that has any, until the client closes the
    /// stream, its request stream fails or the member stops. gRPC polls this stream on the
    /// HTTP/2 stream's own task, so the step runs there: a delivery wakes one task, not this
    /// stream's and then gRPC's (a hand-off per stream per commit, see the module docs).
    pub(super) fn responses(
        self,
        inbound: Streaming<WatchRequest>,
    ) -> impl Stream<Item = Vec<Outbound>> + Send {
        let period = jittered(self.progress_interval);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let serving = Serving {
            shutdown: self.node.shutdown.clone(),
            session: self,
            inbound,
            inbound_open: true,
            ticker,
        };
        futures::stream::unfold(serving, |mut serving| async move {
            let batch = serving.next_batch().await?;
            Some((batch, serving))
        })
    }

    /// A header for `revision` from this member, with the Raft term read at the start of the
    /// step (reading it per response was 1 % of a member's CPU in the fan-out benchmark).
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.step_header_at(revision))
    }

    /// The step's header with `revision`.
    fn step_header_at(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            revision,
            ..self.step_header
        }
    }

    /// Adds one response to the current step's batch.
    fn send(&mut self, resp: WatchResponse) {
        self.pending.push(Outbound::Message(resp));
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
            while self.ids.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.ids.contains_key(&create.watch_id) {
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
            registered.key,
            WatchEntry {
                id,
                prev_kv: create.prev_kv,
                fragment: create.fragment,
                progress_notify: create.progress_notify,
                quiet: true,
            },
        );
        self.ids.insert(id, registered.key);
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
        let Some(key) = self.ids.remove(&id) else {
            return;
        };
        self.watches.remove(&key);
        self.hub.cancel(key);
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
                watchers,
                rev,
                events,
            } => {
                // The watchers' responses share the header and the events' encoding, and the
                // previous values, read once for all the watchers that asked for them.
                let header = self.step_header_at(rev);
                let body = EventsBody::new(&header, events);
                let mut with_prev: Option<Vec<Event>> = None;
                for watcher in watchers {
                    self.deliver_events(watcher, &header, &body, &mut with_prev)
                        .await?;
                }
                Ok(())
            }
            Delivery::Compacted {
                watcher,
                compact_rev,
                rev,
            } => {
                let Some(WatchEntry { id, .. }) = self.watches.remove(&watcher) else {
                    return Ok(());
                };
                self.ids.remove(&id);
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
                    Some(key) => match self.watches.get(&key) {
                        Some(entry) => entry.id,
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

    /// The response (or responses) of one watcher of an events delivery. `with_prev` holds the
    /// delivery's events with their previous values once a watcher of it has needed them.
    async fn deliver_events(
        &mut self,
        watcher: WatcherKey,
        header: &ResponseHeader,
        body: &EventsBody,
        with_prev: &mut Option<Vec<Event>>,
    ) -> Result<(), Gone> {
        let Some(entry) = self.watches.get_mut(&watcher) else {
            return Ok(());
        };
        entry.quiet = false;
        let (id, prev_kv, fragment) = (entry.id, entry.prev_kv, entry.fragment);
        let events = body.events();
        let whole = !fragment || events.len() < 2 || body.encoded_len(id) < self.max_response_bytes;
        if !prev_kv && whole {
            // The common case: the events go out as they are, encoded once per commit.
            self.pending.push(Outbound::Events {
                body: body.clone(),
                watch_id: id,
            });
            return Ok(());
        }
        let events: Vec<Event> = if prev_kv {
            match with_prev {
                Some(filled) => filled.clone(),
                None => {
                    let plain = events.iter().map(|e| Event::clone(e)).collect();
                    let filled = with_prev_kv(Arc::clone(&self.node.store), plain).await?;
                    with_prev.insert(filled).clone()
                }
            }
        } else {
            events.iter().map(|e| Event::clone(e)).collect()
        };
        let resp = WatchResponse {
            header: Some(*header),
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

    /// Sends a response of a fragmenting watch, split as [`fragments`] does.
    fn send_fragments(&mut self, resp: WatchResponse) {
        for part in fragments(resp, self.max_response_bytes) {
            self.send(part);
        }
    }

    /// The progress-notify tick: every watch that asked for notifications and saw no events
    /// since the last tick gets one, if it is synced (etcd's `progressTicker`).
    fn progress_tick(&mut self) {
        for (key, entry) in self.watches.iter_mut() {
            if entry.progress_notify {
                if entry.quiet {
                    self.hub.request_progress(*key);
                }
                entry.quiet = true;
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.node.metrics.watchers.sub(self.watches.len() as i64);
        self.node.metrics.watch_streams.dec();
    }
}

/// A session being served: what its steps wait on besides the hub.
struct Serving {
    session: Session,
    /// The client's requests.
    inbound: Streaming<WatchRequest>,
    /// The client has not closed its sending side.
    inbound_open: bool,
    /// The progress-notify tick.
    ticker: tokio::time::Interval,
    /// The member is stopping.
    shutdown: CancellationToken,
}

impl Serving {
    /// Runs steps until one has responses, and returns them; `None` once the stream is over.
    /// A step handles one of: a request (create, cancel, progress), the deliveries queued in
    /// the hub (events, a compaction cancel, progress), the progress-notify tick. A create is
    /// answered before the hub is looked at again, so a watch's `created` precedes its events.
    async fn next_batch(&mut self) -> Option<Vec<Outbound>> {
        let session = &mut self.session;
        loop {
            let step = tokio::select! {
                _ = self.shutdown.cancelled() => Err(Gone),
                req = self.inbound.message(), if self.inbound_open => match req {
                    Ok(Some(req)) => {
                        session.handle(req);
                        Ok(())
                    }
                    Ok(None) => {
                        // etcd keeps serving a stream whose client closed its sending side.
                        self.inbound_open = false;
                        Ok(())
                    }
                    Err(status) => {
                        tracing::debug!(cause = %status, "watch request stream failed");
                        Err(Gone)
                    }
                },
                delivery = session.hub.recv() => session.deliver_queued(delivery).await,
                _ = self.ticker.tick() => {
                    session.progress_tick();
                    Ok(())
                }
            };
            step.ok()?;
            if !session.pending.is_empty() {
                return Some(std::mem::take(&mut session.pending));
            }
        }
    }
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
    fn jitter_stays_within_a_tenth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(10) && d < Duration::from_secs(11));
        }
    }
}
