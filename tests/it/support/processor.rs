//! The real `feedback-webhooks` binary, run as a child process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::kafka::Topics;
use super::PATIENCE;

/// The binary under test: the one cargo built, or `FW_TEST_BIN` (a copy, so that long
/// runs are not disturbed by a rebuild).
pub fn bin() -> String {
    std::env::var("FW_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_feedback-webhooks").into())
}

/// Environment for a processor or CLI bound to one test's topics.
pub fn env_for(topics: &Topics, store: &Path, ca: &Path) -> Vec<(String, String)> {
    vec![
        (
            "FW_KAFKA__BOOTSTRAP_SERVERS".into(),
            topics.bootstrap.clone(),
        ),
        ("FW_KAFKA__GROUP_ID".into(), topics.group.clone()),
        (
            "FW_KAFKA__INPUT_TOPICS".into(),
            format!("[{}]", topics.input),
        ),
        ("FW_KAFKA__CONFIG_TOPIC".into(), topics.config.clone()),
        ("FW_KAFKA__OUTCOME_TOPIC".into(), topics.outcomes.clone()),
        // Each test's operational events on a topic of its own.
        (
            "FW_HEALTH__EVENTS_TOPIC".into(),
            format!("{}-operational", topics.input),
        ),
        ("FW_STORE__PATH".into(), store.display().to_string()),
        (
            "FW_DELIVERY__EXTRA_CA_FILE".into(),
            ca.display().to_string(),
        ),
        // The test receivers are on loopback, which the destination guard refuses by default.
        ("FW_DELIVERY__ALLOW_CIDRS".into(), "[127.0.0.1/32]".into()),
        // Quick retries keep tests short; the schedule itself is unit-tested.
        (
            "FW_DELIVERY__RETRY_SCHEDULE_SECS".into(),
            "[0.2, 0.2]".into(),
        ),
        // Several processors run at once: each takes a free port for its metrics and probes.
        ("FW_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
        // One partition per retry tier and for the redelivery topic: every test has its
        // own, and they add up on the local broker.
        ("FW_KAFKA__RETRY_PARTITIONS".into(), "1".into()),
        ("FW_LOG__FORMAT".into(), "json".into()),
        ("FW_LOG__FILTER".into(), "info".into()),
    ]
}

pub struct Processor {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Processor {
    /// Starts `feedback-webhooks run` and waits until it is processing input.
    pub fn start(env: &[(String, String)], log: PathBuf) -> Self {
        Self::start_with(env, log, None)
    }

    /// As [`Processor::start`], with a settings file (`--config`).
    pub fn start_with(env: &[(String, String)], log: PathBuf, config: Option<&Path>) -> Self {
        let mut p = Self::spawn(&["run"], env, log, config);
        p.wait_log("processing input", 1);
        p
    }

    /// Starts the binary with `args` (a subcommand), logging to `log`, without waiting.
    pub fn spawn(
        args: &[&str],
        env: &[(String, String)],
        log: PathBuf,
        config: Option<&Path>,
    ) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(bin());
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let child = command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("FW_CONFIG_FILE")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn processor");
        Processor {
            child: Some(child),
            log,
        }
    }

    /// The process's peak resident set size in MB (`VmHWM`), while it runs.
    pub fn peak_rss_mb(&self) -> f64 {
        let pid = self.child.as_ref().expect("running").id();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// The address of the processor's metrics and probes port (from its log).
    pub fn http_addr(&mut self) -> String {
        let line = self.wait_log("serving /metrics, /healthz and /readyz", 1);
        line[0]["fields"]["addr"]
            .as_str()
            .expect("addr in log")
            .to_owned()
    }

    /// The processor's log, one JSON object per line.
    pub fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Log lines whose message is `message`.
    pub fn messages(&self, message: &str) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|l| l["fields"]["message"] == message)
            .collect()
    }

    /// Waits until `message` was logged at least `n` times; fails if the process exits first.
    pub fn wait_log(&mut self, message: &str, n: usize) -> Vec<Value> {
        let until = Instant::now() + PATIENCE;
        loop {
            let found = self.messages(message);
            if found.len() >= n {
                return found;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "processor exited ({status}) before logging {message:?}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < until,
                "processor did not log {message:?} {n} times"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, if the process has ended on its own.
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_within(PATIENCE)
    }

    /// As [`Processor::stop`], waiting up to `patience`.
    pub fn stop_within(&mut self, patience: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let until = Instant::now() + patience;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= until {
                let stacks = self.log.with_extension("stacks.log");
                dump_pid_stacks(child.id(), &stacks);
                if let Some(dir) = self.log.parent() {
                    keep_logs(dir);
                }
                panic!("processor did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes where every thread of the process is (`gdb`, when installed) to `to`.
    pub fn dump_stacks(&self, to: &Path) {
        if let Some(pid) = self.pid() {
            dump_pid_stacks(pid, to);
        }
    }

    /// Waits for the process to exit on its own (failing after `PATIENCE`).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let until = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < until, "processor did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: no drain, no commit.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        let _ = child.wait();
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn dump_pid_stacks(pid: u32, to: &Path) {
    let out = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .output();
    if let Ok(out) = out {
        let _ = std::fs::write(to, out.stdout);
    }
}

/// Copies the `.log` files of `dir` to `$FAULTS_LOG_DIR`, if set, before a failure removes
/// them.
pub fn keep_logs(dir: &Path) {
    let Ok(target) = std::env::var("FAULTS_LOG_DIR") else {
        return;
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = Path::new(&target).join(name);
    let _ = std::fs::create_dir_all(&target);
    for file in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if file.path().extension().is_some_and(|e| e == "log") {
            let _ = std::fs::copy(file.path(), target.join(file.file_name()));
        }
    }
    eprintln!("logs kept in {}", target.display());
}

/// Runs a CLI command of the binary; returns (success, stdout, stderr).
pub fn cli(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("FW_CONFIG_FILE")
        .output()
        .expect("run CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
