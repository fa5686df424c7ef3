//! Command-line flags, named as kube-apiserver's.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// kvstore-apiserver: a Kubernetes-style REST API over the etcd v3 API (kvstore or etcd).
///
/// Serves core/v1, apps/v1, batch/v1, coordination.k8s.io/v1 and rbac.authorization.k8s.io/v1
/// resources so that kubectl and Kubernetes client libraries work against it. It keeps no
/// state of its own: any number of apiservers can serve one store.
#[derive(Debug, Clone, Parser)]
#[command(name = "kvstore-apiserver", version)]
pub struct Options {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Comma-separated client URLs of the store's members (kvstore or etcd), e.g.
    /// http://127.0.0.1:2379,http://127.0.0.1:22379. Requests fail over between them.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd_servers: Vec<String>,

    /// The IP address to listen on for --secure-port (and --insecure-port).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,

    /// The HTTPS port (needs --tls-cert-file and --tls-private-key-file). 0 = no HTTPS.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,

    /// A plain-HTTP port for local development and tests. 0 = off. Requests without a bearer
    /// token on this port act as `system:unsecured` in group `system:masters`, as the old
    /// kube-apiserver insecure port did: bind it to loopback only.
    #[arg(long, default_value_t = 0)]
    pub insecure_port: u16,

    /// PEM certificate of the HTTPS server (chain allowed).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,

    /// PEM CA bundle: a client certificate signed by it authenticates as its CommonName,
    /// with its Organizations as groups.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,

    /// CSV file of bearer tokens: token,user,uid,"group1,group2" per line.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,

    /// Comma-separated authorizers tried in order: AlwaysAllow, AlwaysDeny, RBAC.
    /// RBAC reads Roles, ClusterRoles and their bindings from the API; members of
    /// `system:masters` are always allowed.
    #[arg(long, value_delimiter = ',', default_value = "AlwaysAllow")]
    pub authorization_mode: Vec<String>,

    /// Append a JSON line per write request (who, what, when, response code) to this file.
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,

    /// Requests (other than watches) served at once; more get 429 TooManyRequests. 0 = no limit.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,

    /// Largest request body accepted, in bytes (Kubernetes: 3 MiB).
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// How often a watch with allowWatchBookmarks=true gets a BOOKMARK event, in seconds.
    #[arg(long, default_value_t = 60)]
    pub watch_bookmark_interval: u64,

    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
}

/// Helper commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Generates a self-signed CA, a serving certificate and an admin client certificate
    /// (CN=admin, O=system:masters), plus an admin kubeconfig, into a directory.
    Certs {
        /// Where to write ca.crt, apiserver.crt/.key, admin.crt/.key and admin.kubeconfig.
        #[arg(long)]
        dir: PathBuf,
        /// Names and IPs the serving certificate is valid for.
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
        hosts: Vec<String>,
        /// The server URL written into the kubeconfig.
        #[arg(long, default_value = "https://127.0.0.1:6443")]
        server: String,
    },
}
