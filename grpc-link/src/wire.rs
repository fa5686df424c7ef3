//! gRPC's framing on HTTP/2: the length prefix of each message, and the `grpc-status` and
//! `grpc-message` a reply ends with.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use prost::Message;
use tonic::{Code, Status};

/// A gRPC message's length-prefix: a compression flag byte and a big-endian u32 length.
const GRPC_PREFIX: usize = 5;

/// Cuts the next whole length-prefixed message out of `buf` (without copying it); `None` while
/// `buf` does not hold all of it yet.
pub(crate) fn next_message(
    buf: &mut Bytes,
    max_message_bytes: usize,
) -> Result<Option<Bytes>, Status> {
    if buf.len() < GRPC_PREFIX {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(Status::internal("message is compressed"));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > max_message_bytes {
        return Err(Status::resource_exhausted("message too large"));
    }
    if buf.len() < GRPC_PREFIX + len {
        return Ok(None);
    }
    let message = buf.slice(GRPC_PREFIX..GRPC_PREFIX + len);
    buf.advance(GRPC_PREFIX + len);
    Ok(Some(message))
}

/// `message` with gRPC's length prefix (uncompressed).
pub(crate) fn frame<M: Message>(message: &M) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    let mut body = BytesMut::with_capacity(GRPC_PREFIX + len);
    body.put_u8(0);
    body.put_u32(u32::try_from(len).map_err(|_| Status::resource_exhausted("request too large"))?);
    message
        .encode(&mut body)
        .map_err(|e| Status::internal(format!("encoding a request: {e}")))?;
    Ok(body.freeze())
}

/// `Err` if `headers` carry a non-zero `grpc-status`.
pub(crate) fn check_grpc_status(headers: &HeaderMap) -> Result<(), Status> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(());
    };
    let code = code
        .to_str()
        .ok()
        .and_then(|c| c.parse::<i32>().ok())
        .map(Code::from_i32)
        .unwrap_or(Code::Unknown);
    if code == Code::Ok {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Err(Status::new(code, message))
}

/// gRPC's percent-encoding of `grpc-message` undone (invalid escapes kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The one message of a body read whole (the tests' servers).
#[cfg(test)]
pub(crate) fn decode_message<M: Message + Default>(data: &[u8]) -> Result<M, Status> {
    let mut buf = Bytes::copy_from_slice(data);
    let message = next_message(&mut buf, usize::MAX)?
        .ok_or_else(|| Status::internal("shorter than its length prefix"))?;
    M::decode(message).map_err(|e| Status::internal(format!("decoding: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use kvstore_proto::raftpb::RaftMessage;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode("not%20the%20leader"), "not the leader");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn a_reply_is_checked_against_its_length_prefix() {
        let msg = RaftMessage {
            data: b"abc".to_vec(),
        };
        let mut whole = vec![0, 0, 0, 0, msg.encoded_len() as u8];
        whole.extend(msg.encode_to_vec());
        let got: RaftMessage = decode_message(&whole).expect("decodes");
        assert_eq!(got, msg);
        let mut short = Bytes::copy_from_slice(&whole[..whole.len() - 1]);
        assert!(
            next_message(&mut short, 1 << 20)
                .expect("not an error yet")
                .is_none(),
            "a message shorter than its prefix is not taken"
        );
        assert!(decode_message::<RaftMessage>(&whole[..whole.len() - 1]).is_err());
        assert!(decode_message::<RaftMessage>(&[1, 0, 0, 0, 0]).is_err());
        let mut big = Bytes::from(whole);
        assert_eq!(
            next_message(&mut big, 2)
                .expect_err("over the limit")
                .code(),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn a_non_zero_grpc_status_is_an_error() {
        let mut headers = HeaderMap::new();
        assert!(check_grpc_status(&headers).is_ok());
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(check_grpc_status(&headers).is_ok());
        headers.insert("grpc-status", HeaderValue::from_static("14"));
        headers.insert("grpc-message", HeaderValue::from_static("going%20away"));
        let err = check_grpc_status(&headers).expect_err("status 14");
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(err.message(), "going away");
    }
}
