//! The `etcdserverpb.Watch` gRPC service: what tonic generates as `watch_server::WatchServer`,
//! written out so that it can use [`WireCodec`] (responses arrive as encoded bytes) instead of
//! the prost codec.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;

use kvstore_proto::etcdserverpb::{watch_server::SERVICE_NAME, WatchRequest};
use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Code, Request, Response, Status, Streaming};

use super::wire::{Outbound, WireCodec};
use super::{ResponseStream, WatchService};

/// The one method's path.
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// The Watch gRPC service over a [`WatchService`].
#[derive(Clone)]
pub struct WatchServer {
    /// The service streams are opened on.
    service: Arc<WatchService>,
    /// The largest request message accepted.
    max_decoding_message_size: usize,
}

impl WatchServer {
    /// Serves `service`, refusing request messages larger than `max_decoding_message_size`.
    pub fn new(service: WatchService, max_decoding_message_size: usize) -> Self {
        Self {
            service: Arc::new(service),
            max_decoding_message_size,
        }
    }
}

impl NamedService for WatchServer {
    const NAME: &'static str = SERVICE_NAME;
}

/// The Watch method, as tonic's server machinery calls it.
struct WatchMethod(Arc<WatchService>);

impl StreamingService<WatchRequest> for WatchMethod {
    type Response = Outbound;
    type ResponseStream = ResponseStream;
    type Future = Ready<Result<Response<ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<WatchRequest>>) -> Self::Future {
        ready(Ok(Response::new(self.0.open(request.into_inner()))))
    }
}

impl<B> Service<http::Request<B>> for WatchServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != WATCH_PATH {
            // As generated: an unknown method of the service is `Unimplemented`.
            return Box::pin(ready(Ok(Status::new(Code::Unimplemented, "").into_http())));
        }
        let method = WatchMethod(Arc::clone(&self.service));
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(WireCodec).max_decoding_message_size(limit);
            Ok(grpc.streaming(method, req).await)
        })
    }
}
