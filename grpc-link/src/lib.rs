//! gRPC calls over a raw HTTP/2 connection, for the calls where the hops of a tonic channel
//! show: kvstore's peers (AppendEntries, and writes a follower forwards to the leader) and the
//! benchmark client's KV calls and fan-out watch streams. A unary request's HEADERS and DATA
//! frames leave in one write; unary and streaming replies are read by one [`Reader`].
//!
//! # Why not the tonic channel
//! Through tonic's [`Channel`](tonic::transport::Channel) a unary request passes the channel's
//! buffer task, hyper's dispatch task and the connection task, which writes the HEADERS frame
//! at once; hyper then hands the body to a task of its own (h2 gives a stream no send capacity
//! until its HEADERS are out), which queues the DATA frame and wakes the connection task again.
//! So every AppendEntries went out as two `writev`s from two tasks, ~0.1-0.2 ms apart on this
//! 2-core machine, and the follower woke twice before it could start its log write. Here the
//! caller's task queues HEADERS and DATA together (h2 buffers data sent before capacity is
//! granted) and the connection task writes both in one go.
//!
//! # Connection
//! One HTTP/2 connection per [`Link`], made on first use (within `connect_timeout`, Nagle off)
//! and dropped after any transport failure or timeout, so the next call reconnects. Calls are
//! multiplexed over it; the connection task runs on its own and ends with the connection.
//!
//! Errors come back as a [`tonic::Status`] with the code tonic's channel would have given
//! (`Unavailable` for a refused or broken connection), so callers map failures in one place
//! for both transports.
//!
//! The message framing (length prefix, `grpc-status`) is in `wire`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderValue, Method, Request};
use prost::Message;
use tokio::net::TcpStream;
use tonic::{Code, Status};

mod wire;

use wire::{check_grpc_status, frame, next_message};

/// Receive window of a link's connection and streams: a reply is small, but a window below
/// the largest reply would stall it.
const RECEIVE_WINDOW: u32 = 1 << 20;

/// A raw HTTP/2 link to one server; see the module docs.
pub struct Link {
    /// `host:port` to connect to.
    address: String,
    /// The URI prefix of requests (`http://host:port`).
    authority: String,
    /// Longest a TCP connect may take.
    connect_timeout: Duration,
    /// Largest reply accepted.
    max_reply_bytes: usize,
    /// The open connection, if any. Locked across a connect so that concurrent callers share
    /// one connection; otherwise held only to clone the handle.
    conn: tokio::sync::Mutex<Option<SendRequest<Bytes>>>,
    /// Set by [`Link::mark_stale`]: the next call drops the connection first.
    stale: AtomicBool,
}

impl Link {
    /// A link to the server at `url` (`http://host:port`, port 80 if none); `None` if it is not
    /// a plain `http` URL with a host.
    pub fn new(url: &str, connect_timeout: Duration, max_reply_bytes: usize) -> Option<Self> {
        let uri: http::Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let host = uri.host()?;
        let port = uri.port_u16().unwrap_or(80);
        Some(Self {
            address: format!("{host}:{port}"),
            authority: format!("http://{host}:{port}"),
            connect_timeout,
            max_reply_bytes,
            conn: tokio::sync::Mutex::new(None),
            stale: AtomicBool::new(false),
        })
    }

    /// Calls `path` (`/package.Service/Method`) with `request` and the extra `headers`,
    /// and decodes the reply. A `timeout` is sent as the gRPC deadline (the caller enforces
    /// it); without one the server sets no timer for the call.
    pub async fn unary<Req: Message, Resp: Message + Default>(
        &self,
        path: &str,
        request: &Req,
        headers: &[(&'static str, HeaderValue)],
        timeout: Option<Duration>,
    ) -> Result<Resp, Status> {
        let head = self.head(path, headers, timeout)?;
        let reply = self.exchange(head, frame(request)?).await;
        if let Err(status) = &reply {
            if status.code() == Code::Unavailable {
                self.reset().await;
            }
        }
        reply
    }

    /// Opens a streaming call of `path` (client, server or bidirectional streaming) and sends
    /// `first` on it before waiting for the reply's headers (a Go gRPC server sends those only
    /// with its first message). The returned [`Sender`] keeps the request side open.
    pub async fn stream<Req: Message>(
        &self,
        path: &str,
        first: &[Req],
    ) -> Result<(Sender, Reader), Status> {
        let head = self.head(path, &[], None)?;
        let mut sender = self.ready().await?;
        let (reply, send) = sender.send_request(head, false).map_err(broken)?;
        let mut sender = Sender { send };
        for message in first {
            sender.send(message)?;
        }
        let reader = self.reader(reply.await.map_err(broken)?)?;
        Ok((sender, reader))
    }

    /// Opens the connection now if there is none, so that the first call does not pay for it.
    pub async fn connect(&self) -> Result<(), Status> {
        self.connection().await.map(|_| ())
    }

    /// Drops the connection at once.
    async fn reset(&self) {
        self.conn.lock().await.take();
    }

    /// True if the next call will start a fresh connection.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Makes the next call start a fresh connection (for a server that stopped answering: its
    /// connection may be half-open after a network cut, and TCP would take minutes to say so).
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// A request's head: POST to `path` with gRPC's headers, the deadline if any, `headers`.
    fn head(
        &self,
        path: &str,
        headers: &[(&'static str, HeaderValue)],
        timeout: Option<Duration>,
    ) -> Result<Request<()>, Status> {
        let mut head = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| Status::internal(format!("building a request: {e}")))?;
        if let Some(timeout) = timeout {
            let deadline = format!("{}m", timeout.as_millis().min(99_999_999));
            let deadline = HeaderValue::try_from(deadline)
                .map_err(|e| Status::internal(format!("building a request: {e}")))?;
            head.headers_mut().insert("grpc-timeout", deadline);
        }
        for (name, value) in headers {
            head.headers_mut().insert(*name, value.clone());
        }
        Ok(head)
    }

    /// The connection's handle, ready for a new stream.
    async fn ready(&self) -> Result<SendRequest<Bytes>, Status> {
        match self.connection().await?.ready().await {
            Ok(ready) => Ok(ready),
            Err(_) => {
                // The connection closed since the last call (the server restarted, or went away
                // with GOAWAY): one fresh one before giving up, as tonic's channel does.
                self.reset().await;
                self.connection().await?.ready().await.map_err(broken)
            }
        }
    }

    /// Sends one request with its whole body and returns the reply's one message, after
    /// checking the HTTP and gRPC statuses.
    async fn exchange<Resp: Message + Default>(
        &self,
        head: Request<()>,
        body: Bytes,
    ) -> Result<Resp, Status> {
        let mut sender = self.ready().await?;
        let (reply, mut stream) = sender.send_request(head, false).map_err(broken)?;
        stream.send_data(body, true).map_err(broken)?;
        let mut reader = self.reader(reply.await.map_err(broken)?)?;
        let message = reader
            .message()
            .await?
            .ok_or_else(|| Status::internal("reply without a message"))?;
        // The rest of the call: its trailers carry the status.
        if reader.message::<Resp>().await?.is_some() {
            return Err(Status::internal("a unary reply with more than one message"));
        }
        Ok(message)
    }

    /// The reply side of a call whose head arrived, after checking the HTTP status and a
    /// "trailers-only" reply's gRPC status.
    fn reader(&self, reply: http::Response<h2::RecvStream>) -> Result<Reader, Status> {
        let (parts, body) = reply.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Status::unknown(format!(
                "server answered HTTP {}",
                parts.status
            )));
        }
        check_grpc_status(&parts.headers)?;
        Ok(Reader {
            body,
            buf: Bytes::new(),
            max_message_bytes: self.max_reply_bytes,
        })
    }

    /// The open connection, connecting first if there is none (or it has closed).
    async fn connection(&self) -> Result<SendRequest<Bytes>, Status> {
        let mut conn = self.conn.lock().await;
        if self.stale.swap(false, Ordering::Relaxed) {
            conn.take();
        }
        if let Some(sender) = conn.as_ref() {
            return Ok(sender.clone());
        }
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| connect_failed("tcp connect timed out".into()))?
            .map_err(|e| connect_failed(format!("tcp connect error: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(RECEIVE_WINDOW)
            .initial_connection_window_size(RECEIVE_WINDOW)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(broken)?;
        let address = self.address.clone();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(server = %address, cause = %err, "link closed");
            }
        });
        *conn = Some(sender.clone());
        Ok(sender)
    }
}

/// The request side of a streaming call ([`Link::stream`]); dropping it ends the request
/// stream (the server then ends the call).
pub struct Sender {
    send: h2::SendStream<Bytes>,
}

impl Sender {
    /// Queues `message` on the request stream (h2 buffers it until the stream may send).
    pub fn send<M: Message>(&mut self, message: &M) -> Result<(), Status> {
        self.send.send_data(frame(message)?, false).map_err(broken)
    }
}

/// The reply side of a streaming call ([`Link::stream`]): its messages, in order.
pub struct Reader {
    body: h2::RecvStream,
    /// Received bytes not yet returned as messages. A message inside one DATA frame is
    /// decoded from that frame's buffer without a copy.
    buf: Bytes,
    /// Largest message accepted.
    max_message_bytes: usize,
}

impl Reader {
    /// The next message; `None` once the server ended the call with an OK status.
    pub async fn message<M: Message + Default>(&mut self) -> Result<Option<M>, Status> {
        loop {
            if let Some(message) = next_message(&mut self.buf, self.max_message_bytes)? {
                return M::decode(message)
                    .map(Some)
                    .map_err(|e| Status::internal(format!("decoding a message: {e}")));
            }
            match self.body.data().await {
                Some(Ok(chunk)) => {
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.buf = if self.buf.is_empty() {
                        chunk
                    } else {
                        let mut joined = BytesMut::with_capacity(self.buf.len() + chunk.len());
                        joined.extend_from_slice(&self.buf);
                        joined.extend_from_slice(&chunk);
                        joined.freeze()
                    };
                }
                Some(Err(err)) => return Err(broken(err)),
                None => {
                    if let Some(trailers) = self.body.trailers().await.map_err(broken)? {
                        check_grpc_status(&trailers)?;
                    }
                    if !self.buf.is_empty() {
                        return Err(Status::internal("call ended inside a message"));
                    }
                    return Ok(None);
                }
            }
        }
    }
}

/// The server could not be connected to, so nothing was sent: the source of such a `Status`
/// (tonic's channel marks it with its `ConnectError` the same way).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectFailed(String);

/// `Unavailable` with a [`ConnectFailed`] source.
fn connect_failed(message: String) -> Status {
    let mut status = Status::unavailable(message.clone());
    status.set_source(std::sync::Arc::new(ConnectFailed(message)));
    status
}

/// A transport failure: the connection is unusable (tonic's channel says `Unavailable` too).
fn broken(err: h2::Error) -> Status {
    Status::unavailable(format!("connection: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode_message;
    use http::HeaderMap;
    use kvstore_proto::raftpb::RaftMessage;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use tokio::net::TcpListener;

    /// Answers one request of the test server: its `RaftMessage` with the data reversed, then
    /// `/` and the request's `grpc-timeout` (or `none`). The body is read without polling the
    /// connection, which works because the link sends HEADERS and DATA together.
    async fn answer(
        req: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
    ) {
        assert_eq!(req.uri().path(), "/raftpb.Raft/AppendEntries");
        assert_eq!(req.headers()["kvstore-to-member"], "2a");
        let deadline = req
            .headers()
            .get("grpc-timeout")
            .map_or(b"none".to_vec(), |v| v.as_bytes().to_vec());
        let mut body = req.into_body();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            data.extend_from_slice(&chunk.expect("chunk"));
        }
        let mut msg: RaftMessage = decode_message(&data).expect("request");
        msg.data.reverse();
        msg.data.push(b'/');
        msg.data.extend(deadline);
        let mut send = ok_headers(&mut respond);
        send.send_data(framed(&msg).into(), false).expect("data");
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        send.send_trailers(trailers).expect("trailers");
    }

    /// A gRPC server of one method on raw HTTP/2 connections. With `one_call` it closes each
    /// connection after one answer (as a restarting server would). Returns the URL and how many
    /// connections it has accepted.
    async fn test_server(one_call: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await.expect("handshake");
                    if one_call {
                        if let Some(Ok((req, respond))) = conn.accept().await {
                            answer(req, respond).await;
                        }
                        // Serve until the reply is out, then drop the connection.
                        let _ = tokio::time::timeout(Duration::from_millis(200), async {
                            while conn.accept().await.is_some() {}
                        })
                        .await;
                    } else {
                        while let Some(Ok((req, respond))) = conn.accept().await {
                            answer(req, respond).await;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    async fn call_with(link: &Link, timeout: Option<Duration>) -> Vec<u8> {
        link.unary::<_, RaftMessage>(
            "/raftpb.Raft/AppendEntries",
            &RaftMessage {
                data: b"abc".to_vec(),
            },
            &[("kvstore-to-member", HeaderValue::from_static("2a"))],
            timeout,
        )
        .await
        .expect("the call succeeds, on a fresh connection if need be")
        .data
    }

    async fn call(link: &Link) -> Vec<u8> {
        call_with(link, Some(Duration::from_secs(5))).await
    }

    #[tokio::test]
    async fn a_deadline_is_sent_only_when_given() {
        let (url, _) = test_server(false).await;
        let link = Link::new(&url, Duration::from_secs(1), 1 << 20).expect("valid URL");
        assert_eq!(
            call_with(&link, Some(Duration::from_millis(1500))).await,
            b"cba/1500m"
        );
        assert_eq!(call_with(&link, None).await, b"cba/none");
    }

    #[tokio::test]
    async fn a_link_reuses_its_connection_until_marked_stale() {
        let (url, accepted) = test_server(false).await;
        let link = Link::new(&url, Duration::from_secs(1), 1 << 20).expect("valid URL");
        link.connect().await.expect("connects");
        // The server counts the connection when its accept loop gets to it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while accepted.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "connected before the first call"
        );
        for _ in 0..3 {
            assert_eq!(call(&link).await, b"cba/5000m");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for all calls"
        );
        link.mark_stale();
        assert_eq!(call(&link).await, b"cba/5000m");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a fresh one after mark_stale"
        );
    }

    #[tokio::test]
    async fn a_link_calls_and_reconnects_after_the_server_closed_its_connection() {
        let (url, accepted) = test_server(true).await;
        let link = Link::new(&url, Duration::from_secs(1), 1 << 20).expect("valid URL");
        for round in 1..=3 {
            assert_eq!(call(&link).await, b"cba/5000m");
            assert_eq!(accepted.load(Ordering::SeqCst), round);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    #[tokio::test]
    async fn a_link_to_nobody_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let link = Link::new(&url, Duration::from_secs(1), 1 << 20).expect("valid URL");
        let err = link
            .unary::<_, RaftMessage>(
                "/raftpb.Raft/AppendEntries",
                &RaftMessage::default(),
                &[],
                None,
            )
            .await
            .expect_err("nobody listens");
        assert_eq!(err.code(), Code::Unavailable);
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.is::<ConnectFailed>(), "marked as never sent");
        assert!(Link::new("https://x:1", Duration::from_secs(1), 1).is_none());
        assert!(Link::new("unix:///x", Duration::from_secs(1), 1).is_none());
    }

    /// Sends a gRPC reply's headers (HTTP 200, `application/grpc`).
    fn ok_headers(respond: &mut h2::server::SendResponse<Bytes>) -> h2::SendStream<Bytes> {
        let reply = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
            .expect("reply");
        respond.send_response(reply, false).expect("headers")
    }

    /// `message` framed as gRPC does.
    fn framed(message: &RaftMessage) -> Vec<u8> {
        let mut out = vec![0];
        out.extend((message.encoded_len() as u32).to_be_bytes());
        out.extend(message.encode_to_vec());
        out
    }

    /// A streaming call of the test server: reads the request stream's first message (`n` as
    /// its data), answers `n` messages `0`, `1`, ... — the first two in one DATA frame, the
    /// third split over two — then ends the call with OK.
    async fn stream_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut conn = h2::server::handshake(tcp).await.expect("handshake");
            let (req, mut respond) = conn.accept().await.expect("a call").expect("ok");
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            assert_eq!(req.uri().path(), "/raftpb.Raft/Stream");
            let mut body = req.into_body();
            let first = body.data().await.expect("a message").expect("data");
            let n: RaftMessage = decode_message(&first).expect("request");
            let n = n.data[0];
            let mut send = ok_headers(&mut respond);
            let msgs: Vec<Vec<u8>> = (0..n)
                .map(|i| framed(&RaftMessage { data: vec![i; 3] }))
                .collect();
            let mut two = msgs[0].clone();
            two.extend(&msgs[1]);
            send.send_data(two.into(), false).expect("data");
            let (a, b) = msgs[2].split_at(4);
            send.send_data(a.to_vec().into(), false).expect("data");
            tokio::time::sleep(Duration::from_millis(20)).await;
            send.send_data(b.to_vec().into(), false).expect("data");
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            send.send_trailers(trailers).expect("trailers");
            // Hold the request side until the client is done.
            while body.data().await.is_some() {}
        });
        url
    }

    #[tokio::test]
    async fn a_stream_returns_every_message_however_the_frames_cut_them() {
        let url = stream_server().await;
        let link = Link::new(&url, Duration::from_secs(1), 1 << 20).expect("valid URL");
        let (_sender, mut reader) = link
            .stream("/raftpb.Raft/Stream", &[RaftMessage { data: vec![3] }])
            .await
            .expect("opens");
        for i in 0..3u8 {
            let m: RaftMessage = reader.message().await.expect("ok").expect("a message");
            assert_eq!(m.data, vec![i; 3]);
        }
        assert!(
            reader.message::<RaftMessage>().await.expect("ok").is_none(),
            "then the end"
        );
    }
}
