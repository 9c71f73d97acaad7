//! Telling a serving loop's connections that the server stops, and waiting until they have
//! all ended (the drain on shutdown).
//!
//! A connection's task is woken for every request it reads and every response it writes,
//! and each wake polls what the connection waits on, the stop signal included. A tokio
//! `watch`/`Notify` future takes its channel's lock on every such poll; [`Stopping`]
//! registers the task's waker once and is afterwards one atomic load per poll.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// One serving loop's stop signal and count of open connections.
#[derive(Default)]
pub(crate) struct Drain {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    stopping: AtomicBool,
    open: Mutex<Open>,
    /// Told when the last connection ends after the stop.
    all_ended: tokio::sync::Notify,
}

/// The connections still open, each with the waker its [`Stopping`] registered (none until
/// it is first polled, and none once the stop has woken it).
#[derive(Default)]
struct Open {
    next: u64,
    wakers: HashMap<u64, Option<Waker>>,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, Open> {
        // A panic while holding the lock leaves the map as valid as before it.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drain {
    /// A new connection's stop signal; the connection counts as open until it is dropped.
    pub(crate) fn connection(&self) -> Stopping {
        let mut open = self.shared.open();
        let id = open.next;
        open.next += 1;
        open.wakers.insert(id, None);
        Stopping {
            shared: self.shared.clone(),
            id,
            registered: None,
        }
    }

    /// Tells every connection, open now or opened later, that the server stops, and waits
    /// until every one has ended.
    pub(crate) async fn stop_and_wait(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let ended = self.shared.all_ended.notified();
        tokio::pin!(ended);
        // Registered before the count is read: a connection ending after this point wakes it.
        ended.as_mut().enable();
        let wakers: Vec<Waker> = {
            let mut open = self.shared.open();
            if open.wakers.is_empty() {
                return;
            }
            open.wakers.values_mut().filter_map(Option::take).collect()
        };
        wakers.into_iter().for_each(Waker::wake);
        ended.await;
    }
}

/// Completes once the server stops. Dropping it ends the connection's count as open.
pub(crate) struct Stopping {
    shared: Arc<Shared>,
    id: u64,
    /// The waker registered with the drain, kept to see whether a poll brings another.
    registered: Option<Waker>,
}

impl Future for Stopping {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let waker = cx.waker().clone();
        if let Some(slot) = self.shared.open().wakers.get_mut(&self.id) {
            *slot = Some(waker.clone());
        }
        self.registered = Some(waker);
        // The stop stores its flag before taking the lock to wake: read after the lock, the
        // flag is either seen here or this waker is woken.
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Stopping {
    fn drop(&mut self) {
        let mut open = self.shared.open();
        open.wakers.remove(&self.id);
        if open.wakers.is_empty() && self.shared.stopping.load(Ordering::SeqCst) {
            self.shared.all_ended.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_stop_wakes_every_waiting_connection_and_the_drain_ends_with_the_last() {
        let drain = Drain::default();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let mut stopping = drain.connection();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tasks.push((
                tokio::spawn(async move {
                    (&mut stopping).await;
                    // Ends only when told, as a connection finishing its last response,
                    // and counts as open until then.
                    let _ = rx.await;
                    drop(stopping);
                }),
                tx,
            ));
        }
        tokio::task::yield_now().await;
        let stop = tokio::spawn(async move { drain.stop_and_wait().await });
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(!stop.is_finished(), "the drain ended with connections open");
        for (task, tx) in tasks {
            let _ = tx.send(());
            task.await.unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), stop)
            .await
            .expect("the drain did not end after the last connection")
            .unwrap();
    }

    #[tokio::test]
    async fn a_connection_opened_after_the_stop_is_told_at_once() {
        let drain = Drain::default();
        drain.stop_and_wait().await;
        let late = drain.connection();
        tokio::time::timeout(std::time::Duration::from_secs(5), late)
            .await
            .expect("a connection opened after the stop was not told");
    }
}
