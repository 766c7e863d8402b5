//! Accepting connections within bounds: the listeners of the admin API, the operator port
//! and the test receiver share it. A failed accept pauses instead of spinning; a capped
//! listener holds at most so many connections (the next wait in the kernel's backlog); and
//! the HTTP servers close a connection that stays silent: through its TLS handshake
//! ([`HANDSHAKE`]) or before a request's header is complete ([`HEADER_READ`], which also
//! bounds an idle keep-alive connection).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// How long a TLS handshake may take.
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
