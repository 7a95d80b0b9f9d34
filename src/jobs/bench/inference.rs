//! `cartpulse bench inference`: the inference pool under load, with a real
//! model and real rows of the UCI file.
//!
//! 1. Baseline: the model called directly on one thread, batches of 256
//!    (no pool, no messaging), rows/s.
//! 2. Closed loop through the pool at request sizes 1, 32 and 256 with many
//!    requests in flight: rows/s and per-request latency p50/p99.
//! 3. Open loop: single-row requests at a fixed rate (10,000/s by default),
//!    each timed from its scheduled send time, so a stall is not hidden by
//!    the generator waiting for it (no coordinated omission): p50/p99, and
//!    where the time went per stage (the generator's own lateness, queueing
//!    for a worker, forward pass, reply delivery). Run twice: once with the
//!    generator on a thread of its own sleeping to each due time (the
//!    figure that counts), once on a tokio timer of the bench's runtime,
//!    whose 1 ms granularity sends the requests in bursts of rate/1000.
//!
//! Prints a table to stderr and one JSON object as the last stdout line.

use crate::serving::inference::messages::{Prediction, Stages};
use crate::serving::inference::telemetry::InferenceMetrics;
use crate::serving::inference::{InferenceHandle, PoolSettings, ServingSet};
use actors::features::ShoppersFeatures;
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct InferenceBenchOptions {
    pub model: PathBuf,
    pub data: PathBuf,
    pub seconds: f64,
    pub rate: u64,
    pub pool: PoolSettings,
}

#[derive(Serialize)]
struct Closed {
    batch: usize,
    in_flight: usize,
    predictions_per_s: f64,
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Serialize)]
struct Open {
    generator: &'static str,
    target_rps: u64,
    achieved_rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    /// Latency from the request's actual submission (without the
    /// generator's own lateness, "send lag").
    from_submit_p50_ms: f64,
    from_submit_p99_ms: f64,
    /// Mean rows per batch the requests were scored in.
    mean_batch_rows: f64,
    /// Where the time went, p50/p99 in ms per stage.
    stages: Vec<Stage>,
}

#[derive(Serialize)]
struct Stage {
    stage: &'static str,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Generator {
    /// Tokio timer on the bench's runtime (1 ms granularity: requests leave in bursts).
    TokioTimer,
    /// A thread of its own sleeping to each request's due time.
    Thread,
}

#[derive(Serialize)]
struct Report {
    model_version: String,
    workers: usize,
    max_batch: usize,
    baseline_direct_predictions_per_s: f64,
    closed_loop: Vec<Closed>,
    open_loop: Open,
    open_loop_tokio_timer: Open,
    /// Pool rows/s at batch 256 over the direct baseline: what the pool's
    /// messaging and parallelism add or cost.
    pool_over_direct_256: f64,
}

fn rows_of(path: &std::path::Path) -> anyhow::Result<Vec<ShoppersFeatures>> {
    let mut rdr = csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec?;
        let fields: Vec<&str> = rec.iter().collect();
        out.push(ShoppersFeatures::from_uci_record(&fields).with_context(|| format!("row {}", out.len() + 1))?.0);
    }
    anyhow::ensure!(!out.is_empty(), "{} has no rows", path.display());
    Ok(out)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

type Reply = tokio::sync::oneshot::Receiver<Result<Prediction, crate::serving::inference::InferenceError>>;

/// One single-row request every `1/rate` s for `secs`, each timed from its
/// due time, with where the time went per stage.
async fn open_loop(
    pool: &InferenceHandle,
    rows: &Arc<Vec<ShoppersFeatures>>,
    rate: u64,
    secs: f64,
    generator: Generator,
) -> anyhow::Result<Open> {
    let rate = rate.max(1);
    let total = ((rate as f64) * secs) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    // (due, submitted) per request; the collector below awaits the answers.
    let (sub_tx, mut sub_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Result<Reply, ()>)>();
    let request = |pool: &InferenceHandle, rows: &[ShoppersFeatures], k: u64| {
        let row = vec![rows[(k as usize) % rows.len()].clone()];
        let key = format!("c{}", k % 5000);
        pool.submit(Some(&key), row).map_err(|_| ())
    };
    let started = Instant::now();
    let (pool2, rows2) = (pool.clone(), rows.clone());
    let thread = match generator {
        Generator::TokioTimer => {
            tokio::task::spawn_local(async move {
                for k in 0..total {
                    let due = started + interval.mul_f64(k as f64);
                    let now = Instant::now();
                    // Sleeps in steps of at least a millisecond (timer
                    // granularity) and catches up with every request that
                    // fell due meanwhile.
                    if due > now && due - now >= Duration::from_millis(1) {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let _ = sub_tx.send((due, request(&pool2, &rows2, k)));
                }
            });
            None
        }
        Generator::Thread => Some(std::thread::spawn(move || {
            for k in 0..total {
                let due = started + interval.mul_f64(k as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let _ = sub_tx.send((due, request(&pool2, &rows2, k)));
            }
        })),
    };
    let (res_tx, mut res_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Instant, Option<Stages>)>();
    let mut errors = 0u64;
    while let Some((due, sub)) = sub_rx.recv().await {
        match sub {
            Ok(rx) => {
                let res_tx = res_tx.clone();
                tokio::task::spawn_local(async move {
                    let stages = match rx.await {
                        Ok(Ok(p)) => Some(p.stages),
                        _ => None,
                    };
                    let _ = res_tx.send((due, Instant::now(), stages));
                });
            }
            Err(()) => errors += 1,
        }
    }
    drop(res_tx);
    if let Some(t) = thread {
        let _ = t.join();
    }
    let new_h = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    let (mut h, mut hs_submit) = (new_h()?, new_h()?);
    let names = ["send lag", "pool mailbox", "batch formation", "worker queue", "forward", "reply delivery"];
    let mut hs = names.iter().map(|_| new_h()).collect::<Result<Vec<_>, _>>()?;
    let mut batch_rows = 0usize;
    let us = |a: Instant, b: Instant| b.saturating_duration_since(a).as_micros() as u64;
    while let Some((due, done, stages)) = res_rx.recv().await {
        let Some(st) = stages else {
            errors += 1;
            continue;
        };
        let _ = h.record(us(due, done).max(1));
        let _ = hs_submit.record(us(st.enqueued, done).max(1));
        let parts = [
            us(due, st.enqueued),
            us(st.enqueued, st.pooled),
            us(st.pooled, st.dispatched),
            us(st.dispatched, st.started),
            us(st.started, st.scored),
            us(st.replied, done),
        ];
        for (hist, v) in hs.iter_mut().zip(parts) {
            let _ = hist.record(v.max(1));
        }
        batch_rows += st.batch_rows;
    }
    let el = started.elapsed().as_secs_f64();
    let open = Open {
        generator: match generator {
            Generator::TokioTimer => "tokio timer",
            Generator::Thread => "own thread",
        },
        target_rps: rate,
        achieved_rps: total as f64 / el,
        p50_ms: ms(&h, 0.5),
        p99_ms: ms(&h, 0.99),
        max_ms: h.max() as f64 / 1000.0,
        errors,
        from_submit_p50_ms: ms(&hs_submit, 0.5),
        from_submit_p99_ms: ms(&hs_submit, 0.99),
        mean_batch_rows: batch_rows as f64 / h.len().max(1) as f64,
        stages: names
            .iter()
            .zip(&hs)
            .map(|(stage, hist)| Stage { stage, p50_ms: ms(hist, 0.5), p99_ms: ms(hist, 0.99) })
            .collect(),
    };
    eprintln!(
        "pool, open loop {} req/s, generator on {} (achieved {:.0}): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, \
         {} errors, {:.1} rows/batch; from submission p50 {:.3} ms, p99 {:.3} ms",
        open.target_rps,
        open.generator,
        open.achieved_rps,
        open.p50_ms,
        open.p99_ms,
        open.max_ms,
        open.errors,
        open.mean_batch_rows,
        open.from_submit_p50_ms,
        open.from_submit_p99_ms
    );
    for s in &open.stages {
        eprintln!("    {:<16} p50 {:.3} ms, p99 {:.3} ms", s.stage, s.p50_ms, s.p99_ms);
    }
    Ok(open)
}

/// Runs inside an actix system.
pub async fn run(opts: InferenceBenchOptions) -> anyhow::Result<()> {
    let model = crate::serving::inference::source::load_dir(opts.model.clone()).await?;
    let version = model.manifest.model_version.clone();
    let rows = Arc::new(rows_of(&opts.data)?);
    let secs = opts.seconds.max(0.5);

    // 1. Direct baseline on this thread.
    let model = Arc::new(model);
    let baseline = {
        let m = model.clone();
        let r = rows.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
            let started = Instant::now();
            let mut n = 0usize;
            let mut i = 0usize;
            while started.elapsed().as_secs_f64() < secs {
                let end = (i + 256).min(r.len());
                n += m.predict(&r[i..end])?.len();
                i = if end >= r.len() { 0 } else { end };
            }
            Ok(n as f64 / started.elapsed().as_secs_f64())
        })
        .await??
    };
    eprintln!("direct, one thread, batch 256: {baseline:>10.0} predictions/s");

    let pool = InferenceHandle::start(opts.pool.clone(), InferenceMetrics::detached());
    let set = ServingSet::new(vec![crate::serving::inference::ServingModel {
        version: version.as_str().into(),
        traffic_share: 1.0,
        model: model.clone(),
    }]);
    pool.set_models(set);
    while !pool.ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // 2. Closed loop.
    let mut closed = Vec::new();
    for (batch, in_flight) in [(1usize, 256usize), (32, 32), (256, 8)] {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(secs);
        let mut tasks = Vec::new();
        for t in 0..in_flight {
            let pool = pool.clone();
            let rows = rows.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                let (mut n, mut reqs) = (0usize, 0usize);
                let mut i = (t * 997) % rows.len();
                while Instant::now() < deadline {
                    let end = (i + batch).min(rows.len());
                    let chunk = rows[i..end].to_vec();
                    i = if end >= rows.len() { 0 } else { end };
                    let sent = Instant::now();
                    let p = pool.predict(Some("bench"), chunk).await;
                    let _ = h.record(sent.elapsed().as_micros() as u64);
                    if let Ok(p) = p {
                        n += p.probabilities.len();
                        reqs += 1;
                    }
                }
                (h, n, reqs)
            }));
        }
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let (mut n, mut reqs) = (0usize, 0usize);
        for t in tasks {
            let (th, tn, tr) = t.await?;
            h.add(th)?;
            n += tn;
            reqs += tr;
        }
        let el = started.elapsed().as_secs_f64();
        let c = Closed {
            batch,
            in_flight,
            predictions_per_s: n as f64 / el,
            requests_per_s: reqs as f64 / el,
            p50_ms: ms(&h, 0.5),
            p99_ms: ms(&h, 0.99),
        };
        eprintln!(
            "pool, batch {:>3}, {:>3} in flight: {:>10.0} predictions/s, p50 {:.3} ms, p99 {:.3} ms",
            c.batch, c.in_flight, c.predictions_per_s, c.p50_ms, c.p99_ms
        );
        closed.push(c);
    }

    // 3. Open loop at a fixed rate; each request timed from its scheduled start.
    let open_timer = open_loop(&pool, &rows, opts.rate, secs, Generator::TokioTimer).await?;
    let open = open_loop(&pool, &rows, opts.rate, secs, Generator::Thread).await?;
    pool.stop();
    let p256 = closed.iter().find(|c| c.batch == 256).map(|c| c.predictions_per_s).unwrap_or(0.0);
    let report = Report {
        model_version: version,
        workers: opts.pool.workers,
        max_batch: opts.pool.max_batch,
        baseline_direct_predictions_per_s: baseline,
        pool_over_direct_256: p256 / baseline.max(1e-9),
        closed_loop: closed,
        open_loop: open,
        open_loop_tokio_timer: open_timer,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
