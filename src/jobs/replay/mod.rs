//! `cartpulse replay`: turns a data set (or synthetic traffic of our own) into
//! typed events and sends them to a running server through `POST /v1/events`,
//! the same way a shop would. It is how real data reaches the live actors, so
//! that online features and scores can be checked against offline ones, and it
//! doubles as a load generator.
//!
//! - [`shoppers`]: every row of the UCI Online Shoppers file as one session of
//!   page views whose live features equal the row's.
//! - [`retail`]: every invoice of the UCI Online Retail file as one
//!   `purchase` event with all its lines, at the invoice's time.
//! - [`synthetic`]: deterministic, seeded traffic with returning customers,
//!   carts and purchases.
//! - [`lake`]: the archived events of the data lake, as they were logged.
//! - [`sender`]: the HTTP sender (batching, per-customer ordering, retries,
//!   pacing, latency), shared with `cartpulse bench`.
//!
//! With `speedup` the replay follows the events' own clock, X times faster
//! than real time (see [`send_paced`]); without it, it goes as fast as the
//! server acknowledges.

pub mod cli;
pub mod lake;
pub mod retail;
pub mod sender;
pub mod shoppers;
pub mod synthetic;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actors::event::{CustomerId, Event, SessionId};
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use secrecy::SecretString;
use serde::Serialize;

use sender::{plan_batches, Sender, SenderConfig};

/// The events of one session of one customer, in the order they must be sent.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionEvents {
    pub customer: CustomerId,
    pub session: SessionId,
    pub events: Vec<Event>,
}

/// The layout of the file given with `--file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    /// UCI Online Shoppers Purchasing Intention CSV (see [`shoppers`]).
    Shoppers,
    /// UCI Online Retail transactions CSV (see [`retail`]).
    Retail,
}

/// What to replay and where to.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub format: ReplayFormat,
    /// The data file to replay (exclusive with `synthetic`).
    pub file: Option<PathBuf>,
    /// Replay this many synthetic sessions instead of a file.
    pub synthetic: Option<u64>,
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    pub target: url::Url,
    /// A key with `ingest` scope.
    pub api_key: SecretString,
    /// Pace the sending to about this many events per second.
    pub rate: Option<u32>,
    /// Replay at this many times real time by the events' own timestamps
    /// (`None`: as fast as possible).
    pub speedup: Option<f64>,
    /// Most events per request (default 500).
    pub batch_size: usize,
    /// Most requests in flight (default 4).
    pub concurrency: usize,
    /// Seed of the synthetic generator.
    pub seed: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// Batch size used when the CLI is not told otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 500;
/// Requests in flight when the CLI is not told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// What a replay did, printed as JSON by the CLI.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplaySummary {
    pub sessions: u64,
    pub events_sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    /// What the retail reader sent and skipped (retail format only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retail: Option<retail::RetailStats>,
    /// What was read from the lake (`--from-lake` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lake: Option<crate::lake::read::ReadStats>,
}

/// Loads (or generates) the sessions, sends them and sums up the server's
/// acknowledgements. Fails on a missing or bad input file, on a refused key or
/// request, and when the server stays unavailable past the retry budget.
pub async fn run(opts: ReplayOptions) -> anyhow::Result<ReplaySummary> {
    let (sessions, retail_stats) = load(&opts).await?;
    send(&opts, sessions, retail_stats).await
}

/// The sessions `opts` describes (a file read, or synthetic ones made), and
/// for the retail format what its reader sent and skipped, already printed.
pub async fn load(opts: &ReplayOptions) -> anyhow::Result<(Vec<SessionEvents>, Option<retail::RetailStats>)> {
    if let Some(x) = opts.speedup {
        if !(x.is_finite() && x > 0.0) {
            bail!("--speedup must be a positive number (got {x})");
        }
    }
    let (sessions, retail_stats) = load_sessions(opts).await?;
    if let Some(stats) = &retail_stats {
        // Before sending, so that what is left out is known even if the
        // server then fails.
        eprintln!("{stats}");
    }
    Ok((sessions, retail_stats))
}

/// Sends loaded sessions as `opts` says and sums up the acknowledgements.
pub async fn send(
    opts: &ReplayOptions,
    sessions: Vec<SessionEvents>,
    retail_stats: Option<retail::RetailStats>,
) -> anyhow::Result<ReplaySummary> {
    let n_sessions = sessions.len() as u64;
    let total_events: u64 = sessions.iter().map(|s| s.events.len() as u64).sum();

    let (sender, progress) = sender_for(opts, total_events)?;

    let started = Instant::now();
    let result = match opts.speedup {
        None => match plan_batches(sessions, opts.batch_size) {
            Ok(batches) => sender.send(batches).await,
            Err(e) => Err(e),
        },
        Some(x) => send_paced(&sender, sessions, x, opts.batch_size).await,
    };
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }
    let report = result?;
    let elapsed = started.elapsed();
    Ok(ReplaySummary {
        sessions: n_sessions,
        events_sent: report.events_sent,
        accepted: report.accepted,
        duplicates: report.duplicates,
        rejected: report.rejected,
        elapsed_s: elapsed.as_secs_f64(),
        events_per_s: per_second(report.events_sent, elapsed),
        retail: retail_stats,
        lake: None,
    })
}

/// The sender `opts` describes, and its progress bar (counting up to
/// `total_events`) when `opts.progress`.
pub(crate) fn sender_for(opts: &ReplayOptions, total_events: u64) -> anyhow::Result<(Sender, Option<ProgressBar>)> {
    let progress = if opts.progress { Some(progress_bar(total_events)?) } else { None };
    let mut config = SenderConfig::new(opts.target.clone(), opts.api_key.clone());
    config.concurrency = opts.concurrency;
    config.rate = opts.rate;
    config.progress = progress.clone();
    Ok((Sender::new(config)?, progress))
}

/// Wall-clock width of one paced window: sessions due within it go together.
const PACE_WINDOW: Duration = Duration::from_millis(100);

/// Sends the sessions following their own clock, `speedup` times faster:
/// a session is due `(its first event time − the first session's) / speedup`
/// after the start. Sessions are cut, in order, into windows of
/// [`PACE_WINDOW`] of wall time; each window waits until it is due, then goes
/// with the usual batching and concurrency, and the next starts once it is
/// acknowledged, which keeps every customer's events in order across windows.
/// A session dated earlier than the one before it joins the current window,
/// so inputs that are not in time order still go through, just not paced.
/// When the server falls behind, windows go back to back until caught up.
async fn send_paced(
    sender: &Sender,
    sessions: Vec<SessionEvents>,
    speedup: f64,
    batch_size: usize,
) -> anyhow::Result<sender::SendReport> {
    let t0 = sessions.iter().find_map(|s| s.events.first()).map(|e| e.time);
    let window_of = |s: &SessionEvents| -> u64 {
        match (t0, s.events.first()) {
            (Some(t0), Some(e)) => {
                let event_s = ((e.time - t0).num_milliseconds() as f64 / 1000.0).max(0.0);
                (event_s / speedup / PACE_WINDOW.as_secs_f64()) as u64
            }
            _ => 0,
        }
    };
    let started = tokio::time::Instant::now();
    let mut report: Option<sender::SendReport> = None;
    let mut window: Vec<SessionEvents> = Vec::new();
    let mut current = 0u64;
    let mut sessions = sessions.into_iter().peekable();
    while let Some(s) = sessions.next() {
        if window.is_empty() {
            current = current.max(window_of(&s));
        }
        window.push(s);
        let next_is_later = sessions.peek().is_none_or(|n| window_of(n) > current);
        if !next_is_later {
            continue;
        }
        // u64 windows of 100 ms: overflow would take billions of years.
        let due = started + PACE_WINDOW.saturating_mul(u32::try_from(current).unwrap_or(u32::MAX));
        tokio::time::sleep_until(due).await;
        let part = sender.send(plan_batches(std::mem::take(&mut window), batch_size)?).await?;
        match &mut report {
            Some(r) => r.merge(&part)?,
            None => report = Some(part),
        }
    }
    match report {
        Some(r) => Ok(r),
        None => sender.send(Vec::new()).await,
    }
}

/// The sessions to send, and the retail reader's counts for that format.
async fn load_sessions(opts: &ReplayOptions) -> anyhow::Result<(Vec<SessionEvents>, Option<retail::RetailStats>)> {
    match (&opts.file, opts.synthetic) {
        (Some(_), Some(_)) => bail!("give either a file or --synthetic N, not both"),
        (None, None) => bail!("nothing to replay: give a file (--file PATH) or --synthetic N"),
        (None, Some(n)) => {
            let cfg = synthetic::SyntheticConfig::new(n, opts.seed);
            // Generation is CPU-bound; keep it off the async workers.
            let sessions = tokio::task::spawn_blocking(move || synthetic::generate(&cfg))
                .await
                .context("synthetic generator panicked")?;
            Ok((sessions, None))
        }
        (Some(path), None) => {
            let path = path.clone();
            match opts.format {
                ReplayFormat::Shoppers => {
                    let sessions = tokio::task::spawn_blocking(move || shoppers::expand_file(&path))
                        .await
                        .context("shoppers reader panicked")??;
                    Ok((sessions, None))
                }
                ReplayFormat::Retail => {
                    let (sessions, stats) = tokio::task::spawn_blocking(move || retail::expand_file(&path))
                        .await
                        .context("retail reader panicked")??;
                    Ok((sessions, Some(stats)))
                }
            }
        }
    }
}

/// A stderr progress bar counting acknowledged events.
pub(crate) fn progress_bar(total_events: u64) -> anyhow::Result<ProgressBar> {
    let pb = ProgressBar::new(total_events);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} events  {per_sec}  ETA {eta}",
        )
        .context("progress bar template")?,
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    Ok(pb)
}

pub(crate) fn per_second(n: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}
