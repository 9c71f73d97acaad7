//! The directory's connections ([`super::ldap::Directory`]): at most `ldap.pool_size` open
//! at once, kept open between sign-ins and lent to one sign-in at a time. A connection
//! remembers whom it is bound as ([`Bound`]), so that the next sign-in binds it as the
//! service account again before searching with it: a user's bind never carries over to
//! the next caller. One the directory closed (a restart, its idle timeout) is noticed when
//! lent, or when its first operation fails, and replaced.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

/// Whom a connection is bound as now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Nobody yet, or a user (or a failed bind): never searched with as it is.
    NotService,
    /// The service account (search-then-bind).
    Service,
}

/// One connection to the directory.
pub struct Conn {
    /// Its handle (driven by its own task, which ends when the handle is dropped).
    pub ldap: ldap3::Ldap,
    /// Whom it is bound as.
    pub bound: Bound,
}

/// The pool.
pub struct Pool {
    slots: Semaphore,
    size: usize,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    /// A pool of at most `size` connections (at least one).
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Pool {
            slots: Semaphore::new(size),
            size,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Its size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The right to hold one connection, waiting at most `wait` for one to be free.
    pub async fn slot(&self, wait: Duration) -> Option<SemaphorePermit<'_>> {
        tokio::time::timeout(wait, self.slots.acquire())
            .await
            .ok()?
            .ok()
    }

    /// A kept connection still open, if any (those the directory closed are dropped).
    pub fn idle(&self) -> Option<Conn> {
        let mut idle = self.lock();
        while let Some(mut c) = idle.pop() {
            if !c.ldap.is_closed() {
                return Some(c);
            }
        }
        None
    }

    /// Keeps `conn` for the next sign-in.
    pub fn put(&self, conn: Conn) {
        let mut idle = self.lock();
        if idle.len() < self.size {
            idle.push(conn);
        }
    }

    /// Drops every kept connection (one of them turned out broken: the others were very
    /// likely opened to the same directory process).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}
