//! A stop signal shared by the schedule and the workloads.

use std::time::Duration;

/// Cancelled when the run's time is up (or on Ctrl-C).
#[derive(Clone)]
pub struct Stop(tokio::sync::watch::Sender<bool>);

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

impl Stop {
    /// A fresh signal.
    pub fn new() -> Self {
        Self(tokio::sync::watch::Sender::new(false))
    }

    /// Fires the signal.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Whether it has fired.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until it fires.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Sleeps for `d`; true if stopped meanwhile.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => self.is_stopped(),
            () = self.wait() => true,
        }
    }
}
