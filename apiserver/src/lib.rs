//! kvstore's apiserver: a Kubernetes-style REST API over the etcd v3 API.
