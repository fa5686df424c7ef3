//! The client listener's router: a gRPC call goes to its service by the service name in its
//! path (`/etcdserverpb.KV/Put` → KV); anything else (`/metrics`, `/health`) to the HTTP router.
//!
//! tonic's `Routes` routes the same way through an axum router: a `matchit` lookup per request,
//! URL parameters stored in the request's extensions, the request and response bodies boxed
//! once more each way, a boxed service cloned per request. Taking it out cut the members' CPU
//! per put by 3.8 % at 256 clients (see `docs/benchmarks.md`). Here one string comparison picks
//! the service, which is called as is.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use kvstore_proto::etcdserverpb::auth_server::AuthServer;
use kvstore_proto::etcdserverpb::cluster_server::ClusterServer;
use kvstore_proto::etcdserverpb::kv_server::KvServer;
use kvstore_proto::etcdserverpb::lease_server::LeaseServer;
use kvstore_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::Status;

use super::auth::AuthService;
use super::cluster::ClusterService;
use super::kv::KvService;
use super::lease::LeaseService;
use super::maintenance::MaintenanceService;
use super::watch::WatchServer;

/// Every service of the client listener. Cheap to clone (hyper clones it for each request).
#[derive(Clone)]
pub struct ClientRoutes {
    services: Arc<Services>,
}

/// The services a [`ClientRoutes`] dispatches to.
pub struct Services {
    /// etcd's KV service.
    pub kv: KvServer<KvService>,
    /// etcd's Watch service.
    pub watch: WatchServer,
    /// etcd's Lease service.
    pub lease: LeaseServer<LeaseService>,
    /// etcd's Cluster service.
    pub cluster: ClusterServer<ClusterService>,
    /// etcd's Maintenance service.
    pub maintenance: MaintenanceServer<MaintenanceService>,
    /// etcd's Auth service.
    pub auth: AuthServer<AuthService>,
    /// Plain HTTP: metrics and health, and the answer to any other path.
    pub http: axum::Router,
}

impl ClientRoutes {
    /// Routes to `services`.
    pub fn new(services: Services) -> Self {
        Self {
            services: Arc::new(services),
        }
    }
}

/// The service name of a gRPC path (`/etcdserverpb.KV/Put` → `etcdserverpb.KV`).
fn service_name(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (service, _method) = rest.split_once('/')?;
    Some(service)
}

/// Whether a request is a gRPC call (`content-type: application/grpc`, `+proto` and the like).
fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl Service<http::Request<Body>> for ClientRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let s = &self.services;
        match service_name(req.uri().path()) {
            Some(KvServer::<KvService>::NAME) => s.kv.clone().call(req),
            Some(WatchServer::NAME) => s.watch.clone().call(req),
            Some(LeaseServer::<LeaseService>::NAME) => s.lease.clone().call(req),
            Some(ClusterServer::<ClusterService>::NAME) => s.cluster.clone().call(req),
            Some(MaintenanceServer::<MaintenanceService>::NAME) => s.maintenance.clone().call(req),
            Some(AuthServer::<AuthService>::NAME) => s.auth.clone().call(req),
            // A gRPC call of a service etcd does not have: etcd's answer, not an HTTP 404.
            Some(_) if is_grpc(&req) => Box::pin(std::future::ready(Ok(
                Status::unimplemented("").into_http()
            ))),
            _ => {
                let mut http = s.http.clone();
                Box::pin(async move {
                    let response = http.call(req).await?;
                    Ok(response.map(Body::new))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_name_is_the_first_path_segment() {
        assert_eq!(
            service_name("/etcdserverpb.KV/Put"),
            Some("etcdserverpb.KV")
        );
        assert_eq!(
            service_name("/etcdserverpb.Watch/Watch"),
            Some("etcdserverpb.Watch")
        );
        assert_eq!(service_name("/metrics"), None);
        assert_eq!(service_name("/"), None);
        assert_eq!(service_name("etcdserverpb.KV/Put"), None);
    }
}
