//! Watch workloads: `watch` (N watchers on M keys while writers put: events/s delivered and
//! put-to-event latency), `watch-latency` (the same at a steady put rate on one key) and
//! `watch-hold` (idle watchers held open, for the server's memory per watcher).
//!
//! Put values carry the wall-clock time of the put ([`crate::keys::stamped_value`]), so a
//! watcher in this same process measures put-to-event latency without clock skew.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kvstore_proto::etcdserverpb::watch_request::RequestUnion;
use kvstore_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Streaming;
use tonic_prost::ProstCodec;

use crate::cli::{Common, WatchOpts};
use crate::error::{Error, Result};
use crate::keys::{now_nanos, stamp_of, stamped_value, Keys};
use crate::kv_link::KvLink;
use crate::report::{Report, Tally};
use crate::runner::{self, Client, Plan};

/// How long to wait for missing events after the last put before reporting them missing.
const EVENT_GRACE: Duration = Duration::from_secs(20);

/// The Watch method's path.
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// What the readers use of an `etcdserverpb.WatchResponse` (same field numbers). prost skips
/// the other fields (the header; each event's key, revisions and lease) without decoding them,
/// and an event's value is a slice of the received buffer, not a copy: with 10k watchers the
/// client decodes every event 10k times, and decoding whole responses cost it ~0.85 µs of CPU
/// per event on the cores the servers use too.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchReply {
    /// The watcher was created.
    #[prost(bool, tag = "3")]
    pub created: bool,
    /// The watcher was cancelled.
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    /// Why it was cancelled.
    #[prost(string, tag = "6")]
    pub cancel_reason: String,
    /// The events.
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<EventValue>,
}

/// An `mvccpb.Event`, its key-value's value only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventValue {
    /// The key-value (`Event.kv`).
    #[prost(message, optional, tag = "2")]
    pub kv: Option<ValueOnly>,
}

/// An `mvccpb.KeyValue`, its value only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueOnly {
    /// `KeyValue.value`.
    #[prost(bytes = "bytes", tag = "5")]
    pub value: Bytes,
}

/// One open watch stream: the request side must stay alive or the server ends the stream.
pub struct WatchStream {
    /// Keeps the request stream open (and could cancel watchers).
    _requests: Requests,
    /// The responses.
    responses: Responses,
}

/// The request side of a watch stream, on a tonic channel or a raw link; held, not used.
enum Requests {
    Channel { _open: mpsc::Sender<WatchRequest> },
    Link { _open: grpc_link::Sender },
}

/// The responses of a watch stream, on a tonic channel or a raw link.
enum Responses {
    Channel(Streaming<WatchReply>),
    Link(grpc_link::Reader),
}

impl Responses {
    async fn message(&mut self) -> Result<Option<WatchReply>, tonic::Status> {
        match self {
            Responses::Channel(s) => s.message().await,
            Responses::Link(r) => r.message().await,
        }
    }
}

/// Where watch streams are opened: tonic channels, or raw links ([`crate::kv_link`]).
#[derive(Clone, Copy)]
pub enum Conns<'a> {
    /// tonic's channels.
    Channels(&'a [Channel]),
    /// Raw HTTP/2 links.
    Links(&'a [KvLink]),
}

/// Opens `watchers` watchers spread over `streams` streams (spread over the connections);
/// watcher `i` is created by `make(i)`. Returns once the server confirmed every creation.
pub async fn open(
    conns: Conns<'_>,
    streams: usize,
    watchers: usize,
    make: impl Fn(usize) -> WatchCreateRequest,
) -> Result<Vec<WatchStream>> {
    let streams = streams.clamp(1, watchers.max(1));
    let mut out = Vec::with_capacity(streams);
    for s in 0..streams {
        let mine: Vec<usize> = (s..watchers).step_by(streams).collect();
        // The creates are queued before the call: a Go gRPC server (etcd) sends the response
        // headers only with its first message, so awaiting the call first would deadlock.
        let creates: Vec<WatchRequest> = mine
            .iter()
            .map(|&i| WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(make(i))),
            })
            .collect();
        let (requests, mut responses) = match conns {
            Conns::Channels(channels) => {
                let (tx, rx) = mpsc::channel(creates.len().max(1));
                for create in creates {
                    tx.send(create).await.map_err(|_| {
                        Error::Setup("watch stream closed while creating watchers".into())
                    })?;
                }
                let mut grpc = tonic::client::Grpc::new(channels[s % channels.len()].clone());
                grpc.ready()
                    .await
                    .map_err(|e| Error::Setup(format!("watch stream not ready: {e}")))?;
                let responses = grpc
                    .streaming(
                        tonic::Request::new(ReceiverStream::new(rx)),
                        PathAndQuery::from_static(WATCH_PATH),
                        ProstCodec::<WatchRequest, WatchReply>::default(),
                    )
                    .await?
                    .into_inner();
                (
                    Requests::Channel { _open: tx },
                    Responses::Channel(responses),
                )
            }
            Conns::Links(links) => {
                let (tx, rx) = links[s % links.len()].watch(&creates).await?;
                (Requests::Link { _open: tx }, Responses::Link(rx))
            }
        };
        let mut created = 0;
        while created < mine.len() {
            let resp = responses
                .message()
                .await?
                .ok_or_else(|| Error::Setup("watch stream ended while creating watchers".into()))?;
            if resp.canceled {
                return Err(Error::Setup(format!(
                    "watch refused: {}",
                    resp.cancel_reason
                )));
            }
            created += usize::from(resp.created);
        }
        out.push(WatchStream {
            _requests: requests,
            responses,
        });
    }
    Ok(out)
}

/// Counters the stream readers share.
#[derive(Default)]
pub struct Delivery {
    /// Events received over all streams.
    pub events: AtomicU64,
    /// [`now_nanos`] of the latest event.
    pub last_event: AtomicU64,
}

/// Reads events from every stream until `stop` turns true, filing each stamped event's
/// put-to-event latency under `event`.
pub fn spawn_readers(
    streams: Vec<WatchStream>,
    delivery: Arc<Delivery>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<Tally>> {
    streams
        .into_iter()
        .map(|s| tokio::spawn(read(s, delivery.clone(), stop.clone())))
        .collect()
}

async fn read(
    mut s: WatchStream,
    delivery: Arc<Delivery>,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::default();
    // One wait for the stop signal for the whole loop: a fresh `changed()` per response
    // registered and dropped a waiter each time (~4 % of the client's CPU in the fan-out).
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        let resp = tokio::select! {
            biased;
            r = s.responses.message() => r,
            _ = &mut stopped => break,
        };
        match resp {
            Ok(Some(resp)) => {
                let now = now_nanos();
                for ev in &resp.events {
                    if let Some(stamp) = ev.kv.as_ref().and_then(|kv| stamp_of(&kv.value)) {
                        tally.record("event", Duration::from_nanos(now.saturating_sub(stamp)));
                    }
                }
                if !resp.events.is_empty() {
                    delivery
                        .events
                        .fetch_add(resp.events.len() as u64, Ordering::Relaxed);
                    delivery.last_event.fetch_max(now, Ordering::Relaxed);
                }
                if resp.canceled {
                    tally.error(format!("watch canceled: {}", resp.cancel_reason));
                }
            }
            Ok(None) => break,
            Err(status) => {
                tally.error(format!("watch: {:?}: {}", status.code(), status.message()));
                break;
            }
        }
    }
    tally
}

/// Stops the readers and merges their tallies.
pub async fn stop_readers(stop: watch::Sender<bool>, readers: Vec<JoinHandle<Tally>>) -> Tally {
    let _ = stop.send(true);
    let mut tally = Tally::default();
    for r in readers {
        if let Ok(t) = r.await {
            tally.merge(t);
        }
    }
    tally
}

/// Puts stamped values to key `n mod M`, counting successful puts per key.
struct StampedPutClient {
    kv: KvLink,
    keys: Keys,
    val_size: usize,
    puts: Arc<Vec<AtomicU64>>,
}

impl Client for StampedPutClient {
    async fn op(&mut self, n: u64) -> Result<&'static str, tonic::Status> {
        let k = n % self.keys.space;
        let req = PutRequest {
            key: self.keys.at(k),
            value: stamped_value(self.val_size),
            ..Default::default()
        };
        self.kv.put(req).await?;
        self.puts[k as usize].fetch_add(1, Ordering::Relaxed);
        Ok("put")
    }
}

/// `watch` and `watch-latency`: the watch streams and the writers' puts on `links`.
pub async fn run_watch(
    common: &Common,
    links: &[KvLink],
    opts: &WatchOpts,
    name: &str,
) -> Result<Report> {
    let space = opts.watched_keys.max(1);
    let keys = Keys::new("w", common.key_size, space, true);
    let streams = open(Conns::Links(links), opts.streams, opts.watchers, |i| {
        WatchCreateRequest {
            key: keys.at(i as u64),
            ..Default::default()
        }
    })
    .await?;
    let delivery = Arc::new(Delivery::default());
    let (stop, stop_rx) = watch::channel(false);
    let readers = spawn_readers(streams, delivery.clone(), stop_rx);

    let puts: Arc<Vec<AtomicU64>> = Arc::new((0..space).map(|_| AtomicU64::new(0)).collect());
    let clients = (0..common.clients.max(1))
        .map(|i| StampedPutClient {
            kv: links[i % links.len()].clone(),
            keys: keys.clone(),
            val_size: common.val_size,
            puts: puts.clone(),
        })
        .collect();
    let mut plan = Plan::from_common(common, name);
    plan.rate = opts.put_rate;
    let started = now_nanos();
    let outcome = runner::run(clients, plan).await;

    // Watchers per key, and the events every successful put owes them.
    let mut per_key = vec![0u64; space as usize];
    for i in 0..opts.watchers {
        per_key[i % space as usize] += 1;
    }
    let expected: u64 = puts
        .iter()
        .zip(&per_key)
        .map(|(p, w)| p.load(Ordering::Relaxed) * w)
        .sum();
    let deadline = Instant::now() + EVENT_GRACE;
    while delivery.events.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut tally = outcome.tally;
    tally.merge(stop_readers(stop, readers).await);
    let delivered = delivery.events.load(Ordering::Relaxed);
    let last = delivery.last_event.load(Ordering::Relaxed);
    let events_secs = (last.saturating_sub(started) as f64 / 1e9).max(1e-9);

    let mut report = Report::new(
        name,
        common,
        &tally,
        &["put"],
        outcome.elapsed,
        outcome.longest_stall,
    );
    report.extra.insert("watchers".into(), opts.watchers as f64);
    report
        .extra
        .insert("events_expected".into(), expected as f64);
    report
        .extra
        .insert("events_delivered".into(), delivered as f64);
    report
        .extra
        .insert("events_per_sec".into(), delivered as f64 / events_secs);
    Ok(report)
}

/// `watch-hold`: open idle watchers on distinct keys and hold them.
pub async fn run_hold(
    common: &Common,
    channels: &[Channel],
    watchers: usize,
    streams: usize,
    hold: Duration,
    ready_file: Option<&std::path::Path>,
) -> Result<Report> {
    let began = Instant::now();
    let keys = Keys::new(
        "idle/",
        common.key_size.max(16),
        watchers.max(1) as u64,
        true,
    );
    let streams = open(Conns::Channels(channels), streams, watchers, |i| {
        WatchCreateRequest {
            key: keys.at(i as u64),
            ..Default::default()
        }
    })
    .await?;
    let setup = began.elapsed();
    let delivery = Arc::new(Delivery::default());
    let (stop, stop_rx) = watch::channel(false);
    let readers = spawn_readers(streams, delivery, stop_rx);
    if let Some(path) = ready_file {
        std::fs::write(path, format!("{watchers}\n"))?;
    }
    tokio::time::sleep(hold).await;
    let tally = stop_readers(stop, readers).await;
    let mut report = Report::new("watch-hold", common, &tally, &[], setup, Duration::ZERO);
    report.extra.insert("watchers".into(), watchers as f64);
    report
        .extra
        .insert("setup_secs".into(), setup.as_secs_f64());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore_proto::etcdserverpb::{ResponseHeader, WatchResponse};
    use kvstore_proto::mvccpb::{Event, KeyValue};
    use prost::Message;

    #[test]
    fn a_reply_reads_what_a_full_watch_response_carries() {
        let event = |value: &[u8]| Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: b"/w/0001".to_vec(),
                create_revision: 2,
                mod_revision: 9,
                version: 3,
                value: value.to_vec(),
                lease: 7,
            }),
            prev_kv: Some(KeyValue {
                value: b"older".to_vec(),
                ..KeyValue::default()
            }),
        };
        let full = WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 9,
                raft_term: 4,
            }),
            watch_id: 12,
            created: true,
            canceled: true,
            compact_revision: 3,
            cancel_reason: "why".into(),
            fragment: true,
            events: vec![event(b"first"), event(b"second")],
        };
        let reply = WatchReply::decode(full.encode_to_vec().as_slice()).expect("decodes");
        assert!(reply.created && reply.canceled);
        assert_eq!(reply.cancel_reason, "why");
        let values: Vec<&[u8]> = reply
            .events
            .iter()
            .map(|e| e.kv.as_ref().map_or(&b""[..], |kv| &kv.value[..]))
            .collect();
        assert_eq!(values, [&b"first"[..], &b"second"[..]]);
    }
}
