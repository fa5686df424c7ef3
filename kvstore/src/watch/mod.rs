//! Watch: every committed transaction's changes, fanned out to the watchers that want them.
//!
//! The store calls the [`WatchHub`] once per committed transaction, in revision order, while it
//! still holds its writer lock; the hub only enqueues. Each watcher is in one of three states,
//! as in etcd's watchable store:
//!
//! - **synced**: it has seen everything up to the hub's revision and gets each commit's events
//!   straight from the commit, found through a [`group::WatcherGroup`] (exact keys in a map,
//!   ranges by start key) so a commit never scans every watcher;
//! - **unsynced**: its next revision is in the past (it asked for a start revision in the past);
//!   a background thread reads the missing history from RocksDB in bounded batches and moves it
//!   to synced, under the hub lock, once it has caught up with the hub's revision;
//! - **victim**: its stream's bounded queue was full when a commit was dispatched; it stops
//!   receiving live events, remembers only the revision it missed, and is caught up from history
//!   like an unsynced watcher once its stream's queue has drained.
//!
//! Memory per stream is bounded by its [`queue::StreamQueue`] (a message count and a byte
//! budget) and by the size of one history batch; nothing else is buffered per watcher.
//!
//! # Layout
//! - [`watcher`]: one watcher's key range, filters, next revision and state.
//! - [`event`]: a committed event shared by the watchers it goes to, encoded once.
//! - [`group`]: watchers grouped by exact key and by range, for matching a changed key.
//! - [`queue`]: the bounded queue of deliveries from the hub to one stream.
//! - [`hub`]: [`WatchHub`], registration, live dispatch, progress, streams.
//! - [`sync`]: the catch-up thread that brings unsynced and victim watchers back to synced.

pub mod event;
pub mod group;
pub mod hub;
pub mod queue;
pub mod sync;
pub mod watcher;

pub use event::{EventBatch, SharedEvent};
pub use hub::{HubConfig, HubStream, Registered, WatchHub};
pub use queue::Delivery;
pub use watcher::{Filters, WatchSpec, WatcherKey, WatcherState};
