//! The load processes of `bench ws` (`bench ws-worker`, hidden): each holds
//! its share of the clients and reports over stdin/stdout lines; [`Workers`]
//! is the bench's handle on them.

use super::{now_us, raise_fd_limit, WorkerArgs};
use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
/// The load processes of one phase.
pub(super) struct Workers {
    procs: Vec<(Child, ChildStdin, tokio::io::Lines<BufReader<ChildStdout>>)>,
}

impl Workers {
    /// `n` load processes, spread round-robin over the servers at `bases`.
    pub(super) async fn spawn(
        bases: &[String],
        key: &SecretString,
        n: usize,
        clients: usize,
        topic: &str,
    ) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe()?;
        let mut procs = Vec::new();
        let mut first = 0;
        for w in 0..n {
            let share = clients / n + usize::from(w < clients % n);
            let url = format!("{}/v1/stream", bases[w % bases.len()].replacen("http://", "ws://", 1));
            let mut child = Command::new(&exe)
                .args(["bench", "ws-worker", "--url", &url, "--topic", topic])
                .args(["--clients", &share.to_string(), "--first", &first.to_string()])
                .env("CARTPULSE_BENCH_KEY", key.expose_secret())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            first += share;
            let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
            let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
            procs.push((child, stdin, BufReader::new(stdout).lines()));
        }
        Ok(Workers { procs })
    }

    async fn line(lines: &mut tokio::io::Lines<BufReader<ChildStdout>>) -> anyhow::Result<String> {
        tokio::time::timeout(Duration::from_secs(300), lines.next_line())
            .await
            .context("a load process stopped answering")??
            .ok_or_else(|| anyhow!("a load process exited"))
    }

    /// Waits until every worker has connected its clients; total connected.
    pub(super) async fn ready(&mut self) -> anyhow::Result<u64> {
        let mut total = 0;
        for (_, _, lines) in &mut self.procs {
            let l = Self::line(lines).await?;
            let n: u64 =
                l.strip_prefix("ready ").and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("bad line {l:?}"))?;
            total += n;
        }
        Ok(total)
    }

    /// Sends a command to every worker and sums their numeric answers.
    pub(super) async fn sum(&mut self, cmd: &str) -> anyhow::Result<u64> {
        for (_, stdin, _) in &mut self.procs {
            stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        }
        let mut total = 0;
        for (_, _, lines) in &mut self.procs {
            let l = Self::line(lines).await?;
            total += l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        Ok(total)
    }

    /// Every (customer, n_events, receipt µs) the workers saw.
    pub(super) async fn records(&mut self) -> anyhow::Result<Vec<(usize, u32, i64)>> {
        for (_, stdin, _) in &mut self.procs {
            stdin.write_all(b"records\n").await?;
        }
        let mut out = Vec::new();
        for (_, _, lines) in &mut self.procs {
            loop {
                let l = Self::line(lines).await?;
                if l == "end" {
                    break;
                }
                let mut it = l.split_whitespace().skip(1).map(|v| v.parse::<i64>());
                if let (Some(Ok(c)), Some(Ok(n)), Some(Ok(t))) = (it.next(), it.next(), it.next()) {
                    out.push((c as usize, n as u32, t));
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn quit(mut self) {
        for (_, stdin, _) in &mut self.procs {
            let _ = stdin.write_all(b"quit\n").await;
        }
        for (child, _, _) in &mut self.procs {
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.start_kill();
            }
        }
    }
}

// ------------------------------------------------------------------ worker

/// What one load process has seen.
#[derive(Default)]
struct Seen {
    data: AtomicU64,
    pongs: AtomicU64,
    records: Mutex<Vec<(usize, u32, i64)>>,
}

/// `cartpulse bench ws-worker`: connects its clients, then answers the
/// bench's commands on stdin (`count`, `ping`, `records`, `quit`).
pub fn worker_cli(args: WorkerArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(worker(args))
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let key = std::env::var("CARTPULSE_BENCH_KEY").context("CARTPULSE_BENCH_KEY")?;
    let seen = Arc::new(Seen::default());
    let (ping_tx, ping_rx) = tokio::sync::watch::channel(0u32);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let connected = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut handles = Vec::with_capacity(args.clients);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    for i in 0..args.clients {
        let topic =
            if args.topic == "kpis" { "kpis".to_owned() } else { format!("customer:{}{}", args.topic, args.first + i) };
        let index = args.first + i;
        let (url, key, seen, gate, ready_tx) =
            (args.url.clone(), key.clone(), seen.clone(), gate.clone(), ready_tx.clone());
        let (mut ping_rx, mut stop_rx, connected) = (ping_rx.clone(), stop_rx.clone(), connected.clone());
        handles.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let ws = connect_client(&url, &key, &topic).await;
            drop(permit);
            let Ok(mut ws) = ws else {
                let _ = ready_tx.send(false);
                return;
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let _ = ready_tx.send(true);
            let latency = topic.starts_with("customer:");
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if t.starts_with("{\"topic\":\"_") {
                                if t.contains("\"pong\"") {
                                    seen.pongs.fetch_add(1, Ordering::Relaxed);
                                }
                                continue;
                            }
                            seen.data.fetch_add(1, Ordering::Relaxed);
                            if latency {
                                let at = now_us();
                                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
                                    if let Some(n) = v["data"]["open_session"]["n_events"].as_u64() {
                                        if let Ok(mut r) = seen.records.lock() {
                                            r.push((index, n as u32, at));
                                        }
                                    }
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    Ok(()) = ping_rx.changed() => {
                        let _ = ws.send(Message::text(r#"{"type":"ping"}"#)).await;
                    }
                    _ = stop_rx.changed() => {
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            }
        }));
    }
    drop(ready_tx);
    let mut done = 0;
    while done < args.clients {
        match ready_rx.recv().await {
            Some(_) => done += 1,
            None => break,
        }
    }
    let mut out = tokio::io::stdout();
    out.write_all(format!("ready {}\n", connected.load(Ordering::Relaxed)).as_bytes()).await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut generation = 0u32;
    while let Some(cmd) = lines.next_line().await? {
        match cmd.trim() {
            "count" => out.write_all(format!("count {}\n", seen.data.load(Ordering::Relaxed)).as_bytes()).await?,
            "ping" => {
                let before = seen.pongs.load(Ordering::Relaxed);
                generation += 1;
                let _ = ping_tx.send(generation);
                let want = connected.load(Ordering::Relaxed);
                let deadline = Instant::now() + Duration::from_secs(20);
                while seen.pongs.load(Ordering::Relaxed) - before < want && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                out.write_all(format!("pong {}\n", seen.pongs.load(Ordering::Relaxed) - before).as_bytes()).await?;
            }
            "records" => {
                let records = seen.records.lock().map(|r| r.clone()).unwrap_or_default();
                let mut buf = String::with_capacity(records.len() * 24);
                for (c, n, t) in records {
                    buf.push_str(&format!("r {c} {n} {t}\n"));
                }
                buf.push_str("end\n");
                out.write_all(buf.as_bytes()).await?;
            }
            "quit" => break,
            _ => {}
        }
        out.flush().await?;
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(handles)).await;
    Ok(())
}

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_client(url: &str, key: &str, topic: &str) -> anyhow::Result<Client> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("Authorization", format!("Bearer {key}").parse()?);
    // Small buffers: thousands of clients per process.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let mut last = None;
    for attempt in 0..5u64 {
        match tokio_tungstenite::connect_async_with_config(req.clone(), Some(config), true).await {
            Ok((mut ws, _)) => {
                ws.send(Message::text(serde_json::json!({"type": "subscribe", "topics": [topic]}).to_string())).await?;
                // Wait for the confirmation so `ready` means subscribed.
                while let Some(m) = ws.next().await {
                    if let Message::Text(t) = m? {
                        if t.contains("\"subscribed\"") {
                            return Ok(ws);
                        }
                    }
                }
                bail!("closed before subscribing");
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
    Err(anyhow!("connect failed: {:?}", last))
}
