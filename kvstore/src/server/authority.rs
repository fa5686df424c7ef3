//! Repairs the HTTP/2 `:authority` that old etcd clients send, before the HTTP/2 server sees it.
//!
//! etcd 3.4's client (grpc-go 1.26, used by `etcdctl endpoint status|defrag|move-leader` and by
//! `--cluster`) dials a member "directly" with the full endpoint URL as the `:authority`
//! pseudo-header: `http://127.0.0.1:2379`. That is not a valid authority; etcd's Go server
//! ignores it, but our HTTP/2 stack (h2) rejects the request with PROTOCOL_ERROR and offers no
//! way to relax the check. So every client connection passes through [`AuthorityFix`]:
//!
//! - a connection that does not start with the HTTP/2 preface (HTTP/1.1 `/metrics`, `/health`)
//!   passes through untouched;
//! - on an HTTP/2 connection every frame passes through byte for byte, except header blocks
//!   (HEADERS and CONTINUATION frames, client to server): each block is decoded (HPACK, with the
//!   client's dynamic table tracked here), a `:authority` of the form `scheme://host:port` loses
//!   its scheme, and the block is re-encoded as literals that never touch the server's dynamic
//!   table — so the server's HPACK state can never disagree with the client's.
//!
//! The server to client direction is not touched at all.
//!
//! A client sends the same `:authority` on every request of a connection (it is the target the
//! connection was made for), so a connection whose first header block needs no repair — every
//! client but those old grpc-go ones — is passed through untouched from then on: decoding and
//! re-encoding every header block cost the leader about a quarter of its CPU under a put load.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types and flags we look at (RFC 9113 §6).
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Frames we emit are never larger than the smallest SETTINGS_MAX_FRAME_SIZE a server may use.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is refused (a client gone wrong), so memory stays bounded.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// What the byte stream from the client is, as far as we have seen.
enum Phase {
    /// Not enough bytes yet to tell HTTP/2 from HTTP/1.
    Start,
    /// HTTP/2: parsing frames.
    Frames,
    /// Not HTTP/2: everything passes through.
    Passthrough,
}

/// A header block being collected across HEADERS and CONTINUATION frames.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// A client connection whose incoming header blocks get their `:authority` repaired.
pub struct AuthorityFix<S> {
    /// The connection.
    inner: S,
    phase: Phase,
    /// Bytes read from the client, not yet processed.
    input: Vec<u8>,
    /// Bytes ready for the server.
    output: Vec<u8>,
    /// How much of `output` the server has already read.
    output_pos: usize,
    /// The client's HPACK state.
    decoder: Decoder<'static>,
    /// A header block still waiting for its CONTINUATION frames.
    pending: Option<PendingBlock>,
    /// Whether a header block was rewritten: from then on every block must be (the server's
    /// HPACK table no longer follows the client's), else the first clean block ends the work.
    rewriting: bool,
    /// The client closed its side.
    eof: bool,
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted client connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            phase: Phase::Start,
            input: Vec::new(),
            output: Vec::new(),
            output_pos: 0,
            decoder: Decoder::new(),
            pending: None,
            rewriting: false,
            eof: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves every complete unit of `input` to `output`, rewriting header blocks.
    fn process(&mut self) -> io::Result<()> {
        if let Phase::Start = self.phase {
            let n = self.input.len().min(PREFACE.len());
            if self.input[..n] != PREFACE[..n] {
                self.phase = Phase::Passthrough;
            } else if n == PREFACE.len() {
                self.output.extend_from_slice(PREFACE);
                self.input.drain(..PREFACE.len());
                self.phase = Phase::Frames;
            } else {
                return Ok(());
            }
        }
        if let Phase::Passthrough = self.phase {
            self.output.append(&mut self.input);
            return Ok(());
        }
        let mut at = 0;
        while self.input.len() - at >= 9 {
            let head = &self.input[at..at + 9];
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            if self.input.len() - at < 9 + len {
                break;
            }
            let kind = head[3];
            let flags = head[4];
            let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let payload_range = at + 9..at + 9 + len;
            match kind {
                HEADERS => {
                    let payload = self.input[payload_range].to_vec();
                    self.start_block(stream_id, flags, &payload)?;
                }
                CONTINUATION if self.pending.is_some() => {
                    let payload = self.input[payload_range].to_vec();
                    self.continue_block(flags, &payload)?;
                }
                _ => self.output.extend_from_slice(&self.input[at..at + 9 + len]),
            }
            at += 9 + len;
            if let Phase::Passthrough = self.phase {
                self.output.extend_from_slice(&self.input[at..]);
                self.input.clear();
                return Ok(());
            }
        }
        self.input.drain(..at);
        Ok(())
    }

    fn start_block(&mut self, stream_id: u32, flags: u8, payload: &[u8]) -> io::Result<()> {
        let mut body = payload;
        let mut pad = 0;
        if flags & PADDED != 0 {
            let (&p, rest) = body
                .split_first()
                .ok_or_else(|| malformed("padded HEADERS"))?;
            pad = usize::from(p);
            body = rest;
        }
        let mut priority = None;
        if flags & PRIORITY != 0 {
            if body.len() < 5 {
                return Err(malformed("HEADERS priority"));
            }
            let mut p = [0u8; 5];
            p.copy_from_slice(&body[..5]);
            priority = Some(p);
            body = &body[5..];
        }
        if pad > body.len() {
            return Err(malformed("HEADERS padding"));
        }
        let fragment = body[..body.len() - pad].to_vec();
        self.pending = Some(PendingBlock {
            stream_id,
            end_stream: flags & END_STREAM != 0,
            priority,
            fragment,
        });
        if flags & END_HEADERS != 0 {
            self.finish_block()?;
        }
        Ok(())
    }

    fn continue_block(&mut self, flags: u8, payload: &[u8]) -> io::Result<()> {
        if let Some(block) = self.pending.as_mut() {
            if block.fragment.len() + payload.len() > MAX_HEADER_BLOCK {
                return Err(malformed("header block too large"));
            }
            block.fragment.extend_from_slice(payload);
        }
        if flags & END_HEADERS != 0 {
            self.finish_block()?;
        }
        Ok(())
    }

    /// Decodes the collected block, repairs it, and emits it as HEADERS (+ CONTINUATION). The
    /// first block of a connection that needs no repair goes out as it came, and the
    /// connection passes through from then on.
    fn finish_block(&mut self) -> io::Result<()> {
        let Some(block) = self.pending.take() else {
            return Ok(());
        };
        let headers = self
            .decoder
            .decode(&block.fragment)
            .map_err(|e| malformed(&format!("HPACK: {e}")))?;
        let needs_repair = headers
            .iter()
            .any(|(name, value)| name == b":authority" && strip_scheme(value) != value.as_slice());
        if !needs_repair && !self.rewriting {
            self.emit_block(&block, &block.fragment);
            self.phase = Phase::Passthrough;
            return Ok(());
        }
        self.rewriting = true;
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &headers {
            let value = if name == b":authority" {
                strip_scheme(value)
            } else {
                value.as_slice()
            };
            encode_literal(&mut encoded, name, value);
        }
        self.emit_block(&block, &encoded);
        Ok(())
    }

    /// Emits `encoded` as the header block of `block`'s stream: HEADERS, then CONTINUATION
    /// frames as needed.
    fn emit_block(&mut self, block: &PendingBlock, encoded: &[u8]) {
        let prio_len = if block.priority.is_some() { 5 } else { 0 };
        let mut rest = encoded;
        let first_len = rest.len().min(MAX_FRAME - prio_len);
        let (first, tail) = rest.split_at(first_len);
        rest = tail;
        let mut flags = 0;
        if block.end_stream {
            flags |= END_STREAM;
        }
        if block.priority.is_some() {
            flags |= PRIORITY;
        }
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        let mut payload = Vec::with_capacity(prio_len + first.len());
        if let Some(p) = block.priority {
            payload.extend_from_slice(&p);
        }
        payload.extend_from_slice(first);
        self.frame(HEADERS, flags, block.stream_id, &payload);
        while !rest.is_empty() {
            let n = rest.len().min(MAX_FRAME);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            self.frame(CONTINUATION, flags, block.stream_id, chunk);
        }
    }

    fn frame(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let len = payload.len();
        self.output.extend_from_slice(&[
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
        ]);
        self.output.extend_from_slice(&stream_id.to_be_bytes());
        self.output.extend_from_slice(payload);
    }
}

/// `http://host:port` → `host:port`; anything else unchanged.
fn strip_scheme(value: &[u8]) -> &[u8] {
    match value.windows(3).position(|w| w == b"://") {
        Some(i) => value[i + 3..].strip_suffix(b"/").unwrap_or(&value[i + 3..]),
        None => value,
    }
}

/// HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2), no Huffman.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_string(out, name);
    encode_string(out, value);
}

/// An HPACK string literal: 7-bit prefixed length (Huffman bit clear), then the octets.
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut len = s.len();
    if len < 127 {
        out.push(len as u8);
    } else {
        out.push(127);
        len -= 127;
        while len >= 128 {
            out.push((len % 128) as u8 | 0x80);
            len /= 128;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(s);
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed HTTP/2 {what}"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.output_pos < this.output.len() {
                let n = (this.output.len() - this.output_pos).min(buf.remaining());
                buf.put_slice(&this.output[this.output_pos..this.output_pos + n]);
                this.output_pos += n;
                if this.output_pos == this.output.len() {
                    this.output.clear();
                    this.output_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = read.filled();
                    if filled.is_empty() {
                        // The client is done: what could not be parsed goes through as is.
                        this.eof = true;
                        this.output.append(&mut this.input);
                        continue;
                    }
                    if this.input.len() > MAX_HEADER_BLOCK + MAX_FRAME * 4 {
                        return Poll::Ready(Err(malformed("frame larger than allowed")));
                    }
                    this.input.extend_from_slice(filled);
                    this.process()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut f = AuthorityFix::new(());
        f.frame(HEADERS, flags, stream, block);
        f.output
    }

    fn run(input: &[u8]) -> Vec<u8> {
        let mut f = AuthorityFix::new(());
        f.input.extend_from_slice(input);
        f.process().expect("valid input");
        f.output
    }

    fn decode_headers(output: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let body = &output[PREFACE.len()..];
        let len = usize::from(body[0]) << 16 | usize::from(body[1]) << 8 | usize::from(body[2]);
        Decoder::new().decode(&body[9..9 + len]).expect("decodes")
    }

    #[test]
    fn a_url_authority_loses_its_scheme() {
        let mut block = Vec::new();
        encode_literal(&mut block, b":method", b"POST");
        encode_literal(&mut block, b":authority", b"http://127.0.0.1:2379");
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, END_HEADERS, &block));
        let headers = decode_headers(&run(&input));
        assert!(headers.contains(&(b":authority".to_vec(), b"127.0.0.1:2379".to_vec())));
        assert!(headers.contains(&(b":method".to_vec(), b"POST".to_vec())));
    }

    #[test]
    fn other_frames_and_http1_pass_through_unchanged() {
        let http1 = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(run(http1), http1.to_vec());
        let mut input = PREFACE.to_vec();
        // A SETTINGS frame and a DATA frame.
        input.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        input.extend_from_slice(&[0, 0, 3, 0x0, 0x1, 0, 0, 0, 1, b'a', b'b', b'c']);
        assert_eq!(run(&input), input);
    }

    #[test]
    fn a_block_split_over_continuations_is_reassembled() {
        let mut block = Vec::new();
        encode_literal(&mut block, b":authority", b"http://h:1");
        encode_literal(&mut block, b"x-long", &[b'v'; 300]);
        let (a, b) = block.split_at(10);
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(3, END_STREAM, a));
        let mut f = AuthorityFix::new(());
        f.frame(CONTINUATION, END_HEADERS, 3, b);
        input.extend(f.output);
        let out = run(&input);
        let headers = decode_headers(&out);
        assert!(headers.contains(&(b":authority".to_vec(), b"h:1".to_vec())));
        // END_STREAM is kept on the rewritten HEADERS frame.
        assert_eq!(out[PREFACE.len() + 4] & END_STREAM, END_STREAM);
    }

    #[test]
    fn incomplete_frames_wait_for_more_bytes() {
        let mut block = Vec::new();
        encode_literal(&mut block, b":authority", b"http://h:1");
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, END_HEADERS, &block));
        let mut f = AuthorityFix::new(());
        let cut = input.len() - 3;
        f.input.extend_from_slice(&input[..cut]);
        f.process().expect("partial input");
        assert_eq!(f.output, PREFACE.to_vec());
        f.input.extend_from_slice(&input[cut..]);
        f.process().expect("rest of the input");
        assert!(f.output.len() > PREFACE.len());
    }

    #[test]
    fn long_strings_use_multi_byte_lengths() {
        let mut out = Vec::new();
        encode_string(&mut out, &[b'x'; 1000]);
        let mut block = vec![0x00];
        encode_string(&mut block, b"k");
        block.extend_from_slice(&out);
        let headers = Decoder::new().decode(&block).expect("decodes");
        assert_eq!(headers[0].1.len(), 1000);
    }

    #[test]
    fn a_connection_whose_first_block_is_clean_passes_through_untouched() {
        // An indexed-with-incremental-indexing header, so rewriting would change the bytes.
        let mut block = vec![0x40];
        encode_string(&mut block, b":authority");
        encode_string(&mut block, b"127.0.0.1:2379");
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, END_HEADERS, &block));
        // Later frames, even a block that would need repair, go through as they are.
        let mut later = Vec::new();
        encode_literal(&mut later, b":authority", b"http://h:1");
        input.extend(headers_frame(3, END_HEADERS, &later));
        input.extend_from_slice(&[0, 0, 3, 0x0, 0x1, 0, 0, 0, 1, b'a', b'b', b'c']);
        assert_eq!(run(&input), input);
    }

    #[test]
    fn once_a_block_is_repaired_every_later_block_is_rewritten() {
        let mut first = Vec::new();
        encode_literal(&mut first, b":authority", b"http://h:1");
        let mut second = vec![0x40];
        encode_string(&mut second, b"x-clean");
        encode_string(&mut second, b"v");
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, END_HEADERS, &first));
        input.extend(headers_frame(3, END_HEADERS, &second));
        let out = run(&input);
        // The second block came out as a literal without indexing (0x00), not as sent (0x40).
        let first_len = usize::from(out[PREFACE.len() + 2]);
        let second_at = PREFACE.len() + 9 + first_len;
        assert_eq!(out[second_at + 9], 0x00);
    }
}
