//! etcd's revision and the on-disk key it is stored under.
//!
//! Every write transaction gets one main revision; each change inside it gets the next sub
//! revision. The backend stores each version of a key under its revision, encoded exactly as
//! etcd encodes it: 8-byte big-endian main, `_`, 8-byte big-endian sub, and a trailing `t` when
//! the version is a tombstone. Big-endian numbers make byte order equal revision order, so a plain
//! scan of the column family walks history in the order it was written.

/// Length of an encoded revision key: main, separator, sub.
pub const REVISION_KEY_LEN: usize = 17;
/// Length of an encoded tombstone key: a revision key followed by [`TOMBSTONE_MARK`].
pub const TOMBSTONE_REVISION_KEY_LEN: usize = 18;

/// Byte between main and sub in an encoded key.
const SEPARATOR: u8 = b'_';
/// Byte appended to the key of a tombstone.
const TOMBSTONE_MARK: u8 = b't';

/// A point in the store's history: the transaction (`main`) and the change within it (`sub`).
///
/// Ordered by `main`, then `sub`. Both are non-negative: the byte encoding orders keys like
/// revisions only for non-negative values, and [`Revision::from_key`] rejects negative ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// The write transaction that made the change; one per applied transaction.
    pub main: i64,
    /// The change's position within its transaction, from 0.
    pub sub: i64,
}

/// Why bytes read from the backend are not a revision key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevisionKeyError {
    /// Neither [`REVISION_KEY_LEN`] nor [`TOMBSTONE_REVISION_KEY_LEN`] bytes.
    #[error("mvcc: revision key has {len} bytes, want {REVISION_KEY_LEN} or {TOMBSTONE_REVISION_KEY_LEN}")]
    BadLength {
        /// Length of the bytes given.
        len: usize,
    },
    /// Byte 8 is not `_`.
    #[error("mvcc: revision key has {found:#04x} between main and sub, want '_'")]
    BadSeparator {
        /// The byte found at offset 8.
        found: u8,
    },
    /// An 18-byte key whose last byte is not `t`.
    #[error("mvcc: revision key ends in {found:#04x}, want the tombstone mark 't'")]
    BadTombstoneMark {
        /// The byte found at offset 17.
        found: u8,
    },
    /// Main or sub decodes to a negative number, which no revision has.
    #[error("mvcc: revision key decodes to negative revision {main}_{sub}")]
    Negative {
        /// Decoded main revision.
        main: i64,
        /// Decoded sub revision.
        sub: i64,
    },
}

impl Revision {
    /// The revision of change `sub` in transaction `main`.
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// The backend key of the version written at this revision.
    pub fn to_key(self) -> [u8; REVISION_KEY_LEN] {
        let mut key = [0u8; REVISION_KEY_LEN];
        key[..8].copy_from_slice(&self.main.to_be_bytes());
        key[8] = SEPARATOR;
        key[9..].copy_from_slice(&self.sub.to_be_bytes());
        key
    }

    /// The backend key of a tombstone written at this revision.
    pub fn to_tombstone_key(self) -> [u8; TOMBSTONE_REVISION_KEY_LEN] {
        let mut key = [0u8; TOMBSTONE_REVISION_KEY_LEN];
        key[..REVISION_KEY_LEN].copy_from_slice(&self.to_key());
        key[REVISION_KEY_LEN] = TOMBSTONE_MARK;
        key
    }

    /// [`Revision::to_key`] or [`Revision::to_tombstone_key`], as a `Vec`.
    pub fn encode_key(self, tombstone: bool) -> Vec<u8> {
        if tombstone {
            self.to_tombstone_key().to_vec()
        } else {
            self.to_key().to_vec()
        }
    }

    /// Parses a key written by [`Revision::to_key`] or [`Revision::to_tombstone_key`].
    ///
    /// Returns the revision and whether the key marks a tombstone; any other length or shape,
    /// or a negative main or sub, is an error.
    pub fn from_key(bytes: &[u8]) -> Result<(Revision, bool), RevisionKeyError> {
        let tombstone = match bytes.len() {
            REVISION_KEY_LEN => false,
            TOMBSTONE_REVISION_KEY_LEN => true,
            len => return Err(RevisionKeyError::BadLength { len }),
        };
        if bytes[8] != SEPARATOR {
            return Err(RevisionKeyError::BadSeparator { found: bytes[8] });
        }
        if tombstone && bytes[REVISION_KEY_LEN] != TOMBSTONE_MARK {
            return Err(RevisionKeyError::BadTombstoneMark {
                found: bytes[REVISION_KEY_LEN],
            });
        }
        let mut main = [0u8; 8];
        main.copy_from_slice(&bytes[..8]);
        let mut sub = [0u8; 8];
        sub.copy_from_slice(&bytes[9..REVISION_KEY_LEN]);
        let (main, sub) = (i64::from_be_bytes(main), i64::from_be_bytes(sub));
        if main < 0 || sub < 0 {
            return Err(RevisionKeyError::Negative { main, sub });
        }
        Ok((Revision { main, sub }, tombstone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_layout_matches_etcd() {
        let key = Revision::new(0x0102, 3).to_key();
        assert_eq!(key, [0, 0, 0, 0, 0, 0, 1, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 3]);
        let tomb = Revision::new(0x0102, 3).to_tombstone_key();
        assert_eq!(&tomb[..REVISION_KEY_LEN], &key[..]);
        assert_eq!(tomb[REVISION_KEY_LEN], b't');
    }

    #[test]
    fn encode_key_picks_the_tombstone_form() {
        let rev = Revision::new(7, 1);
        assert_eq!(rev.encode_key(false), rev.to_key().to_vec());
        assert_eq!(rev.encode_key(true), rev.to_tombstone_key().to_vec());
    }

    #[test]
    fn from_key_rejects_bad_lengths() {
        let key = Revision::new(5, 2).to_tombstone_key();
        for len in [0, 1, 8, 9, 16, 19, 40] {
            let bytes = vec![0u8; len];
            assert_eq!(
                Revision::from_key(&bytes),
                Err(RevisionKeyError::BadLength { len })
            );
        }
        let mut long = key.to_vec();
        long.push(b't');
        assert_eq!(
            Revision::from_key(&long),
            Err(RevisionKeyError::BadLength { len: 19 })
        );
    }

    #[test]
    fn from_key_rejects_bad_shapes() {
        let mut key = Revision::new(5, 2).to_key();
        key[8] = b'-';
        assert_eq!(
            Revision::from_key(&key),
            Err(RevisionKeyError::BadSeparator { found: b'-' })
        );

        let mut tomb = Revision::new(5, 2).to_tombstone_key();
        tomb[REVISION_KEY_LEN] = b'x';
        assert_eq!(
            Revision::from_key(&tomb),
            Err(RevisionKeyError::BadTombstoneMark { found: b'x' })
        );

        let negative = Revision::new(-1, 0).to_key();
        assert_eq!(
            Revision::from_key(&negative),
            Err(RevisionKeyError::Negative { main: -1, sub: 0 })
        );
    }

    fn revision() -> impl Strategy<Value = Revision> {
        (0..=i64::MAX, 0..=i64::MAX).prop_map(|(main, sub)| Revision::new(main, sub))
    }

    /// Small values as well, so equal mains with different subs are common.
    fn small_revision() -> impl Strategy<Value = Revision> {
        (0i64..4, 0i64..4).prop_map(|(main, sub)| Revision::new(main, sub))
    }

    proptest! {
        #[test]
        fn key_round_trips(rev in revision(), tombstone in any::<bool>()) {
            prop_assert_eq!(Revision::from_key(&rev.to_key()), Ok((rev, false)));
            prop_assert_eq!(Revision::from_key(&rev.to_tombstone_key()), Ok((rev, true)));
            prop_assert_eq!(Revision::from_key(&rev.encode_key(tombstone)), Ok((rev, tombstone)));
        }

        #[test]
        fn key_order_is_revision_order(
            a in prop_oneof![revision(), small_revision()],
            b in prop_oneof![revision(), small_revision()],
        ) {
            prop_assert_eq!(a.to_key().cmp(&b.to_key()), a.cmp(&b));
            prop_assert_eq!(a.to_tombstone_key().cmp(&b.to_tombstone_key()), a.cmp(&b));
            // A tombstone sorts right after the plain key of its own revision and before any
            // later revision, so a scan still sees revisions in order.
            if a < b {
                prop_assert!(a.to_tombstone_key()[..] < b.to_key()[..]);
            }
            prop_assert!(a.to_key()[..] < a.to_tombstone_key()[..]);
        }
    }
}
