//! The upstream call's time limit (`gateway.timeout`), kept by the serving loop's
//! once-a-second tick instead of a timer per request.
//!
//! `tokio::time::timeout` puts a timer in the event loop's timer wheel for every proxied
//! request and takes it out again when the answer comes (~700 instructions a request, in a
//! profile). Here a request waiting on its upstream lists its deadline and waker with its
//! thread; the upstream pool's sweep (`upstream::sweep_kept`, every second on each serving
//! event loop) wakes those whose deadline has passed, and they answer `504 Gateway
//! Timeout`. A request whose upstream answers at once is never listed. The limit is kept to
//! within a second after it falls due.
//!
//! Only a thread whose event loop runs the sweep and keeps every task it spawns (a
//! current-thread runtime: each of `server.workers` has one) lists deadlines; anywhere else
//! (a multi-threaded runtime, where a task may move between threads; a runtime serving no
//! connections) the limit is tokio's timer, as before.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The limit passed before the upstream answered.
#[derive(Debug, PartialEq, Eq)]
pub struct Elapsed;

struct Entry {
    at: Instant,
    waker: Waker,
    passed: bool,
}

/// One thread's listed deadlines: a slot per waiting request, reused once it is done.
#[derive(Default)]
struct Deadlines {
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
}

impl Deadlines {
    /// Lists a new deadline; its slot.
    fn list(&mut self, entry: Entry) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(entry);
                i
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        }
    }

    /// Whether slot `i`'s deadline has passed, its waker brought up to date.
    fn passed(&mut self, i: usize, waker: &Waker) -> bool {
        match &mut self.slots[i] {
            Some(e) => {
                if !e.waker.will_wake(waker) {
                    e.waker = waker.clone();
                }
                e.passed
            }
            // Only the request's own drop empties its slot.
            None => true,
        }
    }
}

thread_local! {
    /// Whether this thread's event loop runs the sweep ([`Sweeping`]).
    static SWEPT: Cell<bool> = const { Cell::new(false) };
    static DEADLINES: RefCell<Deadlines> = RefCell::new(Deadlines::default());
}

/// Held by the sweep while it runs on a current-thread event loop: the thread lists
/// deadlines for as long as it lives.
pub struct Sweeping(());

impl Sweeping {
    /// Marks this thread as swept, when its runtime keeps every task on it; `None` (and
    /// tokio's timers) otherwise.
    pub fn start() -> Option<Sweeping> {
        let flavor = tokio::runtime::Handle::try_current().ok()?.runtime_flavor();
        if flavor != tokio::runtime::RuntimeFlavor::CurrentThread || SWEPT.with(Cell::get) {
            return None;
        }
        SWEPT.with(|s| s.set(true));
        Some(Sweeping(()))
    }

    /// Wakes every listed request whose deadline is `now` or earlier (once each).
    pub fn tick(&self, now: Instant) {
        let due: Vec<Waker> = DEADLINES.with(|d| {
            let mut d = d.borrow_mut();
            d.slots
                .iter_mut()
                .flatten()
                .filter(|e| !e.passed && e.at <= now)
                .map(|e| {
                    e.passed = true;
                    e.waker.clone()
                })
                .collect()
        });
        // Woken outside the borrow: a waker may run code that lists or drops a deadline.
        for w in due {
            w.wake();
        }
    }
}

impl Drop for Sweeping {
    fn drop(&mut self) {
        SWEPT.with(|s| s.set(false));
        // Nothing would wake what is still listed: all of it is woken, to go on under
        // tokio's timer.
        let all: Vec<Waker> = DEADLINES.with(|d| {
            let d = d.borrow();
            d.slots.iter().flatten().map(|e| e.waker.clone()).collect()
        });
        for w in all {
            w.wake();
        }
    }
}

/// `fut`'s output, or [`Elapsed`] once `limit` has passed (see the module documentation).
/// `fut` is pinned where it is (the caller's future): only this small one moves.
pub fn within<F: Future>(limit: Duration, fut: Pin<&mut F>) -> Within<'_, F> {
    Within {
        inner: fut,
        at: Instant::now() + limit,
        slot: None,
        timer: None,
    }
}

/// An upstream call with its time limit ([`within`]): listed with its deadline while it
/// waits on a swept thread, on tokio's timer anywhere else (or from when the sweep stops).
pub struct Within<'f, F: Future> {
    inner: Pin<&'f mut F>,
    at: Instant,
    slot: Option<usize>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(out) = self.inner.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if self.timer.is_none() && !SWEPT.with(Cell::get) {
            self.timer = Some(Box::pin(tokio::time::sleep_until(self.at.into())));
        }
        let this = &mut *self;
        let passed = match (&mut this.timer, this.slot) {
            (Some(t), _) => t.as_mut().poll(cx).is_ready(),
            (None, Some(i)) => DEADLINES.with(|d| d.borrow_mut().passed(i, cx.waker())),
            (None, None) => {
                let entry = Entry {
                    at: this.at,
                    waker: cx.waker().clone(),
                    passed: false,
                };
                this.slot = Some(DEADLINES.with(|d| d.borrow_mut().list(entry)));
                false
            }
        };
        if passed {
            Poll::Ready(Err(Elapsed))
        } else {
            Poll::Pending
        }
    }
}

impl<F: Future> Drop for Within<'_, F> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            // During a thread's teardown the list may be gone already: nothing to free.
            let _ = DEADLINES.try_with(|d| {
                let mut d = d.borrow_mut();
                d.slots[i] = None;
                d.free.push(i);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fut` within `secs` seconds, as the proxy calls it.
    async fn limited<F: Future>(secs: u64, fut: F) -> Result<F::Output, Elapsed> {
        let fut = std::pin::pin!(fut);
        within(Duration::from_secs(secs), fut).await
    }

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    }

    /// On a swept thread: an answer in time passes through; one that never comes is
    /// `Elapsed` at the first tick past its deadline, not before; its slot is freed.
    #[test]
    fn a_listed_deadline_passes_at_the_first_tick_after_it() {
        current_thread().block_on(async {
            let sweep = Sweeping::start().expect("a current-thread runtime is swept");
            assert_eq!(limited(5, async { 7 }).await, Ok(7));
            let start = Instant::now();
            let waiting = tokio::spawn(limited(2, std::future::pending::<()>()));
            tokio::task::yield_now().await;
            sweep.tick(start + Duration::from_secs(1));
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished(), "woken before its deadline");
            sweep.tick(start + Duration::from_secs(3));
            assert_eq!(waiting.await.unwrap(), Err(Elapsed));
            let slots = DEADLINES.with(|d| {
                let d = d.borrow();
                (d.slots.iter().flatten().count(), d.free.len())
            });
            assert_eq!(slots, (0, 1), "the slot is freed, and kept for reuse");
        });
    }

    /// When the sweep stops, a request still waiting goes on under tokio's timer with the
    /// same deadline; a thread not swept uses tokio's timer throughout.
    #[test]
    fn without_the_sweep_the_limit_is_tokios_timer() {
        current_thread().block_on(async {
            let sweep = Sweeping::start().unwrap();
            let waiting = tokio::spawn(limited(30, std::future::pending::<()>()));
            tokio::task::yield_now().await;
            drop(sweep);
            // The paused clock runs ahead to the timer's deadline.
            assert_eq!(waiting.await.unwrap(), Err(Elapsed));
            let fell = limited(30, std::future::pending::<()>()).await;
            assert_eq!(fell, Err(Elapsed));
        });
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        multi.block_on(async { assert!(Sweeping::start().is_none()) });
    }
}
