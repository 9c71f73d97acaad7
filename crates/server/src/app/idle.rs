//! Closing connections that hold on without a request.
//!
//! An HTTP/1.1 connection must send each request's headers within `server.header_timeout`
//! of connecting or of its previous response's end; one that does not (it sends nothing,
//! or trickles its headers a byte at a time) reads as closed, and hyper closes it. This is
//! hyper's own `header_read_timeout`, done here lazily: hyper's arms a fresh timer for
//! every request (an allocation and a timer-wheel insert and removal each), this one
//! moves a single timer per connection only when it fires, and notes the time a response
//! ends.
//!
//! hyper's HTTP/2 server has no such limit: a client could open connections, or stop
//! halfway through a request's headers, and hold them for ever. Here an HTTP/2 connection
//! that has had no request in progress and sent nothing for `header_timeout` is asked to go
//! away: the serving loop has hyper send `GOAWAY` and close, so a client knows which of its
//! requests were taken and can retry the others on a new connection. A client that keeps
//! the connection open after that is cut off `header_timeout` later.
//!
//! On both, a request counts as in progress until its response body has been sent or
//! dropped, so a quiet long response (server-sent events, a long poll) keeps its
//! connection; an HTTP/1.1 connection switched to another protocol (a WebSocket) is no
//! longer HTTP's to time.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests in progress on one connection, and when the last one ended.
#[derive(Clone)]
pub(crate) struct InProgress(Arc<Requests>);

struct Requests {
    count: AtomicUsize,
    /// The connection now speaks another protocol (HTTP/1.1 `101 Switching Protocols`).
    switched: AtomicBool,
    /// When the connection was opened: [`Requests::ended`] counts from it.
    opened: Instant,
    /// When the last request in progress ended, in nanoseconds after `opened`.
    ended: AtomicU64,
}

impl Default for InProgress {
    fn default() -> Self {
        InProgress(Arc::new(Requests {
            count: AtomicUsize::new(0),
            switched: AtomicBool::new(false),
            opened: Instant::now(),
            ended: AtomicU64::new(0),
        }))
    }
}

impl InProgress {
    /// Counts a request until the guard is dropped.
    pub(crate) fn enter(&self) -> RequestGuard {
        self.0.count.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.0.clone())
    }

    fn any(&self) -> bool {
        self.0.count.load(Ordering::Relaxed) > 0 || self.0.switched.load(Ordering::Relaxed)
    }

    /// When the connection was opened, or its last request ended.
    fn idle_since(&self) -> Instant {
        self.0.opened + Duration::from_nanos(self.0.ended.load(Ordering::Relaxed))
    }
}

/// One request in progress; see [`InProgress::enter`].
pub(crate) struct RequestGuard(Arc<Requests>);

impl RequestGuard {
    /// Marks the request's connection as switched to another protocol (its answer is
    /// `101 Switching Protocols`): no longer timed.
    pub(crate) fn switched(&self) {
        self.0.switched.store(true, Ordering::Relaxed);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            let since = self.0.opened.elapsed().as_nanos();
            self.0
                .ended
                .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
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

/// Raised once by [`IdleIo`] when its HTTP/2 connection has been idle for its limit: the
/// serving loop then shuts the connection down gracefully.
#[derive(Default)]
pub(crate) struct GoAway(tokio::sync::Notify);

impl GoAway {
    /// Completes once the connection should go away.
    pub(crate) async fn requested(&self) {
        self.0.notified().await
    }
}

/// A connection's I/O that times the connection while it has no request in progress (see
/// the module's documentation for each protocol's rule).
pub(crate) struct IdleIo<T> {
    io: T,
    in_progress: InProgress,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    /// HTTP/2's idle state; `None` on HTTP/1.1.
    h2: Option<Http2Idle>,
}

/// What an HTTP/2 connection's idleness is judged by.
struct Http2Idle {
    last_read: Instant,
    go_away: Arc<GoAway>,
    /// When [`GoAway`] was raised.
    asked_at: Option<Instant>,
}

impl<T> IdleIo<T> {
    /// An HTTP/1.1 connection's I/O: it reads as closed once the connection has had no
    /// request in progress for `limit` (since it opened or its last response ended).
    pub(crate) fn http1(io: T, in_progress: InProgress, limit: Duration) -> Self {
        let timer = Box::pin(tokio::time::sleep_until(in_progress.0.opened + limit));
        IdleIo {
            io,
            in_progress,
            limit,
            timer,
            h2: None,
        }
    }

    /// An HTTP/2 connection's I/O: it asks for the connection to go away once it is idle
    /// (nothing read and no request in progress for `limit`), and reads as closed if it is
    /// still open `limit` after that.
    pub(crate) fn http2(
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
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
            h2: Some(Http2Idle {
                last_read: now,
                go_away,
                asked_at: None,
            }),
        }
    }

    /// Whether the connection has been idle for its limit (`since`: when it last was not);
    /// otherwise arms the timer for when it next could be. The timer is moved only when it
    /// fires, so a busy connection costs one timer per `limit`, not one per request.
    fn poll_idle(&mut self, cx: &mut Context<'_>, since: Instant) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            let due = if self.in_progress.any() {
                now + self.limit
            } else {
                since + self.limit
            };
            if due <= now {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
    }

    /// A read found nothing on an HTTP/1.1 connection: end of stream once the client has
    /// had `limit` to send a request's headers (hyper then closes the connection). The timer
    /// is kept armed while a request is in progress too: hyper may read (and find nothing)
    /// before it writes the response's end, and not read again until something wakes it.
    fn http1_waiting(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.poll_idle(cx, self.in_progress.idle_since()) {
            return Poll::Pending;
        }
        tracing::debug!("an HTTP/1.1 client sent no request headers in time: closing");
        Poll::Ready(Ok(()))
    }

    /// A read found nothing on an HTTP/2 connection: asks it to go away once idle, and
    /// reads as closed once it has stayed `limit` after that.
    fn http2_waiting(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(since) = self.h2.as_ref().map(|h| h.asked_at.unwrap_or(h.last_read)) else {
            return Poll::Pending;
        };
        if !self.poll_idle(cx, since) {
            return Poll::Pending;
        }
        let Some(h2) = self.h2.as_mut() else {
            return Poll::Pending;
        };
        if h2.asked_at.is_none() {
            tracing::debug!("an idle HTTP/2 connection is asked to go away");
            let now = Instant::now();
            h2.asked_at = Some(now);
            h2.go_away.0.notify_one();
            self.timer.as_mut().reset(now + self.limit);
            // Registers the timer for the cut-off.
            if !self.poll_idle(cx, now) {
                return Poll::Pending;
            }
        }
        tracing::debug!("cutting off an idle HTTP/2 connection that did not go away");
        // End of stream: hyper closes the connection.
        Poll::Ready(Ok(()))
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
                // What an HTTP/1.1 client sends does not extend its time.
                if let Some(h2) = self.h2.as_mut() {
                    h2.last_read = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.h2.is_some() => self.http2_waiting(cx),
            Poll::Pending => self.http1_waiting(cx),
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
