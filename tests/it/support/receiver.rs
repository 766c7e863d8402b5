//! A real HTTPS receiver on loopback with a CA made for this test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use feedback_webhooks::receiver::{bind, serve, LocalCa, Received, Reply};

use super::PATIENCE;

type Responder = Box<dyn Fn(&Received) -> Reply + Send + Sync>;

pub struct TestReceiver {
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    received: Arc<Mutex<Vec<Received>>>,
    responder: Arc<Mutex<Responder>>,
    task: tokio::task::JoinHandle<()>,
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
        let task = tokio::spawn(serve(listener, ca.tls, handler));
        TestReceiver {
            addr,
            ca_file,
            received,
            responder,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn respond(&self, f: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
        *self.responder.lock().unwrap() = Box::new(f);
    }

    /// The requests so far; each body is checked against the payload schema.
    pub fn received(&self) -> Vec<Received> {
        let got = self.received.lock().unwrap().clone();
        for r in &got {
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
        self.task.abort();
    }
}
