//! The client side of the peer service: how this member's Raft reaches the others.
//!
//! - [`Peers`] holds one lazily connected gRPC [`Channel`] per peer, shared by everything that
//!   talks to that peer: the replication stream, elections, read-index heartbeats, forwarded
//!   writes and read indexes ([`RaftProposer`](super::proposer::RaftProposer)). A channel
//!   connects on first use and reconnects by itself after the connection breaks. AppendEntries
//!   and forwarded writes go over a second connection per peer, a raw HTTP/2 [`PeerLink`]
//!   (the `grpc-link` crate), which writes a request in one go where the channel needs two.
//! - [`PeerNetwork`] is openraft's [`RaftNetworkFactory`]; the [`PeerConnection`]s it hands
//!   out are cheap (a cached channel and the target's address) because openraft asks for one
//!   per election and per read index, not only per replication stream.
//!
//! # Wire
//! AppendEntries, Vote and InstallSnapshot carry openraft's request, postcard-encoded, in
//! `RaftMessage.data`; the reply carries `Result<response, RaftError>` the same way. A refusal
//! by the remote Raft is therefore data ([`RemoteError`]), and a gRPC error always means the
//! transport or the peer's server failed. Snapshots go chunk by chunk (openraft's default
//! `full_snapshot` reads one `snapshot_max_chunk_size` chunk of the snapshot file at a time and
//! sends it with [`RaftNetwork::install_snapshot`]), so neither side holds a whole snapshot.
//!
//! # Errors, timeouts and back-off
//! openraft reacts to the kind of failure, so the kind is chosen with care:
//! - [`Unreachable`]: the peer could not be reached (connection refused, no route, bad URL, or
//!   the peer is inside its back-off window). openraft's replication then sleeps for
//!   [`RaftNetwork::backoff`] before trying again.
//! - [`Timeout`]: the RPC did not complete within openraft's hard TTL ([`RPCOption`]), which is
//!   also sent as the gRPC deadline so the peer stops working on it too.
//! - [`NetworkError`]: anything else on the way (a reset stream, an undecodable reply).
//! - [`RemoteError`]: the peer's Raft answered with an error.
//! - [`PayloadTooLarge`]: an append of several entries would exceed [`MAX_APPEND_BYTES`];
//!   openraft retries at once with as many as fit.
//!
//! Each peer also keeps its own health: after an attempt that could not reach it (or after
//! several timeouts in a row) it refuses further attempts as [`Unreachable`] until an
//! exponentially growing back-off expires ([`PeerOptions::backoff_min`] doubling up to
//! [`PeerOptions::backoff_max`]); any success ends it. Attempts that fail together (an
//! election and a heartbeat admitted at once) count as one failure. This covers what
//! openraft's back-off does not: elections and read-index heartbeats (a new client each time)
//! and timeouts (a black-holed peer), so a dead peer costs one attempt per back-off interval and
//! one log line when it goes down and one when it comes back, not a line per heartbeat.
//! openraft's replication back-off ([`RaftNetwork::backoff`]) waits out that same window
//! instead of running a second schedule, so a peer that comes back gets its appends as soon as
//! its window ends.

// `RPCError` is openraft's error, required by its traits; boxing it in the helpers only to
// unbox it at the trait boundary would buy nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use kvstore_proto::raftpb::raft_client::RaftClient;
use kvstore_proto::raftpb::RaftMessage;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::AnyError;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use grpc_link::Link as PeerLink;

use super::codec;
use super::types::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    MemberNode, NodeId, TypeConfig, VoteRequest, VoteResponse,
};

/// Largest peer message, either way: comfortably above a snapshot chunk (openraft's default
/// `snapshot_max_chunk_size` is 3 MiB) and a single entry of batched writes (appends of several
/// entries are split at [`MAX_APPEND_BYTES`]); both ends of the peer service use this limit.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;

/// An RPC error of the Raft network, with the remote API error `E`.
type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, MemberNode, RaftError<NodeId, E>>;

/// Most bytes of entries one AppendEntries carries, as etcd's `MaxSizePerMsg`. A larger one
/// is split ([`PayloadTooLarge`] with a proportional entries hint; a single larger entry goes
/// alone). openraft sends up to `max_payload_entries` (300) entries per append and gives it one
/// heartbeat interval (100 ms): entries of batched writes are up to
/// [`MAX_BATCH_BYTES`](super::batcher::MAX_BATCH_BYTES) each, so a run of them to a follower
/// catching up was tens of MB that timed out again and again (and so was a new leader's first
/// probe, before openraft patch 0002).
pub const MAX_APPEND_BYTES: usize = 1 << 20;

/// The number of entries to send instead of `entries`, whose request encodes to `bytes`, when
/// it is over [`MAX_APPEND_BYTES`]; `None` when it may go as it is.
fn entries_hint(entries: u64, bytes: usize) -> Option<u64> {
    if bytes <= MAX_APPEND_BYTES || entries <= 1 {
        return None;
    }
    let fit = (entries as u128 * MAX_APPEND_BYTES as u128 / bytes as u128) as u64;
    Some(fit.clamp(1, entries - 1))
}

/// Metadata key: the member ID a peer request is meant for (hex).
pub const TO_MEMBER_HEADER: &str = "kvstore-to-member";

/// The gRPC path of the peer service's AppendEntries (`raftpb.Raft`).
const APPEND_ENTRIES_PATH: &str = "/raftpb.Raft/AppendEntries";
/// The gRPC path of the peer service's Forward.
pub const FORWARD_PATH: &str = "/raftpb.Raft/Forward";

/// How this member connects to its peers.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// Longest a TCP connect may take; a black-holed peer fails after this, not never.
    pub connect_timeout: Duration,
    /// First back-off after a peer failed, doubled on each further failure.
    pub backoff_min: Duration,
    /// Longest back-off: a peer that comes back is noticed within this.
    pub backoff_max: Duration,
    /// HTTP/2 keep-alive ping interval, so a connection to a vanished peer is noticed while
    /// idle instead of on the next RPC.
    pub keepalive_interval: Duration,
    /// How long a keep-alive ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(3),
        }
    }
}

/// The connections of this member to its peers, one per peer, shared by the Raft network and
/// the proposer. Cheap to clone behind an `Arc`.
pub struct Peers {
    /// This member (the source of every RPC).
    id: NodeId,
    /// Connection settings.
    options: PeerOptions,
    /// One entry per peer ever contacted, replaced when its URL changes.
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
}

impl Peers {
    /// The (initially empty) connections of member `id`.
    pub fn new(id: NodeId, options: PeerOptions) -> Arc<Self> {
        Arc::new(Self {
            id,
            options,
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// This member's ID.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The connection to `target` at the first of `node`'s peer URLs, created (unconnected) on
    /// first use. Must be called within a Tokio runtime.
    pub fn peer(&self, target: NodeId, node: &MemberNode) -> Arc<Peer> {
        let url = node.peer_urls.first().map(String::as_str).unwrap_or("");
        let mut peers = self.peers.lock();
        if let Some(peer) = peers.get(&target) {
            if peer.url == url {
                return Arc::clone(peer);
            }
        }
        let peer = Arc::new(Peer::new(target, url, &self.options));
        peers.insert(target, Arc::clone(&peer));
        peer
    }

    /// Forgets `target` (removed from the cluster); its channel closes once unused.
    pub fn remove(&self, target: NodeId) {
        self.peers.lock().remove(&target);
    }
}

/// One peer: its channel and whether it is reachable.
pub struct Peer {
    /// Its member ID.
    id: NodeId,
    /// The URL the channel connects to.
    url: String,
    /// The lazily connected channel; `Err` with the reason when the URL is unusable.
    channel: Result<Channel, String>,
    /// This peer's member ID in hex, the value of [`TO_MEMBER_HEADER`] on every request to it.
    to_member: HeaderValue,
    /// The raw HTTP/2 link that carries AppendEntries (the `grpc-link` crate); `None` when the
    /// URL is unusable.
    link: Option<PeerLink>,
    /// Back-off bounds, from [`PeerOptions`].
    backoff: (Duration, Duration),
    /// Recent failures; locked only briefly, never across an await.
    health: Mutex<Health>,
}

/// Consecutive timeouts after which a peer is treated as unreachable. A slow peer (a long
/// fsync) times out now and then between successes and is never backed off; a black-holed one
/// times out every time.
const TIMEOUTS_BEFORE_BACKOFF: u32 = 3;

/// What the last attempts to reach a peer did.
#[derive(Debug, Default)]
struct Health {
    /// Failed attempts (unreachable or timed out) since the last success.
    failures: u32,
    /// Attempts before this instant are refused without touching the network.
    retry_at: Option<Instant>,
    /// Whether the peer was reported unreachable (logged once per outage).
    down: bool,
}

impl Peer {
    fn new(id: NodeId, url: &str, options: &PeerOptions) -> Self {
        let channel = Endpoint::from_shared(url.to_owned())
            .map(|endpoint| {
                endpoint
                    .connect_timeout(options.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(options.keepalive_interval)
                    .keep_alive_timeout(options.keepalive_timeout)
                    .keep_alive_while_idle(true)
                    .http2_adaptive_window(true)
                    .connect_lazy()
            })
            .map_err(|e| format!("invalid peer URL {url:?}: {e}"));
        if let Err(cause) = &channel {
            tracing::error!(peer = %id, %cause, "peer cannot be reached");
        }
        let link = PeerLink::new(url, options.connect_timeout, MAX_PEER_MESSAGE_BYTES);
        let to_member = HeaderValue::from_str(&format!("{id:x}"))
            .expect("invariant: hex digits are a valid header value");
        Self {
            id,
            to_member,
            url: url.to_owned(),
            channel,
            link,
            backoff: (options.backoff_min, options.backoff_max),
            health: Mutex::new(Health::default()),
        }
    }

    /// Stamps a request with the member it is meant for, so that a process with another
    /// member ID at this address refuses it; see
    /// [`crate::server::peer::PeerService::with_identity`]. Member IDs derive from the
    /// cluster token, so this also catches a member started with the wrong
    /// `--initial-cluster-token`.
    pub fn stamp<T>(&self, request: &mut tonic::Request<T>) {
        if let Ok(to) = tonic::metadata::MetadataValue::try_from(self.to_member.as_bytes()) {
            request.metadata_mut().insert(TO_MEMBER_HEADER, to);
        }
    }

    /// Calls a method of the peer service over the peer's [`PeerLink`] (AppendEntries and
    /// forwarded writes: the calls on the write path).
    pub async fn link_call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        path: &str,
        message: &Req,
        ttl: Duration,
    ) -> Result<Resp, tonic::Status> {
        let link = self.link.as_ref().ok_or_else(|| {
            tonic::Status::unavailable(format!("invalid peer URL {:?}", self.url))
        })?;
        let to = self.to_member.clone();
        link.unary(path, message, &[(TO_MEMBER_HEADER, to)], Some(ttl))
            .await
    }

    /// The peer's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A gRPC client of the peer service on this peer, if it may be tried now (see
    /// [`Peer::admit`]).
    pub fn client(&self) -> Result<RaftClient<Channel>, Unreachable> {
        let channel = self
            .channel
            .as_ref()
            .map_err(|cause| Unreachable::from(AnyError::error(cause)))?;
        self.admit()?;
        Ok(RaftClient::new(channel.clone())
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }

    /// Whether the peer may be tried now: not while its back-off after a failure lasts (then
    /// [`Unreachable`], without touching the network).
    pub fn admit(&self) -> Result<(), Unreachable> {
        match self.retry_in() {
            Some(left) => Err(Unreachable::from(AnyError::error(format!(
                "peer {} at {} is unreachable; next attempt in {left:?}",
                self.id, self.url
            )))),
            None => Ok(()),
        }
    }

    /// Records that an RPC got through (whatever the peer answered).
    pub fn succeeded(&self) {
        let mut health = self.health.lock();
        if health.down {
            tracing::info!(peer = %self.id, url = %self.url, failures = health.failures, "peer reachable again");
        }
        *health = Health::default();
    }

    /// Records an attempt that could not reach the peer, and starts (or lengthens) the
    /// back-off.
    pub fn failed(&self, cause: &dyn std::fmt::Display) {
        self.record_failure(cause, true);
    }

    /// Records an attempt that timed out; backs off once they keep timing out.
    fn timed_out(&self) {
        self.record_failure(&"timed out", false);
    }

    fn record_failure(&self, cause: &dyn std::fmt::Display, unreachable: bool) {
        let mut health = self.health.lock();
        if health.retry_at.is_some_and(|at| Instant::now() < at) {
            // An attempt admitted before the running window began (elections and heartbeats
            // try a peer concurrently): the same outage, already counted. Counting each would
            // double the window per concurrent attempt, not per failed try.
            return;
        }
        health.failures = health.failures.saturating_add(1);
        if !unreachable && health.failures < TIMEOUTS_BEFORE_BACKOFF {
            return;
        }
        let delay = backoff_delay(self.backoff.0, self.backoff.1, health.failures);
        health.retry_at = Some(Instant::now() + delay);
        // A peer deemed unreachable gets a fresh link when it is tried again: its connection
        // may be one a cut network left half-open. (One slow reply is no reason to drop it.)
        if let Some(link) = &self.link {
            link.mark_stale();
        }
        if !health.down {
            health.down = true;
            tracing::warn!(peer = %self.id, url = %self.url, %cause, "peer unreachable; backing off");
        } else {
            tracing::debug!(peer = %self.id, failures = health.failures, ?delay, %cause, "peer still unreachable");
        }
    }

    /// How much of the peer's back-off window is left, if one is running.
    fn retry_in(&self) -> Option<Duration> {
        let retry_at = self.health.lock().retry_at?;
        retry_at
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }

    /// Starts tracking one attempt that may be cancelled by openraft's own timeout.
    fn attempt(&self, ttl: Duration) -> Attempt<'_> {
        Attempt {
            peer: self,
            started: Instant::now(),
            ttl,
            finished: false,
        }
    }
}

/// One RPC in flight. openraft drops the future of an RPC that outlives its hard TTL; if that
/// happens, dropping this records a timeout, so a black-holed peer backs off like a dead one.
struct Attempt<'a> {
    peer: &'a Peer,
    started: Instant,
    ttl: Duration,
    finished: bool,
}

impl Attempt<'_> {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        // A future dropped well before its deadline was abandoned (a replication stream closed
        // on a leader change), which says nothing about the peer.
        if !self.finished && self.started.elapsed() >= self.ttl.mul_f32(0.9) {
            self.peer.timed_out();
        }
    }
}

/// The `failures`-th back-off: `min` doubled per earlier failure, at most `max`.
fn backoff_delay(min: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    min.saturating_mul(1 << doublings).min(max)
}

/// openraft's replication back-off for one peer: wait until the peer's own back-off window
/// ends, then try. Unreachable replies inside the window cost no network, so a schedule of
/// openraft's own would only add to the peer's: two doubling schedules, each stretched by the
/// other's refusals, left a member that started 3 s late without appends for 3 s more. Without
/// a window (the peer's URL is unusable) it falls back to doubling from
/// [`PeerOptions::backoff_min`].
struct PeerBackoff {
    peer: Arc<Peer>,
    fallback: ExponentialBackoff,
}

/// Added to the rest of a window, so the retry lands after it ends, not just before.
const WINDOW_SLACK: Duration = Duration::from_millis(1);

impl Iterator for PeerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        match self.peer.retry_in() {
            Some(left) => Some(left + WINDOW_SLACK),
            None => self.fallback.next(),
        }
    }
}

/// An endless exponential back-off.
struct ExponentialBackoff {
    next: Duration,
    max: Duration,
}

impl ExponentialBackoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self { next: min, max }
    }
}

impl Iterator for ExponentialBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        Some(current)
    }
}

/// openraft's network: hands out a [`PeerConnection`] per target over shared [`Peers`].
#[derive(Clone)]
pub struct PeerNetwork {
    /// The connections, shared with the proposer.
    peers: Arc<Peers>,
}

impl PeerNetwork {
    /// A network over `peers`.
    pub fn new(peers: Arc<Peers>) -> Self {
        Self { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerConnection {
        PeerConnection {
            source: self.peers.id,
            target,
            node: node.clone(),
            peer: self.peers.peer(target, node),
        }
    }
}

/// The Raft RPCs of one target, as openraft calls them.
pub struct PeerConnection {
    /// This member.
    source: NodeId,
    /// The peer's member ID.
    target: NodeId,
    /// The peer as the membership knows it (reported in remote errors).
    node: MemberNode,
    /// The shared connection to it.
    peer: Arc<Peer>,
}

/// Which Raft RPC a call is.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl From<Rpc> for RPCTypes {
    fn from(rpc: Rpc) -> Self {
        match rpc {
            Rpc::AppendEntries => RPCTypes::AppendEntries,
            Rpc::Vote => RPCTypes::Vote,
            Rpc::InstallSnapshot => RPCTypes::InstallSnapshot,
        }
    }
}

impl PeerConnection {
    /// Sends one encoded Raft request and decodes the peer's `Result<Resp, RaftError<E>>`.
    async fn call<Resp, E>(
        &self,
        rpc: Rpc,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self.peer.client()?;
        let ttl = option.hard_ttl();
        let mut request = tonic::Request::new(RaftMessage { data });
        request.set_timeout(ttl);
        self.peer.stamp(&mut request);
        let attempt = self.peer.attempt(ttl);
        let sent = async {
            match rpc {
                Rpc::AppendEntries => {
                    let message = request.into_inner();
                    self.peer
                        .link_call(APPEND_ENTRIES_PATH, &message, ttl)
                        .await
                }
                Rpc::Vote => client.vote(request).await.map(tonic::Response::into_inner),
                Rpc::InstallSnapshot => client
                    .install_snapshot(request)
                    .await
                    .map(tonic::Response::into_inner),
            }
        };
        // The gRPC deadline only starts once connected; this one covers connecting too.
        let result = tokio::time::timeout(ttl, sent).await;
        attempt.finish();
        let reply = match result {
            Ok(Ok(reply)) => reply,
            Ok(Err(status)) => return Err(self.transport_error(rpc, ttl, status)),
            Err(_) => {
                self.peer.timed_out();
                return Err(self.timeout(rpc, ttl));
            }
        };
        self.peer.succeeded();
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    /// The openraft error kind of a failed gRPC call.
    fn transport_error<E: std::error::Error>(
        &self,
        rpc: Rpc,
        ttl: Duration,
        status: tonic::Status,
    ) -> RpcError<E> {
        match status.code() {
            // Connection refused or reset, or the peer's server is shutting down.
            Code::Unavailable => {
                self.peer.failed(&status.message());
                RPCError::Unreachable(Unreachable::new(&status))
            }
            Code::DeadlineExceeded | Code::Cancelled => {
                self.peer.timed_out();
                self.timeout(rpc, ttl)
            }
            _ => {
                tracing::debug!(peer = %self.target, ?rpc, %status, "peer RPC failed");
                RPCError::Network(NetworkError::new(&status))
            }
        }
    }

    fn timeout<E: std::error::Error>(&self, rpc: Rpc, ttl: Duration) -> RpcError<E> {
        RPCError::Timeout(Timeout {
            action: rpc.into(),
            id: self.source,
            target: self.target,
            timeout: ttl,
        })
    }
}

/// Encodes an outgoing Raft request into a buffer with room for `capacity` bytes; failing here
/// is a bug, reported as a network error.
fn encode<T: serde::Serialize, E: std::error::Error>(
    rpc: &T,
    capacity: usize,
) -> Result<Vec<u8>, RpcError<E>> {
    codec::encode_sized(rpc, capacity).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RpcError> {
        let entries = rpc.entries.len() as u64;
        let size = 128
            + rpc
                .entries
                .iter()
                .map(codec::encoded_size_hint)
                .sum::<usize>();
        // Judged by the size estimate, before encoding: an oversized run of entries can be
        // hundreds of MB.
        if let Some(hint) = entries_hint(entries, size) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        let data = encode(&rpc, size)?;
        self.call(Rpc::AppendEntries, data, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RpcError<InstallSnapshotError>> {
        let data = encode(&rpc, 128 + rpc.data.len())?;
        self.call(Rpc::InstallSnapshot, data, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RpcError> {
        let data = encode(&rpc, 0)?;
        self.call(Rpc::Vote, data, &option).await
    }

    fn backoff(&self) -> Backoff {
        let (min, max) = self.peer.backoff;
        Backoff::new(PeerBackoff {
            peer: Arc::clone(&self.peer),
            fallback: ExponentialBackoff::new(min, max),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let min = Duration::from_millis(50);
        let max = Duration::from_secs(2);
        let delays: Vec<u64> = (1..=8)
            .map(|n| backoff_delay(min, max, n).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![50, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff_delay(min, max, u32::MAX), max);
        let iter: Vec<u64> = ExponentialBackoff::new(min, max)
            .take(7)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(iter, vec![50, 100, 200, 400, 800, 1600, 2000]);
    }

    #[tokio::test]
    async fn a_failed_peer_is_refused_until_its_backoff_ends() {
        let options = PeerOptions {
            backoff_min: Duration::from_millis(40),
            ..PeerOptions::default()
        };
        let peer = Peer::new(2, "http://127.0.0.1:1", &options);
        assert!(peer.client().is_ok());
        let link = peer.link.as_ref().expect("a link");
        assert!(!link.is_stale());
        peer.failed(&"connection refused");
        assert!(peer.client().is_err(), "inside the back-off window");
        assert!(link.is_stale(), "its next call starts a fresh connection");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(peer.client().is_ok(), "the window is over");
        peer.failed(&"connection refused");
        peer.succeeded();
        assert!(peer.client().is_ok(), "a success ends the back-off");
    }

    #[test]
    fn appends_over_the_byte_budget_are_split_in_proportion() {
        assert_eq!(entries_hint(300, MAX_APPEND_BYTES), None);
        assert_eq!(
            entries_hint(1, 50 * MAX_APPEND_BYTES),
            None,
            "one entry goes alone"
        );
        assert_eq!(entries_hint(300, 3 * MAX_APPEND_BYTES), Some(100));
        assert_eq!(entries_hint(300, 1000 * MAX_APPEND_BYTES), Some(1));
        assert_eq!(entries_hint(2, MAX_APPEND_BYTES + 1), Some(1));
        // Never the same count again, so openraft's retry makes progress.
        assert_eq!(entries_hint(300, MAX_APPEND_BYTES + 1), Some(299));
    }

    #[tokio::test]
    async fn concurrent_failures_count_once() {
        let peer = Peer::new(2, "http://127.0.0.1:1", &PeerOptions::default());
        // Three attempts were admitted together; all three fail.
        for _ in 0..3 {
            peer.failed(&"connection refused");
        }
        assert_eq!(peer.health.lock().failures, 1, "one outage, one failure");
        // The window ends; the next try fails too and doubles it.
        peer.health.lock().retry_at = Some(Instant::now() - Duration::from_millis(1));
        peer.failed(&"connection refused");
        assert_eq!(peer.health.lock().failures, 2);
    }

    #[tokio::test]
    async fn replication_waits_out_the_peer_window_and_no_longer() {
        let options = PeerOptions {
            backoff_min: Duration::from_millis(40),
            ..PeerOptions::default()
        };
        let peer = Arc::new(Peer::new(2, "http://127.0.0.1:1", &options));
        let mut backoff = PeerBackoff {
            peer: Arc::clone(&peer),
            fallback: ExponentialBackoff::new(options.backoff_min, options.backoff_max),
        };
        // However many refusals openraft met before, it waits for what is left of the window.
        for left_ms in [700, 1500, 30] {
            let left = Duration::from_millis(left_ms);
            peer.health.lock().retry_at = Some(Instant::now() + left);
            let wait = backoff.next().expect("endless");
            assert!(wait <= left + WINDOW_SLACK, "{wait:?} for {left:?}");
            assert!(wait > left.mul_f32(0.5), "{wait:?} for {left:?}");
        }
        // No window (an unusable URL never opens one): doubling on its own.
        peer.health.lock().retry_at = None;
        let alone: Vec<u64> = backoff.take(3).map(|d| d.as_millis() as u64).collect();
        assert_eq!(alone, vec![40, 80, 160]);
    }

    #[tokio::test]
    async fn a_peer_backs_off_only_after_repeated_timeouts() {
        let peer = Peer::new(2, "http://127.0.0.1:1", &PeerOptions::default());
        for _ in 1..TIMEOUTS_BEFORE_BACKOFF {
            peer.timed_out();
            assert!(peer.client().is_ok(), "a slow peer is not backed off");
        }
        peer.timed_out();
        assert!(peer.client().is_err(), "a peer that keeps timing out is");
        peer.succeeded();
        peer.timed_out();
        assert!(peer.client().is_ok(), "a success starts the count again");
    }

    #[tokio::test]
    async fn an_unusable_url_is_unreachable() {
        let peer = Peer::new(2, "", &PeerOptions::default());
        assert!(peer.client().is_err());
    }

    #[tokio::test]
    async fn peers_reuse_a_channel_until_the_url_changes() {
        let peers = Peers::new(1, PeerOptions::default());
        let node = |url: &str| MemberNode {
            name: "m2".into(),
            peer_urls: vec![url.into()],
            client_urls: vec![],
        };
        let a = peers.peer(2, &node("http://127.0.0.1:2380"));
        let b = peers.peer(2, &node("http://127.0.0.1:2380"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = peers.peer(2, &node("http://127.0.0.1:2381"));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.url(), "http://127.0.0.1:2381");
    }
}
