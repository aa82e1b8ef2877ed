//! Starting `herald serve` as a child process and learning the address it
//! bound (it may listen on port 0): used by `herald bench --processes` and
//! by the crash tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

/// A running `herald serve` child; killed when dropped.
#[derive(Debug)]
pub struct ChildServer {
    pub child: Child,
    pub address: SocketAddr,
    /// Every line the process logged (up to [`MAX_LOG_LINES`]).
    log: Arc<Mutex<Vec<String>>>,
}

/// Log lines kept per child process.
pub const MAX_LOG_LINES: usize = 200_000;

impl ChildServer {
    /// Runs `program serve` with `env` (JSON logs are forced so the bound
    /// address can be read from the start-up line) and waits for it to listen.
    pub fn start(program: &Path, env: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_wrapped(&[], program, env)
    }

    /// Like [`ChildServer::start`], run through `wrapper` (a command and
    /// its arguments, such as `prlimit --nofile=1024`) when not empty.
    pub fn start_wrapped(
        wrapper: &[&str],
        program: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .arg("serve")
            .envs(env.iter().map(|(name, value)| (*name, value)))
            .env("HERALD_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (found, address) = std::sync::mpsc::channel();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut kept) = kept.lock() {
                    if kept.len() < MAX_LOG_LINES {
                        kept.push(line.clone());
                    }
                }
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if entry["fields"]["message"] == "Herald is listening" {
                    if let Some(Ok(address)) = entry["fields"]["address"].as_str().map(str::parse) {
                        let _ = found.send(address);
                    }
                }
            }
        });
        match address.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => Ok(Self {
                child,
                address,
                log,
            }),
            Err(_) => {
                let _ = child.kill();
                anyhow::bail!("herald serve did not report an address within 30 s")
            }
        }
    }

    /// What the process has logged so far (its stdout, JSON lines).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Asks the process to stop (SIGTERM: in-flight attempts finish) and
    /// waits for it to exit.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
