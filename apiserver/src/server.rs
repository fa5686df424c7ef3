//! The server: shared state, the router, the HTTP and HTTPS listeners, and the middleware
//! that authenticates every request.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::audit::AuditLog;
use crate::authn::{Authenticator, Transport, User};
use crate::authz::Authorizer;
use crate::config::Options;
use crate::discovery;
use crate::error::ApiError;
use crate::handlers::{self, json_response};
use crate::registry::{ObjRef, Registry};
use crate::resources::lookup;
use crate::store::Store;

/// State shared by every request.
#[derive(Debug)]
pub struct App {
    pub registry: Arc<Registry>,
    pub authn: Authenticator,
    pub authz: Authorizer,
    pub audit: Option<AuditLog>,
    /// Permits for non-watch requests (`--max-requests-inflight`); None = unlimited.
    pub inflight: Option<Arc<Semaphore>>,
    pub max_request_bytes: usize,
    pub bookmark_interval: u64,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl App {
    pub fn new(opts: &Options) -> Result<Arc<App>, StartError> {
        let store =
            Store::new(&opts.etcd_servers).map_err(|e| StartError::Config(e.to_string()))?;
        let registry = Arc::new(Registry::new(Arc::new(store)));
        let authn = match &opts.token_auth_file {
            Some(p) => Authenticator::from_token_file(p).map_err(StartError::Config)?,
            None => Authenticator::default(),
        };
        let authz = Authorizer::new(&opts.authorization_mode, registry.clone())
            .map_err(StartError::Config)?;
        let audit = match &opts.audit_log_path {
            Some(p) => Some(AuditLog::open(p).map_err(|e| {
                StartError::Config(format!("--audit-log-path {}: {e}", p.display()))
            })?),
            None => None,
        };
        Ok(Arc::new(App {
            registry,
            authn,
            authz,
            audit,
            inflight: (opts.max_requests_inflight > 0)
                .then(|| Arc::new(Semaphore::new(opts.max_requests_inflight))),
            max_request_bytes: opts.max_request_bytes,
            bookmark_interval: opts.watch_bookmark_interval,
        }))
    }
}

/// Authenticates the request and passes the user on; bad credentials end it with 401.
async fn authenticate(
    State(app): State<Arc<App>>,
    Extension(transport): Extension<Transport>,
    mut req: Request,
    next: Next,
) -> Response {
    match app.authn.authenticate(req.headers(), &transport) {
        Ok(user) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

fn ok_json(v: Value) -> Response {
    json_response(StatusCode::OK, &v)
}

async fn health(State(app): State<Arc<App>>) -> Response {
    match app.registry.store.current_revision().await {
        Ok(_) => (StatusCode::OK, "ok").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("[-]etcd failed: {e}\nhealthz check failed"),
        )
            .into_response(),
    }
}

async fn openapi_v2(req: Request) -> Response {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("protobuf") {
        let mut resp = discovery::openapi_v2_protobuf().into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
        );
        resp
    } else {
        ok_json(discovery::openapi_v2_json())
    }
}

async fn api_group(Path(group): Path<String>) -> Response {
    match discovery::group(&group) {
        Some(v) => ok_json(v),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
        .into_response(),
    }
}

async fn group_version(Path((group, version)): Path<(String, String)>) -> Response {
    match discovery::resource_list(&group, &version) {
        Some(v) => ok_json(v),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
        .into_response(),
    }
}

async fn not_found(req: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "the server could not find the requested resource (path {})",
            req.uri().path()
        ),
    )
    .into_response()
}

/// The router (without the transport extension each listener adds).
pub fn router(app: Arc<App>) -> Router {
    let resources = axum::routing::any(handlers::resource);
    Router::new()
        .route("/version", get(|| async { ok_json(discovery::version()) }))
        .route("/healthz", get(health))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(health))
        .route("/openapi/v2", get(openapi_v2))
        .route(
            "/api",
            get(|| async { ok_json(discovery::core_versions()) }),
        )
        .route(
            "/api/v1",
            get(|| async { ok_json(discovery::resource_list("", "v1").unwrap_or(json!({}))) }),
        )
        .route("/apis", get(|| async { ok_json(discovery::group_list()) }))
        .route("/apis/{group}", get(api_group))
        .route("/apis/{group}/{version}", get(group_version))
        .route("/api/v1/{*rest}", resources.clone())
        .route("/apis/{group}/{version}/{*rest}", resources)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            authenticate,
        ))
        .with_state(app)
}

/// Creates the namespaces every cluster has (`default`, `kube-system`, ...), once the store
/// answers; existing ones are left alone.
pub async fn bootstrap(app: &App) {
    let Some(ns) = lookup("", "v1", "namespaces") else {
        return;
    };
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        for attempt in 0..100 {
            let mut obj = json!({"metadata": {"name": name}});
            crate::meta::prepare_create(ns, &mut obj, "");
            let r = ObjRef {
                res: ns,
                namespace: "",
                name,
            };
            match app.registry.create(r, obj, false).await {
                Ok(_) => break,
                Err(e) if e.code == StatusCode::CONFLICT => break,
                Err(e) => {
                    if attempt % 10 == 0 {
                        tracing::warn!(cause = %e.message, "waiting for the store to create namespace {name}");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
            }
        }
    }
}

/// Turns Nagle's algorithm off on an accepted connection (axum leaves it on): otherwise a
/// watch's small event writes wait for the client's delayed ACKs, ~40 ms at a time.
fn no_delay(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(cause = %e, "cannot turn Nagle's algorithm off");
    }
}

/// Serves plain HTTP on `listener` (the development port): no client certificates.
pub async fn serve_insecure(listener: TcpListener, app: Arc<App>) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let router = router(app).layer(Extension(Transport::Insecure));
    let listener = listener.tap_io(|tcp| no_delay(tcp));
    axum::serve(listener, router).await
}

/// Serves HTTPS on `listener`; each connection's verified client certificate becomes its
/// [`Transport::Tls`] identity.
pub async fn serve_tls(
    listener: TcpListener,
    app: Arc<App>,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let router = router(app);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(cause = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        no_delay(&tcp);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, cause = %e, "TLS handshake failed");
                    return;
                }
            };
            let user: Option<User> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(crate::tls::cert_user);
            let svc = router.layer(Extension(Transport::Tls(user)));
            let svc = TowerToHyperService::new(svc);
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, cause = %e, "connection ended with an error");
            }
        });
    }
}

/// Runs the server until the process ends: binds the listeners, bootstraps namespaces.
pub async fn run(opts: Options) -> Result<(), StartError> {
    let app = App::new(&opts)?;
    let mut tasks = Vec::new();
    if opts.insecure_port > 0 {
        let addr = SocketAddr::new(opts.bind_address, opts.insecure_port);
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        eprintln!("kvstore-apiserver: serving plain HTTP on http://{addr}");
        tasks.push(tokio::spawn(serve_insecure(l, app.clone())));
    }
    if opts.secure_port > 0 {
        match (&opts.tls_cert_file, &opts.tls_private_key_file) {
            (Some(cert), Some(key)) => {
                let config = crate::tls::server_config(cert, key, opts.client_ca_file.as_deref())
                    .map_err(StartError::Config)?;
                let addr = SocketAddr::new(opts.bind_address, opts.secure_port);
                let l = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
                eprintln!("kvstore-apiserver: serving HTTPS on https://{addr}");
                tasks.push(tokio::spawn(serve_tls(l, app.clone(), config)));
            }
            _ if opts.insecure_port > 0 => {}
            _ => {
                return Err(StartError::Config(
                    "--secure-port needs --tls-cert-file and --tls-private-key-file (or use --insecure-port for plain HTTP)".into(),
                ))
            }
        }
    }
    bootstrap(&app).await;
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
