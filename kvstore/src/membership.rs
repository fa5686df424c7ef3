//! Who is in the cluster: the initial cluster configuration, and member and cluster IDs
//! derived from it exactly as etcd derives them, so they are stable across restarts and the
//! same for every member that was given the same configuration.

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};

use crate::Error;

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// etcd's member ID: the first 8 bytes of SHA-1(sorted peer URLs ++ cluster token).
    pub id: u64,
    /// Human-readable name.
    pub name: String,
    /// URLs peers reach it on.
    pub peer_urls: Vec<String>,
    /// URLs clients reach it on (known for this member; learned for others).
    pub client_urls: Vec<String>,
    /// Whether it is a non-voting learner.
    pub is_learner: bool,
}

/// The initial membership of a cluster and this member's place in it.
#[derive(Clone, Debug)]
pub struct Membership {
    /// etcd's cluster ID: the first 8 bytes of SHA-1 of the sorted member IDs, big-endian.
    pub cluster_id: u64,
    /// This member's ID.
    pub member_id: u64,
    /// Every member, by ID.
    pub members: BTreeMap<u64, Member>,
}

/// Prefix of the `meta` column family keys holding published member attributes.
const ATTRIBUTES_PREFIX: &[u8] = b"member/";

/// The `meta` key of a member's published attributes.
pub fn attributes_key(id: u64) -> Vec<u8> {
    let mut key = ATTRIBUTES_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Every member's published attributes (name and client URLs), by member ID.
pub fn published_attributes(
    backend: &crate::mvcc::backend::Backend,
) -> Result<BTreeMap<u64, kvstore_proto::raftpb::MemberAttributes>, Error> {
    use prost::Message;
    let cf = backend.cf(crate::mvcc::backend::CF_META);
    let mut out = BTreeMap::new();
    let iter = backend.db().iterator_cf(
        &cf,
        rocksdb::IteratorMode::From(ATTRIBUTES_PREFIX, rocksdb::Direction::Forward),
    );
    for item in iter {
        let (k, v) = item.map_err(crate::mvcc::Error::from)?;
        if !k.starts_with(ATTRIBUTES_PREFIX) {
            break;
        }
        let attrs = kvstore_proto::raftpb::MemberAttributes::decode(&*v)
            .map_err(|e| Error::Internal(format!("member attributes: {e}")))?;
        out.insert(attrs.id, attrs);
    }
    Ok(out)
}

/// etcd's `computeMemberId` (without the time salt used for members added later).
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    first_u64(&h.finalize())
}

/// etcd's `genID`: SHA-1 of the sorted member IDs, big-endian.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

impl Membership {
    /// Builds the membership from `--initial-cluster` (`name=url,name=url,...`; a name may
    /// repeat to give a member several URLs), checking that `name` is in it with exactly
    /// `advertise_peer_urls`.
    pub fn from_initial_cluster(
        initial_cluster: &str,
        token: &str,
        name: &str,
        advertise_peer_urls: &[String],
        client_urls: &[String],
        joining: bool,
    ) -> Result<Self, Error> {
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for part in initial_cluster.split(',').filter(|p| !p.trim().is_empty()) {
            let (n, url) = part.split_once('=').ok_or_else(|| {
                Error::Config(format!(
                    "--initial-cluster entry {part:?} is not of the form name=url"
                ))
            })?;
            by_name
                .entry(n.trim().to_string())
                .or_default()
                .push(url.trim().to_string());
        }
        let Some(own_urls) = by_name.get(name) else {
            return Err(Error::Config(format!(
                "couldn't find local name {name:?} in the initial cluster configuration"
            )));
        };
        let mut own_sorted = own_urls.clone();
        own_sorted.sort();
        let mut adv_sorted = advertise_peer_urls.to_vec();
        adv_sorted.sort();
        if own_sorted != adv_sorted {
            return Err(Error::Config(format!(
                "--initial-cluster has {name}={} but --initial-advertise-peer-urls is {}",
                own_sorted.join(","),
                adv_sorted.join(",")
            )));
        }
        let mut members = BTreeMap::new();
        let mut member_id_self = 0;
        for (n, urls) in by_name {
            let id = member_id(&urls, token);
            if n == name {
                member_id_self = id;
            }
            members.insert(
                id,
                Member {
                    id,
                    client_urls: if n == name {
                        client_urls.to_vec()
                    } else {
                        Vec::new()
                    },
                    name: n,
                    peer_urls: urls,
                    is_learner: false,
                },
            );
        }
        // A member joining an existing cluster lists the members already there plus itself;
        // the cluster's ID is that of the members it was bootstrapped with, so leave itself out
        // (exact unless the cluster's membership changed in other ways since).
        let ids: Vec<u64> = members
            .keys()
            .copied()
            .filter(|id| !joining || *id != member_id_self)
            .collect();
        Ok(Self {
            cluster_id: cluster_id(&ids),
            member_id: member_id_self,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_single_member_ids_match_etcd() {
        // etcd 3.4 started with all defaults reports member 8e9e05c52164694d in cluster
        // cdf818194e3a8c32.
        let m = Membership::from_initial_cluster(
            "default=http://localhost:2380",
            "etcd-cluster",
            "default",
            &["http://localhost:2380".to_string()],
            &["http://localhost:2379".to_string()],
            false,
        )
        .expect("valid configuration");
        assert_eq!(format!("{:x}", m.member_id), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", m.cluster_id), "cdf818194e3a8c32");
    }

    #[test]
    fn unknown_name_is_refused() {
        let err = Membership::from_initial_cluster(
            "a=http://127.0.0.1:1",
            "t",
            "b",
            &["http://127.0.0.1:1".to_string()],
            &[],
            false,
        );
        assert!(matches!(err, Err(Error::Config(_))));
    }

    #[test]
    fn mismatched_advertise_urls_are_refused() {
        let err = Membership::from_initial_cluster(
            "a=http://127.0.0.1:1",
            "t",
            "a",
            &["http://127.0.0.1:2".to_string()],
            &[],
            false,
        );
        assert!(matches!(err, Err(Error::Config(_))));
    }
}
