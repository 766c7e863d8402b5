//! A real HTTPS receiver on loopback with a CA made for this test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use feedback_webhooks::receiver::{bind, serve_until, Handler, LocalCa, Received, Reply};

use super::PATIENCE;

type Responder = Box<dyn Fn(&Received) -> Reply + Send + Sync>;

pub struct TestReceiver {
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    received: Arc<Mutex<Vec<Received>>>,
    responder: Arc<Mutex<Responder>>,
    tls: Arc<rustls::ServerConfig>,
    handler: Handler,
    stop: tokio::sync::watch::Sender<bool>,
}

impl TestReceiver {
    /// Starts a receiver answering 200, writing its CA certificate into `dir`.
    pub async fn start(dir: &Path) -> Self {
        let ca = LocalCa::generate(&["localhost", "127.0.0.1"]).expect("test CA");
        let ca_file = dir.join("receiver-ca.pem");
        std::fs::write(&ca_file, &ca.ca_pem).expect("write CA");
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.expect("bind");
        let received = Arc::new(Mutex::new(Vec::new()));
        let responder: Arc<Mutex<Responder>> =
            Arc::new(Mutex::new(Box::new(|_| Reply::status(200))));
        let handler = {
            let received = received.clone();
            let responder = responder.clone();
            Arc::new(move |r: &Received| {
                received.lock().unwrap().push(r.clone());
                (responder.lock().unwrap())(r)
            })
        };
        let handler: Handler = handler;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(serve_until(
            listener,
            ca.tls.clone(),
            handler.clone(),
            stopped,
        ));
        TestReceiver {
            addr,
            ca_file,
            received,
            responder,
            tls: ca.tls,
            handler,
            stop,
        }
    }

    /// Closes the listener and every connection: connections are refused until
    /// [`TestReceiver::come_back`].
    pub fn go_down(&mut self) {
        let _ = self.stop.send(true);
    }

    /// Listens again on the same port.
    pub async fn come_back(&mut self) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (listener, _) = bind(self.addr).await.expect("bind the same port again");
        tokio::spawn(serve_until(
            listener,
            self.tls.clone(),
            self.handler.clone(),
            stopped,
        ));
        self.stop = stop;
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn respond(&self, f: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
        *self.responder.lock().unwrap() = Box::new(f);
    }

    /// The requests to `path` so far, as they came (not checked as feedback payloads).
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        let got = self.received.lock().unwrap();
        got.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// The requests so far; each body is checked against the payload schema.
    pub fn received(&self) -> Vec<Received> {
        let got = self.received.lock().unwrap().clone();
        // Notifications (to `/ops`) are checked by `notify::verify`.
        for r in got.iter().filter(|r| !r.path.starts_with("/ops")) {
            let body: serde_json::Value = serde_json::from_slice(&r.body).expect("payload is JSON");
            super::assert_schema(feedback_webhooks::schema::Kind::Payload, &body);
        }
        got
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let until = Instant::now() + PATIENCE;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < until,
                "only {} of {n} requests arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
