//! One `cartpulse serve` child process, for the benches and the black-box
//! tests alike: started on a loopback port with the arguments and
//! environment given, ready once `/readyz` answers 200, stopped with a
//! signal, and killed when dropped (also when a test's assertion fails).
//! Keys come from `cartpulse keys create`, run the same way.

use anyhow::{anyhow, bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How to start one `serve`.
#[derive(Clone, Debug)]
pub struct ServeCommand {
    exe: PathBuf,
    port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: bool,
    dir: Option<PathBuf>,
    clean: bool,
    log_file: Option<PathBuf>,
}

impl ServeCommand {
    /// `exe serve --listen 127.0.0.1:PORT`, on a free port, its log shown
    /// only when `TEST_LOG` is set (benches show it with [`Self::log`]);
    /// otherwise kept in a temporary file and quoted if the start fails.
    pub fn new(exe: impl AsRef<Path>) -> anyhow::Result<ServeCommand> {
        Ok(ServeCommand {
            exe: exe.as_ref().to_owned(),
            port: free_port()?,
            args: Vec::new(),
            env: Vec::new(),
            log: std::env::var_os("TEST_LOG").is_some(),
            dir: None,
            clean: false,
            log_file: None,
        })
    }

    /// Listens on `port` instead (a restart on the same address).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn envs<K: AsRef<str>, V: AsRef<str>>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self {
        self.env.extend(vars.into_iter().map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())));
        self
    }

    /// Whether the child's log goes to this process's stderr.
    pub fn log(mut self, show: bool) -> Self {
        self.log = show;
        self
    }

    /// Writes the child's log (stderr) to `path` instead (tests read it).
    pub fn log_to(mut self, path: impl AsRef<Path>) -> Self {
        self.log_file = Some(path.as_ref().to_owned());
        self
    }

    /// Runs it in `dir` (where `./cartpulse.toml` would be read).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Drops every `CARTPULSE_*` variable this process has, so only what is
    /// given here configures the child.
    pub fn without_inherited_config(mut self) -> Self {
        self.clean = true;
        self
    }

    /// Starts it; does not wait for readiness.
    pub fn spawn(&self) -> anyhow::Result<ServeProcess> {
        let mut cmd = Command::new(&self.exe);
        if self.clean {
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("CARTPULSE_") {
                    cmd.env_remove(k);
                }
            }
        }
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.args)
            .env("CARTPULSE_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            // A bench's report is its last stdout line: a child's stdout goes nowhere.
            .stdout(Stdio::null());
        // Without a log file of the caller's, a quiet child's log still goes
        // to a file of ours, so that a start that fails can say why.
        let (log_path, own_log) = match &self.log_file {
            Some(path) => (Some(path.clone()), false),
            None if self.log => (None, false),
            None => {
                // Unique per child: a restart on the same port must not
                // truncate, nor its predecessor's drop remove, its log.
                static SPAWNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir().join(format!("cartpulse-serve-{}-{n}.log", std::process::id()));
                (Some(path), true)
            }
        };
        cmd.stderr(match &log_path {
            Some(path) => {
                std::fs::File::create(path).with_context(|| format!("creating the log file {}", path.display()))?.into()
            }
            None => Stdio::inherit(),
        });
        let child = cmd.spawn().with_context(|| format!("starting {} serve", self.exe.display()))?;
        Ok(ServeProcess {
            child,
            port: self.port,
            base: format!("http://127.0.0.1:{}", self.port),
            what: self.describe(),
            log_path,
            own_log,
        })
    }

    /// Starts it and waits until it is ready (at most `limit`).
    pub async fn start(&self, limit: Duration) -> anyhow::Result<ServeProcess> {
        let mut p = self.spawn()?;
        p.wait_ready(limit).await?;
        Ok(p)
    }

    fn describe(&self) -> String {
        format!("serve {}", self.args.join(" "))
    }
}

/// A running `serve` child; killed when dropped.
pub struct ServeProcess {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    what: String,
    /// Where its stderr goes, if to a file.
    log_path: Option<PathBuf>,
    /// The file is ours (removed on drop), not the caller's.
    own_log: bool,
}

/// Lines of a failed start's log quoted in its error.
const LOG_TAIL_LINES: usize = 20;

impl ServeProcess {
    /// Waits until `/readyz` answers 200; fails at once if the process exits.
    pub async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited before it was ready ({status}); the end of its log:\n{}", self.what, self.log_tail());
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{} was not ready after {} s", self.what, limit.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of its log, or where to find it.
    fn log_tail(&self) -> String {
        let Some(path) = &self.log_path else { return "(on this process's stderr)".to_owned() };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            }
            Err(e) => format!("(reading {}: {e})", path.display()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`libc::SIGTERM`, `SIGSTOP`, …).
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        // SAFETY: kill(2) on a child this process spawned and has not reaped.
        if unsafe { libc::kill(self.pid() as libc::pid_t, signal) } != 0 {
            bail!("kill -{signal} {}: {}", self.pid(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM (what ECS sends), then waits up to `within` for the exit;
    /// SIGKILL and an error past it.
    pub async fn terminate(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        self.wait_exit(within).await
    }

    /// Waits up to `within` for the process to exit (after a signal sent
    /// with [`Self::signal`]); SIGKILL and an error past it.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill();
                bail!("{} (pid {}) did not exit within {} s", self.what, self.pid(), within.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
        if let (true, Some(path)) = (self.own_log, &self.log_path) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `exe keys create --scope SCOPE` on `db`; the key is the last stdout line.
pub fn create_key(exe: impl AsRef<Path>, db: &str, name: &str, scope: &str) -> anyhow::Result<String> {
    let exe = exe.as_ref();
    let out = Command::new(exe)
        .args(["keys", "create", "--name", name, "--scope", scope, "--database-url", db])
        .env("CARTPULSE_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} keys create", exe.display()))?;
    if !out.status.success() {
        bail!("`cartpulse keys create` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .ok_or_else(|| anyhow!("`cartpulse keys create` printed no key"))?
        .to_owned())
}

/// A port that was free a moment ago (the server binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}
