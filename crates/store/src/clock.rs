//! Where a hot store reads the time: the system clock, or (in tests) a clock that stands
//! still until it is moved by hand, so that TTL checks need no sleeps.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{from_ms, now_ms, to_ms};

/// The time source of a store's expiry checks. [`StoreClock::system`] (the default) reads
/// the system clock; [`StoreClock::manual`] stands still at its start until
/// [`StoreClock::advance`] moves it, and clones share one position.
#[derive(Clone, Debug, Default)]
pub struct StoreClock(Option<Arc<AtomicI64>>);

impl StoreClock {
    /// The system clock.
    pub fn system() -> Self {
        StoreClock(None)
    }

    /// A clock standing at `start` (to the millisecond) until moved.
    pub fn manual(start: DateTime<Utc>) -> Self {
        StoreClock(Some(Arc::new(AtomicI64::new(to_ms(&start)))))
    }

    /// Whether this clock is moved by hand.
    pub fn is_manual(&self) -> bool {
        self.0.is_some()
    }

    /// Now, to the millisecond.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            None => now_ms(),
            Some(ms) => from_ms(ms.load(Ordering::SeqCst)),
        }
    }

    /// Moves a manual clock forward by `by`; the system clock cannot be moved and is left
    /// alone.
    pub fn advance(&self, by: Duration) {
        if let Some(ms) = &self.0 {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            ms.fetch_add(by, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let start = now_ms();
        let c = StoreClock::manual(start);
        let shared = c.clone();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), start);
        shared.advance(Duration::from_millis(1500));
        assert_eq!(c.now(), start + chrono::Duration::milliseconds(1500));
        assert!(c.is_manual() && !StoreClock::system().is_manual());
    }
}
