//! Keys and values: zero-padded decimal keys of `--key-size` bytes over `--key-space-size`
//! keys, picked at random or in order; values of `--val-size` bytes, optionally stamped with
//! the wall-clock time of the put so a watcher can measure put-to-event latency.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::Rng;

/// How keys are chosen.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Prefix before the number (empty for the plain workloads).
    pub prefix: String,
    /// Width the number is padded to, so the whole key is `--key-size` bytes.
    pub width: usize,
    /// Number of distinct keys.
    pub space: u64,
    /// Walk keys in order of the operation number instead of at random.
    pub sequential: bool,
}

impl Keys {
    /// Keys of `size` bytes in total, with the given prefix.
    pub fn new(prefix: &str, size: usize, space: u64, sequential: bool) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            width: size.saturating_sub(prefix.len()),
            space: space.max(1),
            sequential,
        }
    }

    /// The key with index `i` (taken modulo the key space).
    pub fn at(&self, i: u64) -> Vec<u8> {
        format!("{}{:0w$}", self.prefix, i % self.space, w = self.width).into_bytes()
    }

    /// The key for operation `n`: the n-th in order, or a random one.
    pub fn pick(&self, n: u64, rng: &mut SmallRng) -> Vec<u8> {
        if self.sequential {
            self.at(n)
        } else {
            self.at(rng.random_range(0..self.space))
        }
    }

    /// The end of the range holding every key with this prefix (etcd's `--prefix`).
    pub fn prefix_end(&self) -> Vec<u8> {
        prefix_end(self.prefix.as_bytes())
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A value of `size` bytes (at least 8) starting with the current time, for watch latency.
pub fn stamped_value(size: usize) -> Vec<u8> {
    let mut v = vec![b'v'; size.max(8)];
    v[..8].copy_from_slice(&now_nanos().to_be_bytes());
    v
}

/// The put time stamped into a value by [`stamped_value`], if it carries one.
pub fn stamp_of(value: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn keys_have_the_requested_size_and_stay_in_the_space() {
        let keys = Keys::new("/p/", 12, 100, false);
        let mut rng = SmallRng::seed_from_u64(1);
        for n in 0..1000 {
            let k = keys.pick(n, &mut rng);
            assert_eq!(k.len(), 12);
            let i: u64 = std::str::from_utf8(&k[3..])
                .expect("ascii")
                .parse()
                .expect("a number");
            assert!(i < 100);
        }
        assert_eq!(Keys::new("", 4, 10, true).at(13), b"0003");
    }

    #[test]
    fn prefix_end_covers_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }

    #[test]
    fn stamps_round_trip() {
        let v = stamped_value(16);
        assert_eq!(v.len(), 16);
        let t = stamp_of(&v).expect("a stamp");
        assert!(now_nanos() >= t);
    }
}
