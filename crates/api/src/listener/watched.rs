//! What the listener wraps around each connection and request: the socket
//! (first byte of a request head, stalled writes), the request body (its
//! pause and rate limits) and the answer's body (the connection stays busy
//! until it is written).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::Connection;

/// Marks the connection busy while alive.
#[derive(Debug)]
pub(super) struct Busy(pub(super) Arc<Connection>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// An answer's body, which keeps its connection counted busy until it has
/// been written (or dropped).
pub(super) struct Counted {
    body: Body,
    _busy: Busy,
}

impl Counted {
    /// `body`, keeping the connection busy until it has been written.
    pub(super) fn body(body: Body, busy: Busy) -> Body {
        Body::new(Self { body, _busy: busy })
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails once it pauses longer than `pause`, or once
/// it falls below `min_rate` on average after `pause` from its start.
pub(super) struct Timed {
    body: Incoming,
    connection: Arc<Connection>,
    pause: Duration,
    min_rate: u64,
    started: Option<Instant>,
    received: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Timed {
    /// `body`, failing once it stalls (see [`Timed`]).
    pub(super) fn body(
        body: Incoming,
        connection: Arc<Connection>,
        pause: Duration,
        min_rate: u64,
    ) -> Body {
        Body::new(Self {
            body,
            connection,
            pause,
            min_rate,
            started: None,
            received: 0,
            timer: None,
        })
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        let started = self.started.unwrap_or(now);
        let by_pause = now + self.pause;
        if self.min_rate == 0 {
            return by_pause;
        }
        let by_rate = started
            + self.pause
            + Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        by_pause.min(by_rate)
    }
}

#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimeout {}

impl HttpBody for Timed {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                // The timer is moved when it exists; a body that never
                // has to be waited for never makes one.
                let deadline = this.next_deadline(Instant::now());
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Box::new(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.next_deadline(Instant::now());
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                let expired = timer.as_mut().poll(cx).is_ready();
                if expired {
                    this.connection
                        .body_timed_out
                        .store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, watched: notes the first byte of each request head, and
/// fails a write that makes no progress for `send_timeout`.
pub(super) struct Watched {
    stream: TcpStream,
    connection: Arc<Connection>,
    send_timeout: Duration,
    stalled_write: Option<Pin<Box<Sleep>>>,
}

impl Watched {
    pub(super) fn new(
        stream: TcpStream,
        connection: Arc<Connection>,
        send_timeout: Duration,
    ) -> Self {
        Self {
            stream,
            connection,
            send_timeout,
            stalled_write: None,
        }
    }

    fn write_progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.stalled_write = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.send_timeout;
                let timer = self
                    .stalled_write
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading its answer",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.connection.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.write_progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.write_progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.write_progress(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
