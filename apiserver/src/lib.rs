//! kvstore's apiserver: a Kubernetes-style REST API over the etcd v3 API.
//!
//! It is the only client of the store and keeps no state of its own, so any number of
//! apiservers can serve one kvstore (or etcd) cluster. Real `kubectl` and the official
//! Kubernetes client libraries drive it.
//!
//! # Layout
//! - [`config`]: command-line flags, named as kube-apiserver's.
//! - [`server`]: shared state, router, HTTP/HTTPS listeners, authentication middleware.
//! - [`handlers`]: resource requests: decode, authorize, run the verb, encode, audit.
//! - [`request`]: URL → resource, verb and query options.
//! - [`watch`]: `?watch=true` streams.
//! - [`watchcache`]: one store watch per resource fanned out to all HTTP watchers.
//! - [`registry`]: generic get/list/create/update/delete over the storage contract.
//! - [`store`]: the etcd v3 client with endpoint failover; the storage contract's txns.
//! - [`resources`]: the resource table every other module is driven by.
//! - [`strategy`]: per-resource defaulting, validation and initial status.
//! - [`meta`]: server-owned metadata (uid, timestamps, generation) and status splitting.
//! - [`admission`]: namespace lifecycle and validation.
//! - [`selector`]: label and field selectors.
//! - [`patch`]: JSON, merge and strategic merge patches.
//! - [`table`]: server-side `Table` output for kubectl.
//! - [`discovery`]: `/version`, `/api`, `/apis`, resource lists, OpenAPI v2.
//! - [`authn`], [`authz`], [`audit`], [`tls`]: security.
//! - [`error`]: Kubernetes `Status` errors.

pub mod admission;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod config;
pub mod discovery;
pub mod error;
pub mod handlers;
pub mod meta;
pub mod patch;
pub mod registry;
pub mod request;
pub mod resources;
pub mod selector;
pub mod server;
pub mod store;
pub mod strategy;
pub mod table;
pub mod tls;
pub mod watch;
pub mod watchcache;
