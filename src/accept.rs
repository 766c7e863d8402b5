//! Accepting connections without spinning: the listeners of the admin API, the metrics
//! server and the test receiver share it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// A listener whose failed accepts (out of file descriptors and the like) pause before the
/// next try: retrying at once would spin a core until the condition passes.
pub struct Acceptor {
    listener: TcpListener,
    pause: Pause,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Self {
        Self {
            listener,
            pause: Pause::default(),
        }
    }

    /// The next connection. Cancel-safe, as `TcpListener::accept` is.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok(accepted) => {
                    self.pause.reset();
                    return accepted;
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
