//! Accepting connections within bounds: the listeners of the admin API, the operator port
//! and the test receiver share it. A failed accept pauses instead of spinning; a capped
//! listener holds at most so many connections (the next wait in the kernel's backlog); and
//! the HTTP servers close a connection that stays silent: through its TLS handshake
//! ([`HANDSHAKE`]) or before a request's header is complete ([`HEADER_READ`], which also
//! bounds an idle keep-alive connection).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// How long a TLS handshake may take, and how long a connection may then stay silent
/// before its first byte.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a request's header may take to arrive, counted from when the connection is
/// ready for it (so also how long a keep-alive connection may stay idle).
pub const HEADER_READ: Duration = Duration::from_secs(15);
/// HTTP/2: a ping this often on a quiet connection, closed when unanswered this long.
const H2_PING: Duration = Duration::from_secs(30);
const H2_PING_ANSWER: Duration = Duration::from_secs(10);

/// The HTTP/1.1 and HTTP/2 server of every listener, with the deadlines above.
pub fn http_server() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING)
        .keep_alive_timeout(H2_PING_ANSWER);
    builder
}

/// A connection that must say something soon: until its first byte arrives, a read waits
/// at most `within` (then fails, and the server closes the connection). It covers what
/// comes before the HTTP server's own header deadline, which starts only once the server
/// knows the protocol: reading the first bytes to tell HTTP/1.1 from HTTP/2.
pub struct FirstBytes<I> {
    io: I,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> FirstBytes<I> {
    pub fn new(io: I, within: Duration) -> Self {
        FirstBytes {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytes<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(read) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(read)
            }
            Poll::Pending => {
                let expired = match &mut this.deadline {
                    Some(deadline) => deadline.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if expired {
                    let silent = std::io::Error::new(std::io::ErrorKind::TimedOut, "no request");
                    return Poll::Ready(Err(silent));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstBytes<I> {
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

/// A place among a capped listener's connections, given back when dropped.
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
}

/// A listener whose failed accepts (out of file descriptors and the like) pause before the
/// next try: retrying at once would spin a core until the condition passes.
pub struct Acceptor {
    listener: TcpListener,
    pause: Pause,
    slots: Option<Arc<Semaphore>>,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Self {
        Self {
            listener,
            pause: Pause::default(),
            slots: None,
        }
    }

    /// An acceptor that holds at most `max` connections at once.
    pub fn capped(listener: TcpListener, max: usize) -> Self {
        Self {
            slots: Some(Arc::new(Semaphore::new(max.max(1)))),
            ..Self::new(listener)
        }
    }

    /// The next connection, and its place (keep it while the connection is open).
    /// Cancel-safe, as `TcpListener::accept` is.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, Slot) {
        let permit = match &self.slots {
            Some(slots) => slots.clone().acquire_owned().await.ok(),
            None => None,
        };
        let slot = Slot { _permit: permit };
        loop {
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    self.pause.reset();
                    return (tcp, peer, slot);
                }
                Err(e) => {
                    warn!(error = %e, "accepting a connection failed; backing off");
                    tokio::time::sleep(self.pause.next()).await;
                }
            }
        }
    }
}

/// Pause after a failed accept: 10 ms, doubling up to 1 s, reset by a success.
#[derive(Default)]
struct Pause(Option<Duration>);

impl Pause {
    fn next(&mut self) -> Duration {
        let next = self
            .0
            .map_or(Duration::from_millis(10), |d| d.saturating_mul(2))
            .min(Duration::from_secs(1));
        self.0 = Some(next);
        next
    }

    fn reset(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_says_nothing_in_time_is_ended_and_one_that_does_is_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (_client, server) = tokio::io::duplex(64);
        let mut silent = FirstBytes::new(server, Duration::from_secs(15));
        let mut buf = [0u8; 8];
        let started = tokio::time::Instant::now();
        let ended = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(ended.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(15));

        let (mut client, server) = tokio::io::duplex(64);
        let mut talking = FirstBytes::new(server, Duration::from_secs(15));
        client.write_all(b"G").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 1);
        // Past its first byte, the HTTP server's own deadlines apply: reads wait.
        let later = tokio::time::timeout(Duration::from_secs(60), talking.read(&mut buf)).await;
        assert!(later.is_err(), "still waiting after 60 s");
    }

    #[test]
    fn failed_accepts_back_off_up_to_a_second_and_a_success_resets() {
        let mut b = Pause::default();
        assert_eq!(b.next(), Duration::from_millis(10));
        assert_eq!(b.next(), Duration::from_millis(20));
        for _ in 0..20 {
            b.next();
        }
        assert_eq!(b.next(), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(10));
    }
}
