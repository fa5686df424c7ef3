//! Leases as data: which leases are granted and which keys each one holds.
//!
//! The timers that expire leases belong to the server's lessor; here a lease is only a record
//! (ID, TTL, last checkpointed remaining TTL) and a set of attached keys, so that revoking it can
//! delete exactly its keys in one transaction, and so that all of it survives a restart (the
//! attachments are rebuilt from each key's `lease` field).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::backend::LeaseRecord;
use super::error::Result;
use super::store::{Committed, KvStore};

/// A change to the lease table, staged by a write transaction and applied at its commit.
#[derive(Clone, Debug)]
pub enum LeaseChange {
    /// A key was put with this lease (0: no lease): detach it from its old one, attach it here.
    Attach {
        /// The key put.
        key: Vec<u8>,
        /// Its lease now.
        lease: i64,
    },
    /// A key was deleted: detach it.
    Detach {
        /// The key deleted.
        key: Vec<u8>,
    },
    /// A lease was granted.
    Grant(LeaseRecord),
    /// A lease was revoked (its keys were deleted in the same transaction).
    Revoke(i64),
    /// A lease's remaining TTL was checkpointed.
    Checkpoint(LeaseRecord),
}

/// The granted leases and their keys.
#[derive(Debug, Default)]
pub struct LeaseTable {
    /// Lease ID → record and attached keys.
    leases: BTreeMap<i64, (LeaseRecord, HashSet<Vec<u8>>)>,
    /// Key → the lease it is attached to (only keys with a granted lease).
    key_lease: HashMap<Vec<u8>, i64>,
}

impl LeaseTable {
    /// Adds a granted lease with no keys.
    pub fn grant(&mut self, record: LeaseRecord) {
        self.leases.insert(record.id, (record, HashSet::new()));
    }

    /// Attaches `key` to `lease`, detaching it from any other. A lease that is not granted
    /// leaves the key unattached.
    pub fn attach(&mut self, lease: i64, key: Vec<u8>) {
        self.detach(&key);
        if let Some((_, keys)) = self.leases.get_mut(&lease) {
            keys.insert(key.clone());
            self.key_lease.insert(key, lease);
        }
    }

    /// Detaches `key` from its lease, if any.
    pub fn detach(&mut self, key: &[u8]) {
        if let Some(old) = self.key_lease.remove(key) {
            if let Some((_, keys)) = self.leases.get_mut(&old) {
                keys.remove(key);
            }
        }
    }

    /// Whether the lease is granted.
    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// A lease's record and its keys, sorted.
    pub fn get(&self, id: i64) -> Option<(LeaseRecord, Vec<Vec<u8>>)> {
        self.leases.get(&id).map(|(record, keys)| {
            let mut keys: Vec<_> = keys.iter().cloned().collect();
            keys.sort();
            (*record, keys)
        })
    }

    /// Every granted lease, by ID.
    pub fn records(&self) -> Vec<LeaseRecord> {
        self.leases.values().map(|(record, _)| *record).collect()
    }

    /// Applies the staged changes of a committed transaction, in order.
    pub fn apply(&mut self, changes: Vec<LeaseChange>) {
        for change in changes {
            match change {
                LeaseChange::Attach { key, lease } => self.attach(lease, key),
                LeaseChange::Detach { key } => self.detach(&key),
                LeaseChange::Grant(record) => self.grant(record),
                LeaseChange::Revoke(id) => {
                    if let Some((_, keys)) = self.leases.remove(&id) {
                        for key in keys {
                            self.key_lease.remove(&key);
                        }
                    }
                }
                LeaseChange::Checkpoint(record) => {
                    if let Some((r, _)) = self.leases.get_mut(&record.id) {
                        *r = record;
                    }
                }
            }
        }
    }
}

impl KvStore {
    /// Grants a lease as a transaction of its own. Fails with `LeaseExists` if the ID is taken.
    pub fn lease_grant(&self, record: LeaseRecord) -> Result<Committed> {
        let mut txn = self.write();
        txn.grant_lease(record)?;
        txn.commit()
    }

    /// Revokes a lease, deleting its keys in one transaction (one revision, if it had keys).
    pub fn lease_revoke(&self, id: i64) -> Result<Committed> {
        let mut txn = self.write();
        txn.revoke_lease(id)?;
        txn.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i64) -> LeaseRecord {
        LeaseRecord {
            id,
            ttl: 10,
            remaining_ttl: 0,
        }
    }

    #[test]
    fn reattaching_a_key_moves_it_between_leases() {
        let mut t = LeaseTable::default();
        t.grant(record(1));
        t.grant(record(2));
        t.attach(1, b"a".to_vec());
        t.attach(2, b"a".to_vec());
        assert!(t.get(1).map(|(_, k)| k.is_empty()).unwrap_or(false));
        assert_eq!(t.get(2).map(|(_, k)| k), Some(vec![b"a".to_vec()]));
        t.apply(vec![LeaseChange::Attach {
            key: b"a".to_vec(),
            lease: 0,
        }]);
        assert!(t.get(2).map(|(_, k)| k.is_empty()).unwrap_or(false));
    }

    #[test]
    fn revoke_forgets_the_lease_and_its_keys() {
        let mut t = LeaseTable::default();
        t.grant(record(7));
        t.attach(7, b"k".to_vec());
        t.apply(vec![LeaseChange::Revoke(7)]);
        assert!(!t.contains(7));
        // The key is no longer attached anywhere: attaching it to a new lease works cleanly.
        t.grant(record(8));
        t.attach(8, b"k".to_vec());
        assert_eq!(t.get(8).map(|(_, k)| k.len()), Some(1));
    }

    #[test]
    fn attaching_to_an_unknown_lease_leaves_the_key_unattached() {
        let mut t = LeaseTable::default();
        t.attach(99, b"k".to_vec());
        assert!(t.get(99).is_none());
        assert!(t.key_lease.is_empty());
    }
}
