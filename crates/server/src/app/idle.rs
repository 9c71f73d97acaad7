//! Closing idle HTTP/2 connections.
//!
//! hyper's HTTP/1.1 server closes a connection that sends no request headers within
//! `server.header_timeout` of connecting or of its previous response. Its HTTP/2 server
//! has no such limit: a client could open connections, or stop halfway through a request's
//! headers, and hold them for ever. Here an HTTP/2 connection that has had no request in
//! progress and sent nothing for `header_timeout` is asked to go away: the serving loop
//! has hyper send `GOAWAY` and close, so a client knows which of its requests were taken
//! and can retry the others on a new connection. A client that keeps the connection open
//! after that is cut off `header_timeout` later. A request counts as in progress until its
//! response body has been sent or dropped, so a quiet long response (server-sent events, a
//! long poll) keeps its connection.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests in progress on one connection.
#[derive(Clone, Default)]
pub(crate) struct InProgress(Arc<AtomicUsize>);

impl InProgress {
    /// Counts a request until the guard is dropped.
    pub(crate) fn enter(&self) -> RequestGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.0.clone())
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// One request in progress; see [`InProgress::enter`].
pub(crate) struct RequestGuard(Arc<AtomicUsize>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in progress until it ends or is
/// dropped.
pub(crate) struct GuardedBody {
    inner: Body,
    guard: Option<RequestGuard>,
}

impl GuardedBody {
    pub(crate) fn wrap(inner: Body, guard: RequestGuard) -> Body {
        Body::new(GuardedBody {
            inner,
            guard: Some(guard),
        })
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Raised once by [`IdleIo`] when its connection has been idle for its limit: the serving
/// loop then shuts the connection down gracefully.
#[derive(Default)]
pub(crate) struct GoAway(tokio::sync::Notify);

impl GoAway {
    /// Completes once the connection should go away.
    pub(crate) async fn requested(&self) {
        self.0.notified().await
    }
}

/// A connection's I/O that asks for the connection to go away once it is idle (nothing
/// read and no request in progress for `limit`), and reads as closed if it is still open
/// `limit` after that.
pub(crate) struct IdleIo<T> {
    io: T,
    in_progress: InProgress,
    limit: Duration,
    last_read: Instant,
    go_away: Arc<GoAway>,
    /// When [`GoAway`] was raised.
    asked_at: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleIo<T> {
    pub(crate) fn new(
        io: T,
        in_progress: InProgress,
        go_away: Arc<GoAway>,
        limit: Duration,
    ) -> Self {
        let now = Instant::now();
        IdleIo {
            io,
            in_progress,
            limit,
            last_read: now,
            go_away,
            asked_at: None,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    /// Whether the connection has been idle for its limit (since its last read, or since
    /// it was asked to go away: what a client sends after that does not count); otherwise
    /// arms the timer for when it next could be.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            let due = if self.in_progress.any() {
                now + self.limit
            } else {
                self.asked_at.unwrap_or(self.last_read) + self.limit
            };
            if due <= now {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.last_read = Instant::now();
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if !self.poll_idle(cx) {
                    return Poll::Pending;
                }
                if self.asked_at.is_none() {
                    tracing::debug!("an idle HTTP/2 connection is asked to go away");
                    let now = Instant::now();
                    self.asked_at = Some(now);
                    self.go_away.0.notify_one();
                    let due = now + self.limit;
                    self.timer.as_mut().reset(due);
                    // Registers the timer for the cut-off.
                    if !self.poll_idle(cx) {
                        return Poll::Pending;
                    }
                }
                tracing::debug!("cutting off an idle HTTP/2 connection that did not go away");
                // End of stream: hyper closes the connection.
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
