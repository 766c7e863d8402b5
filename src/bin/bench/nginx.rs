//! nginx (Debian's `nginx-light`) as the receiver, the web server most receivers sit
//! behind, configured as a receiver's would be: TLS, `return 200`, nginx's own defaults
//! otherwise (a connection serves at most 1,000 requests, 128 HTTP/2 streams at once, every
//! request logged as it ends), HTTP/2 offered or not; and wrk (Debian) as the POST limit
//! against it, with the same body.
//!
//! nginx's access log is the receipt: each line has the time of the request, the port and the
//! connection it came on, its protocol and its `webhook-id`, so the harness counts deliveries, their
//! latency, the connections opened and the protocol from it.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use feedback_webhooks::receiver::LocalCa;

/// How nginx serves.
#[derive(Debug, Clone, Copy)]
pub struct NginxOptions {
    /// HTTP/2 offered in TLS (ALPN) beside HTTP/1.1.
    pub http2: bool,
    pub workers: usize,
    /// Ports (hosts) to serve, each with the same paths.
    pub hosts: usize,
    /// `/t0` answers 503 (a failing tenant).
    pub failing_t0: bool,
    /// `/t0` never answers (a hanging tenant): proxied to a listener that never replies.
    pub hanging_t0: Option<u16>,
}

pub struct Nginx {
    child: Child,
    pub ports: Vec<u16>,
    log: PathBuf,
    /// The wall clock and the monotonic one at the same moment, to turn the log's times
    /// into `Instant`s.
    epoch: (SystemTime, Instant),
}

/// One request in nginx's log.
pub struct Logged {
    pub at: Instant,
    /// The port (host) it came to.
    pub port: u16,
    pub connection: u64,
    pub protocol: String,
    pub status: u16,
    pub webhook_id: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Nginx {
    /// Starts nginx in `dir` with `ca`'s server certificate; waits until it listens.
    pub fn start(dir: &Path, ca: &LocalCa, o: NginxOptions) -> Nginx {
        let dir = dir.join("nginx");
        std::fs::create_dir_all(dir.join("logs")).expect("nginx dir");
        std::fs::write(dir.join("cert.pem"), &ca.cert_pem).expect("cert");
        std::fs::write(dir.join("key.pem"), &ca.key_pem).expect("key");
        let ports: Vec<u16> = (0..o.hosts.max(1)).map(|_| free_port()).collect();
        let log = dir.join("access.log");
        let http2 = if o.http2 { " http2" } else { "" };
        let t0 = if o.failing_t0 {
            "location = /t0 { return 503; }".to_owned()
        } else if let Some(port) = o.hanging_t0 {
            format!(
                "location = /t0 {{ proxy_pass http://127.0.0.1:{port}; proxy_read_timeout 3600s; }}"
            )
        } else {
            String::new()
        };
        let servers: String = ports
            .iter()
            .map(|port| {
                format!(
                    "server {{ listen 127.0.0.1:{port} ssl{http2}; \
                     ssl_certificate {cert}; ssl_certificate_key {key}; \
                     ssl_session_cache shared:SSL:10m; \
                     access_log {log} bench; \
                     client_max_body_size 2m; {t0} location / {{ return 200; }} }}\n",
                    cert = dir.join("cert.pem").display(),
                    key = dir.join("key.pem").display(),
                    log = log.display(),
                )
            })
            .collect();
        let conf = format!(
            "daemon off;\nworker_processes {workers};\npid {pid};\nerror_log {err} warn;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n log_format bench '$msec $server_port $connection $server_protocol $status $http_webhook_id';\n \
             keepalive_timeout 75s;\n\
             {servers}}}\n",
            workers = o.workers.max(1),
            pid = dir.join("nginx.pid").display(),
            err = dir.join("error.log").display(),
        );
        let conf_file = dir.join("nginx.conf");
        std::fs::write(&conf_file, conf).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_file)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx (Debian package nginx-light: scripts/deps installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while ports
            .iter()
            .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
        {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            ports,
            log,
            epoch: (SystemTime::now(), Instant::now()),
        }
    }

    fn instant_of(&self, msec: f64) -> Instant {
        let (wall, mono) = self.epoch;
        let wall_secs = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let offset = msec - wall_secs;
        if offset >= 0.0 {
            mono + Duration::from_secs_f64(offset)
        } else {
            mono.checked_sub(Duration::from_secs_f64(-offset))
                .unwrap_or(mono)
        }
    }

    /// Follows the access log from its start, calling `each` for every request, until
    /// `stop` is set (then reads what is left once more).
    pub fn follow(
        self: &Arc<Self>,
        stop: Arc<std::sync::atomic::AtomicBool>,
        mut each: impl FnMut(Logged) + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut offset = 0;
            let mut partial = String::new();
            loop {
                let stopping = stop.load(std::sync::atomic::Ordering::Relaxed);
                if let Ok(mut file) = std::fs::File::open(&me.log) {
                    if file.seek(SeekFrom::Start(offset)).is_ok() {
                        let mut reader = BufReader::new(file);
                        let mut line = String::new();
                        while let Ok(n) = reader.read_line(&mut line) {
                            if n == 0 {
                                break;
                            }
                            offset += n as u64;
                            if !line.ends_with('\n') {
                                partial.push_str(&line);
                                line.clear();
                                continue;
                            }
                            let whole = std::mem::take(&mut partial) + &line;
                            line.clear();
                            if let Some(logged) = me.parse(&whole) {
                                each(logged);
                            }
                        }
                    }
                }
                if stopping {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    }

    fn parse(&self, line: &str) -> Option<Logged> {
        let mut parts = line.split_whitespace();
        let msec: f64 = parts.next()?.parse().ok()?;
        let port = parts.next()?.parse().ok()?;
        let connection: u64 = parts.next()?.parse().ok()?;
        let protocol = parts.next()?.to_owned();
        let status = parts.next()?.parse().ok()?;
        let webhook_id = parts.next()?.to_owned();
        Some(Logged {
            at: self.instant_of(msec),
            port,
            connection,
            protocol,
            status,
            webhook_id,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT is nginx's graceful stop; the workers exit with the master.
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listener that accepts connections and never answers (the hanging tenant behind
/// nginx). Returns its port; it lives as long as the task.
pub async fn black_hole() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

/// wrk's POST rate against `url` with `body`: 2 threads, `connections` HTTP/1.1 keep-alive
/// connections, `secs` seconds. wrk trusts any certificate, as a load tool does.
pub fn wrk_post_rate(dir: &Path, url: &str, body: &str, connections: usize, secs: u64) -> f64 {
    let script = dir.join("post.lua");
    let escaped = body.replace('\\', "\\\\").replace('"', "\\\"");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = \"{escaped}\"\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"webhook-id\"] = \"wrk-0\"\n"
        ),
    )
    .expect("post.lua");
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk (Debian package wrk: scripts/deps installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk gave no rate:\n{text}"))
}
