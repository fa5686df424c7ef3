//! The cluster's alarms (NOSPACE, CORRUPT): raised and cleared through the state machine,
//! persisted with the store, and checked before every write that could grow the database.

use std::collections::BTreeSet;

use kvstore_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmType,
};
use parking_lot::RwLock;
use rocksdb::WriteBatch;

use crate::mvcc::backend::{Backend, CF_META};
use crate::mvcc::{self, Error as StoreError};
use crate::Error;

/// Meta key holding the active alarms.
const META_ALARMS: &[u8] = b"alarms";

/// The active alarms: (member ID, alarm type).
pub struct Alarms {
    /// Active alarms, ordered.
    active: RwLock<BTreeSet<(u64, i32)>>,
}

impl Alarms {
    /// Loads the alarms persisted in the backend.
    pub fn load(backend: &Backend) -> mvcc::Result<Self> {
        let mut active = BTreeSet::new();
        if let Some(bytes) = backend.db().get_cf(&backend.cf(CF_META), META_ALARMS)? {
            for chunk in bytes.chunks(12) {
                if chunk.len() != 12 {
                    return Err(StoreError::Corrupt("alarm record length".into()));
                }
                let mut id = [0u8; 8];
                id.copy_from_slice(&chunk[..8]);
                let mut ty = [0u8; 4];
                ty.copy_from_slice(&chunk[8..]);
                active.insert((u64::from_be_bytes(id), i32::from_be_bytes(ty)));
            }
        }
        Ok(Self {
            active: RwLock::new(active),
        })
    }

    /// Reloads the alarms from the backend (after a Raft snapshot replaced its contents).
    pub fn reload(&self, backend: &Backend) -> mvcc::Result<()> {
        let fresh = Self::load(backend)?;
        *self.active.write() = fresh.active.into_inner();
        Ok(())
    }

    /// Fails a write with etcd's error while a NOSPACE or CORRUPT alarm is active.
    pub fn check_write(&self) -> Result<(), Error> {
        let active = self.active.read();
        if active.iter().any(|(_, t)| *t == AlarmType::Corrupt as i32) {
            return Err(Error::Corrupt);
        }
        if active.iter().any(|(_, t)| *t == AlarmType::Nospace as i32) {
            return Err(Error::NoSpace);
        }
        Ok(())
    }

    /// Fails a change that frees space (delete, compaction, lease revoke) while a CORRUPT
    /// alarm is active: etcd refuses every change on a corrupt cluster, but not these on NOSPACE.
    pub fn check_corrupt(&self) -> Result<(), Error> {
        if self.is_active(None, AlarmType::Corrupt) {
            return Err(Error::Corrupt);
        }
        Ok(())
    }

    /// Whether `alarm` is active for `member` (for any member if `None`).
    pub fn is_active(&self, member: Option<u64>, alarm: AlarmType) -> bool {
        self.active
            .read()
            .iter()
            .any(|(id, t)| *t == alarm as i32 && member.is_none_or(|m| m == *id))
    }

    /// Every active alarm.
    pub fn list(&self) -> Vec<AlarmMember> {
        self.active
            .read()
            .iter()
            .map(|(member_id, alarm)| AlarmMember {
                member_id: *member_id,
                alarm: *alarm,
            })
            .collect()
    }

    /// Applies an alarm request for `member`, persisting the result. Returns the alarms the
    /// request concerned, as etcd does (all for GET, the changed one for ACTIVATE/DEACTIVATE).
    pub fn apply_persisted(
        &self,
        backend: &Backend,
        req: &AlarmRequest,
        member: u64,
    ) -> Result<Vec<AlarmMember>, Error> {
        let action = AlarmAction::try_from(req.action).unwrap_or(AlarmAction::Get);
        let mut active = self.active.write();
        let entry = (member, req.alarm);
        let changed = match action {
            AlarmAction::Get => return Ok(self.list_locked(&active)),
            AlarmAction::Activate => req.alarm != AlarmType::None as i32 && active.insert(entry),
            AlarmAction::Deactivate => active.remove(&entry),
        };
        if changed {
            let mut bytes = Vec::with_capacity(active.len() * 12);
            for (id, ty) in active.iter() {
                bytes.extend_from_slice(&id.to_be_bytes());
                bytes.extend_from_slice(&ty.to_be_bytes());
            }
            let mut batch = WriteBatch::default();
            batch.put_cf(&backend.cf(CF_META), META_ALARMS, bytes);
            backend.write(batch).map_err(Error::Store)?;
            Ok(vec![AlarmMember {
                member_id: member,
                alarm: req.alarm,
            }])
        } else {
            Ok(Vec::new())
        }
    }

    fn list_locked(&self, active: &BTreeSet<(u64, i32)>) -> Vec<AlarmMember> {
        active
            .iter()
            .map(|(member_id, alarm)| AlarmMember {
                member_id: *member_id,
                alarm: *alarm,
            })
            .collect()
    }
}
