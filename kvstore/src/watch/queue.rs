//! The bounded queue of deliveries from the hub to one stream (etcd's per-stream `chan
//! WatchResponse` of 128), bounded by a message count and a byte budget. A delivery of events
//! to several watchers of the stream (a commit's event, shared by every watcher of the stream
//! that wants it) counts as one message per watcher, as their responses would in etcd's
//! channel, and may be admitted in part: the watchers that fit are queued, the rest refused.
//!
//! The hub pushes without ever waiting: a push that does not fit fails, and the hub sets the
//! watcher aside. The stream's session pops, and once a queue that refused a push has drained to
//! half of both bounds it wakes the hub's catch-up thread, which then resumes the set-aside
//! watchers from history. An empty queue accepts any one message, so a transaction larger than
//! the byte budget is still delivered: the queue holds at most the budget plus one message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

use super::event::EventBatch;
use super::watcher::WatcherKey;

/// One thing the hub tells a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// Events for one or more watchers of the stream, in revision order, whole transactions
    /// only; each watcher gets them in a response of its own.
    Events {
        /// The watchers they are for (at least one).
        watchers: Vec<WatcherKey>,
        /// The store's revision the delivery reflects (for the response header).
        rev: i64,
        /// The events; shared between the watchers of one commit.
        events: EventBatch,
    },
    /// The watcher's next revision was compacted away: it is cancelled and removed.
    Compacted {
        /// The watcher cancelled.
        watcher: WatcherKey,
        /// The compacted revision.
        compact_rev: i64,
        /// The store's revision at the time (for the response header).
        rev: i64,
    },
    /// Progress: every event up to `rev` has been delivered to the watcher (or, with `None`,
    /// to every watcher of the stream).
    Progress {
        /// The watcher, or `None` for the whole stream (`watch_id` -1).
        watcher: Option<WatcherKey>,
        /// The revision reached.
        rev: i64,
    },
}

impl Delivery {
    /// The messages this delivery counts against the queue's bound: one per response it makes.
    fn messages(&self) -> usize {
        match self {
            Delivery::Events { watchers, .. } => watchers.len(),
            _ => 1,
        }
    }

    /// The bytes each of its messages counts against the queue's budget.
    fn unit_cost(&self) -> usize {
        match self {
            Delivery::Events { events, .. } => {
                events.iter().map(|e| e.encoded_len() + 16).sum::<usize>() + 64
            }
            _ => 64,
        }
    }

    /// The bytes this delivery counts against the queue's budget.
    fn cost(&self) -> usize {
        self.unit_cost() * self.messages()
    }

    /// Splits off the messages from `at` on (only a delivery of events has more than one).
    fn split_off(&mut self, at: usize) -> Option<Delivery> {
        match self {
            Delivery::Events {
                watchers,
                rev,
                events,
            } if at < watchers.len() => Some(Delivery::Events {
                watchers: watchers.split_off(at),
                rev: *rev,
                events: Arc::clone(events),
            }),
            _ => None,
        }
    }
}

/// How large a stream's queue may grow.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Most deliveries queued (etcd's `chanBufLen`).
    pub messages: usize,
    /// Most bytes of events queued (one larger delivery is let into an empty queue).
    pub bytes: usize,
}

/// Wakes the hub's catch-up thread: a flag and a condition variable, so a wake-up sent while
/// the thread is busy is not lost.
#[derive(Debug, Default)]
pub struct Wakeup {
    /// Set by [`Wakeup::wake`], cleared by [`Wakeup::wait`].
    flag: Mutex<bool>,
    /// Signalled by [`Wakeup::wake`].
    cond: Condvar,
}

impl Wakeup {
    /// Wakes the waiting thread (or makes its next wait return at once).
    pub fn wake(&self) {
        *self.flag.lock() = true;
        self.cond.notify_one();
    }

    /// Waits until woken or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let mut flag = self.flag.lock();
        if !*flag {
            self.cond.wait_for(&mut flag, timeout);
        }
        *flag = false;
    }
}

/// The queue's contents; guarded by the queue's mutex.
#[derive(Debug, Default)]
struct Inner {
    /// Deliveries in the order pushed.
    items: VecDeque<Delivery>,
    /// Sum of the items' messages.
    messages: usize,
    /// Sum of the items' costs.
    bytes: usize,
    /// A push was refused since the queue last drained: wake the hub when it has.
    refused: bool,
}

/// The bounded queue of one stream.
#[derive(Debug)]
pub struct StreamQueue {
    /// The deliveries.
    inner: Mutex<Inner>,
    /// Wakes the stream's task when something is pushed.
    ready: Notify,
    /// The bounds.
    limits: QueueLimits,
    /// The hub's catch-up thread, woken when a queue that refused a push has drained.
    hub: Arc<Wakeup>,
}

impl StreamQueue {
    /// An empty queue with `limits`, waking `hub` when it drains after refusing a push.
    pub fn new(limits: QueueLimits, hub: Arc<Wakeup>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            limits,
            hub,
        }
    }

    /// Queues what fits of `delivery`; gives back the rest (all of it if nothing fit). Never
    /// waits.
    pub fn try_push(&self, delivery: Delivery) -> Result<(), Delivery> {
        let (admitted, refused) = self.admit(&mut self.inner.lock(), delivery);
        if admitted {
            self.ready.notify_one();
        }
        refused.map_or(Ok(()), Err)
    }

    /// Queues what fits of each of `deliveries`, in order, under one lock and with one wake-up
    /// of the stream's task (a commit's deliveries to the watchers of one stream arrive
    /// together, so the task handles them in one turn). Returns what did not fit. Never waits.
    pub fn try_push_all(&self, deliveries: Vec<Delivery>) -> Vec<Delivery> {
        let mut inner = self.inner.lock();
        let mut any = false;
        let mut refused = Vec::new();
        for delivery in deliveries {
            let (admitted, rest) = self.admit(&mut inner, delivery);
            any |= admitted;
            refused.extend(rest);
        }
        drop(inner);
        if any {
            self.ready.notify_one();
        }
        refused
    }

    /// Adds to the locked queue as many of `delivery`'s messages as fit (the first always fits
    /// an empty queue); returns whether any did, and the rest, remembering the refusal.
    fn admit(&self, inner: &mut Inner, mut delivery: Delivery) -> (bool, Option<Delivery>) {
        let unit = delivery.unit_cost().max(1);
        let message_room = self.limits.messages.max(1).saturating_sub(inner.messages);
        let byte_room = self.limits.bytes.saturating_sub(inner.bytes) / unit;
        let mut fit = delivery.messages().min(message_room).min(byte_room);
        if inner.items.is_empty() {
            fit = fit.max(1);
        }
        if fit == 0 {
            inner.refused = true;
            return (false, Some(delivery));
        }
        let rest = delivery.split_off(fit);
        if rest.is_some() {
            inner.refused = true;
        }
        inner.messages += delivery.messages();
        inner.bytes += delivery.cost();
        inner.items.push_back(delivery);
        (true, rest)
    }

    /// True if the queue is at or below half of both bounds: catching up a watcher of this
    /// stream is worth trying.
    pub fn has_room(&self) -> bool {
        let inner = self.inner.lock();
        Self::below_low_water(&inner, self.limits)
    }

    fn below_low_water(inner: &Inner, limits: QueueLimits) -> bool {
        inner.messages <= limits.messages / 2 && inner.bytes <= limits.bytes / 2
    }

    /// Number of messages queued (a delivery of events counts one per watcher).
    pub fn len(&self) -> usize {
        self.inner.lock().messages
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next delivery, if one is queued.
    pub fn try_pop(&self) -> Option<Delivery> {
        let mut inner = self.inner.lock();
        let item = inner.items.pop_front()?;
        inner.bytes -= item.cost();
        inner.messages -= item.messages();
        let wake_hub = inner.refused && Self::below_low_water(&inner, self.limits);
        if wake_hub {
            inner.refused = false;
        }
        drop(inner);
        if wake_hub {
            self.hub.wake();
        }
        Some(item)
    }

    /// Waits for the next delivery. Cancel-safe: nothing is taken from the queue until the
    /// delivery is returned.
    pub async fn pop(&self) -> Delivery {
        loop {
            let notified = self.ready.notified();
            if let Some(item) = self.try_pop() {
                return item;
            }
            notified.await;
            // Woken, usually by a commit: let the tasks already runnable go first. A commit wakes
            // its streams from the middle of the write path (the state machine's apply), and the
            // tasks that carry the write's answer back to its client queue behind every task
            // woken before them once tokio's LIFO slot is spent; a yielded task runs when its
            // worker has nothing else to do, or at the latest at its next maintenance tick.
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::SharedEvent;
    use kvstore_proto::mvccpb::{Event, KeyValue};

    fn events(n: usize, value_len: usize) -> Delivery {
        let ev = Arc::new(SharedEvent::new(Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                value: vec![0; value_len],
                ..KeyValue::default()
            }),
            prev_kv: None,
        }));
        Delivery::Events {
            watchers: vec![1],
            rev: 1,
            events: vec![ev; n].into(),
        }
    }

    /// A queue with these bounds, and the hub wake-up it signals.
    fn queue(messages: usize, bytes: usize) -> (StreamQueue, Arc<Wakeup>) {
        let hub = Arc::new(Wakeup::default());
        let q = StreamQueue::new(QueueLimits { messages, bytes }, Arc::clone(&hub));
        (q, hub)
    }

    #[test]
    fn queue_refuses_past_its_bounds_and_wakes_the_hub_when_drained() {
        let (q, hub) = queue(4, 1 << 20);
        for _ in 0..4 {
            assert!(q.try_push(events(1, 10)).is_ok());
        }
        assert!(q.try_push(events(1, 10)).is_err(), "message bound");
        assert!(!q.has_room());
        q.try_pop();
        assert!(!*hub.flag.lock(), "not drained to half yet");
        q.try_pop();
        assert!(
            *hub.flag.lock(),
            "drained to half after a refusal: hub woken"
        );
        assert!(q.has_room());
    }

    #[test]
    fn push_all_queues_what_fits_in_order_and_returns_the_rest() {
        let (q, _hub) = queue(3, 1 << 20);
        let numbered = |w| match events(1, 10) {
            Delivery::Events { rev, events, .. } => Delivery::Events {
                watchers: vec![w],
                rev,
                events,
            },
            other => other,
        };
        let refused = q.try_push_all((1..=5).map(numbered).collect());
        assert_eq!(refused, vec![numbered(4), numbered(5)]);
        let queued: Vec<Delivery> = std::iter::from_fn(|| q.try_pop()).collect();
        assert_eq!(queued, vec![numbered(1), numbered(2), numbered(3)]);
        assert!(
            q.try_push_all(vec![numbered(6)]).is_empty(),
            "room again once drained"
        );
    }

    /// `events(1, 10)` for these watchers.
    fn shared(watchers: std::ops::RangeInclusive<WatcherKey>) -> Delivery {
        match events(1, 10) {
            Delivery::Events { rev, events, .. } => Delivery::Events {
                watchers: watchers.collect(),
                rev,
                events,
            },
            other => other,
        }
    }

    #[test]
    fn a_shared_delivery_counts_each_watcher_and_is_admitted_in_part() {
        let (q, hub) = queue(4, 1 << 20);
        assert!(q.try_push(shared(1..=3)).is_ok());
        assert_eq!(q.len(), 3, "one message per watcher");
        let refused = q.try_push(shared(4..=6)).expect_err("only one more fits");
        assert_eq!(refused, shared(5..=6), "the watchers that did not fit");
        assert_eq!(q.len(), 4);
        assert_eq!(q.try_pop(), Some(shared(1..=3)));
        assert!(*hub.flag.lock(), "drained to half after a refusal");
        assert_eq!(q.try_pop(), Some(shared(4..=4)));
        assert!(q.is_empty());

        // The byte budget too: each watcher's share costs what a delivery of its own would.
        let unit = shared(1..=1).cost();
        let (q, _hub) = queue(100, 2 * unit);
        let refused = q.try_push_all(vec![shared(1..=5)]);
        assert_eq!(refused, vec![shared(3..=5)]);
        // An empty queue takes at least one watcher's share, whatever its size.
        let (q, _hub) = queue(100, unit / 2);
        assert_eq!(q.try_push(shared(1..=2)), Err(shared(2..=2)));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn queue_lets_one_oversized_delivery_into_an_empty_queue() {
        let (q, _hub) = queue(8, 1000);
        assert!(
            q.try_push(events(4, 1000)).is_ok(),
            "empty queue accepts anything"
        );
        assert!(q.try_push(events(1, 10)).is_err(), "byte bound");
        assert!(q.try_pop().is_some());
        assert!(q.is_empty());
    }
}
