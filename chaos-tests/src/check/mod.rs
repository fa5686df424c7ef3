//! Checkers: each reads the history and reports what it found.
//!
//! - [`linear`]: linearizability of the register history (WGL search per key).
//! - [`append`]: Elle-style strict serializability of list-append transactions, and lost
//!   acknowledged appends.
//! - [`watch`]: watch guarantees (ordered, unique, atomic, no gaps, resumable, prev_kv,
//!   progress notifications never ahead).
//! - [`kube`]: optimistic concurrency and the reflector's cache.
//! - [`lease`]: keys do not outlive their leases by more than the TTL plus a bound.

pub mod append;
pub mod kube;
pub mod lease;
pub mod linear;
pub mod watch;

use serde::Serialize;

use crate::history::Entry;

/// The verdict of one checker.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The checker's name.
    pub checker: String,
    /// True if nothing wrong was found (and something was checked).
    pub valid: bool,
    /// How much was checked, e.g. "412 ops on 23 keys".
    pub checked: String,
    /// Each problem, human-readable, at most [`MAX_PROBLEMS`] of them.
    pub problems: Vec<String>,
}

/// Problems listed per checker (the count is always exact).
pub const MAX_PROBLEMS: usize = 20;

impl Verdict {
    /// A verdict from the problems found.
    pub fn new(checker: &str, checked: String, problems: Vec<String>) -> Self {
        let total = problems.len();
        let mut problems: Vec<String> = problems.into_iter().take(MAX_PROBLEMS).collect();
        if total > MAX_PROBLEMS {
            problems.push(format!("... and {} more", total - MAX_PROBLEMS));
        }
        Self {
            checker: checker.into(),
            valid: total == 0,
            checked,
            problems,
        }
    }
}

/// Runs every checker over a history.
pub fn check_all(entries: &[Entry]) -> Vec<Verdict> {
    vec![
        linear::check(entries),
        append::check(entries),
        watch::check(entries),
        kube::check(entries),
        lease::check(entries),
    ]
}
