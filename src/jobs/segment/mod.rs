//! `cartpulse segment`: K-Means segmentation of the customer profiles.
//!
//! 1. Reads every non-guest customer's snapshot (`customers.state`) and computes
//!    its profile features as of one reference time for all: the latest event
//!    time in the event log, which is also the watermark a server started over
//!    that log computes live profiles at (`startup.rs` raises it from the same
//!    query), so batch and live assignments see the same recency. Ids starting
//!    `guest-` are left out, since guests have no profile worth segmenting.
//!    Ordered by id.
//! 2. Transforms it: signed `log1p` on heavy-tailed money and count features,
//!    then robust scaling by median and IQR ([`transform`] lists the features).
//! 3. Runs K-Means on a blocking thread: [`N_RUNS`] runs, each seeded by
//!    greedy k-means++ and iterated to convergence by our Lloyd (seeded
//!    `Xoshiro256Plus`, runs spread over the CPUs; see [`kmeans`] for why not linfa's own
//!    k-means++). With `--k auto` it fits every k
//!    in 2..=12 and keeps the best mean silhouette, computed on a deterministic
//!    evenly-spaced sample of at most [`SILHOUETTE_SAMPLE`] customers (the
//!    silhouette is O(n²); the fits themselves always use every customer).
//!    Every customer's segment is then its nearest centroid by
//!    [`assign::nearest_centroid`], the very function the live assigner uses,
//!    and sizes and inertia are computed from those labels.
//! 4. Names every segment from its centroid ([`naming`]), stores a new
//!    `segmentations` version (inactive; activation is a separate step, see
//!    [`assign`]), prints a table on stderr and returns the report (the CLI
//!    prints it as JSON).
//!
//! `--export-matrix FILE` writes the transformed matrix as CSV (`customer_id`
//! then the features), to compare against scikit-learn on identical input;
//! `--assignments FILE` writes `customer_id,segment`, to compare with what
//! the actors assign once the version is active; `--report DIR` draws the
//! charts of [`report`].

pub mod cli;
mod lloyd;
pub mod report;

use crate::segments::{assign, naming, transform};
use std::path::PathBuf;
use std::time::Instant;

use actors::features::profile::ProfileFeatures;
use anyhow::Context;
use linfa::prelude::Fit;
use linfa::DatasetBase;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::Array2;
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use serde::Serialize;

use crate::config::Settings;
use transform::Scaler;

/// K-Means restarts per fit; the best (lowest inertia) is kept.
pub const N_RUNS: usize = 10;
/// Lloyd's iterations per run at most (scikit-learn's `max_iter`).
const MAX_ITERATIONS: usize = 300;
/// Relative tolerance of the centre shift (scikit-learn's `tol`).
const TOLERANCE: f64 = 1e-4;
/// Most customers the silhouette is computed on.
pub const SILHOUETTE_SAMPLE: usize = 2_000;
/// The range `--k auto` searches.
pub const AUTO_K: std::ops::RangeInclusive<usize> = 2..=12;

/// How many clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KChoice {
    Auto,
    Fixed(usize),
}

impl std::str::FromStr for KChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(KChoice::Auto);
        }
        let k: usize = s.parse().map_err(|_| anyhow::anyhow!("--k must be a number ≥ 2 or `auto`, got {s:?}"))?;
        anyhow::ensure!(k >= 2, "--k must be at least 2, got {k}");
        Ok(KChoice::Fixed(k))
    }
}

pub struct SegmentOptions {
    pub settings: Settings,
    pub k: KChoice,
    pub export_matrix: Option<PathBuf>,
    /// Write `customer_id,segment` of every segmented customer here.
    pub assignments: Option<PathBuf>,
    /// Draw the report charts into this directory.
    pub report: Option<PathBuf>,
    pub seed: u64,
    /// Print the segment table on stderr.
    pub print_table: bool,
    /// Segment only customers with at least one order, and measure recency
    /// from their latest activity (not from the log's latest event, which
    /// may be a browsing session in another period).
    pub buyers_only: bool,
    /// Build the profiles from the data lake's archived events (this lake,
    /// these event times) instead of the stored snapshots.
    pub lake: Option<(crate::lake::cli::LakeArgs, crate::lake::read::Window)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SegmentInfo {
    pub segment: usize,
    pub name: String,
    pub size: usize,
    /// The features farthest from the median customer (scaled values).
    pub defining: Vec<(String, f64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KScore {
    pub k: usize,
    pub inertia: f64,
    pub silhouette: f64,
    /// Seconds the K-Means fit at this k took (all its runs).
    pub fit_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SegmentReport {
    pub version: i32,
    pub k: usize,
    pub n_customers: usize,
    /// The reference time every profile was computed as of.
    pub as_of: chrono::DateTime<chrono::Utc>,
    pub inertia: f64,
    pub silhouette: f64,
    pub silhouette_sample: usize,
    /// Every k tried (one entry for a fixed k).
    pub scores: Vec<KScore>,
    pub segments: Vec<SegmentInfo>,
    /// Seconds spent in the K-Means fits alone (every k tried), the figure
    /// comparable to scikit-learn's `fit`.
    pub fit_s: f64,
    pub elapsed_s: f64,
}

/// Runs the whole job against the database in `opts.settings`.
pub async fn run(opts: SegmentOptions) -> anyhow::Result<SegmentReport> {
    let started = Instant::now();
    let db = crate::db::connect(&opts.settings).await?;
    crate::db::migrate(&db).await?;
    let (ids, rows, as_of) = match &opts.lake {
        None => load_profiles(&db, opts.buyers_only).await?,
        Some((lake, window)) => lake_profiles(&opts.settings, lake, *window, opts.buyers_only).await?,
    };
    anyhow::ensure!(rows.len() >= 3, "need at least 3 non-guest customer profiles to segment, found {}", rows.len());
    if let KChoice::Fixed(k) = opts.k {
        anyhow::ensure!(k <= rows.len(), "--k {k} exceeds the {} customers", rows.len());
    }
    let (k_choice, seed) = (opts.k, opts.seed);
    let fit = tokio::task::spawn_blocking(move || fit_all(&rows, k_choice, seed)).await.context("segment worker")??;

    if let Some(path) = &opts.export_matrix {
        write_matrix(path, &ids, &fit.matrix).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &opts.assignments {
        write_assignments(path, &ids, &fit.labels).with_context(|| format!("writing {}", path.display()))?;
    }
    let names: Vec<&str> = ProfileFeatures::NAMES.to_vec();
    let row = entities::segmentation::ActiveModel {
        created_at: Set(chrono::Utc::now()),
        k: Set(i32::try_from(fit.k)?),
        inertia: Set(fit.inertia),
        silhouette: Set(Some(fit.silhouette)),
        n_customers: Set(i32::try_from(ids.len())?),
        feature_names: Set(serde_json::to_string(&names)?),
        scaler: Set(serde_json::to_string(&fit.scaler)?),
        centroids: Set(serde_json::to_string(&fit.centroids)?),
        sizes: Set(serde_json::to_string(&fit.sizes)?),
        names: Set(serde_json::to_string(&fit.names)?),
        active: Set(false),
        ..Default::default()
    }
    .insert(&db)
    .await
    .context("storing the segmentation")?;

    let segments: Vec<SegmentInfo> = (0..fit.k)
        .map(|i| SegmentInfo {
            segment: i,
            name: fit.names[i].clone(),
            size: fit.sizes[i],
            defining: naming::defining_features(&names, &fit.centroids[i], 4),
        })
        .collect();
    let report = SegmentReport {
        version: row.version,
        k: fit.k,
        n_customers: ids.len(),
        as_of,
        inertia: fit.inertia,
        silhouette: fit.silhouette,
        silhouette_sample: fit.sample,
        scores: fit.scores,
        segments,
        fit_s: fit.fit_s,
        elapsed_s: 0.0,
    };
    if let Some(dir) = &opts.report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        report::write_all(dir, &report, &fit.matrix, &fit.labels)?;
    }
    let report = SegmentReport { elapsed_s: started.elapsed().as_secs_f64(), ..report };
    if opts.print_table {
        eprint!("{}", table(&report));
    }
    Ok(report)
}

/// Customer ids and profile vectors of every non-guest customer, by id, and
/// the reference time they are computed as of.
///
/// The features are computed here from each snapshot's state with the same
/// code the actors run, as of one reference time for everyone: the stored
/// `profile` column is as of each snapshot's own moment, so its recency and
/// 90-day windows would not compare. That time is the latest event in the
/// log, guests' included, because that is the actors' watermark; taking the
/// latest non-guest event instead made recency differ from the live one
/// whenever a guest ordered last.
async fn load_profiles(
    db: &sea_orm::DatabaseConnection,
    buyers_only: bool,
) -> anyhow::Result<(Vec<String>, Vec<Vec<f64>>, chrono::DateTime<chrono::Utc>)> {
    use actors::data::state::CustomerState;
    use entities::customer::{Column, Entity};
    let all: Vec<(String, String)> = Entity::find()
        .select_only()
        .column(Column::CustomerId)
        .column(Column::State)
        .filter(Column::CustomerId.not_like("guest-%"))
        .order_by_asc(Column::CustomerId)
        .into_tuple()
        .all(db)
        .await
        .context("reading customer snapshots")?;
    let (mut states, mut bad) = (Vec::with_capacity(all.len()), 0usize);
    for (id, state) in all {
        match serde_json::from_str::<CustomerState>(&state) {
            Ok(s) => states.push((id, s)),
            // An unreadable snapshot is skipped rather than segmented as an
            // all-zero customer.
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        tracing::warn!(skipped = bad, "customer snapshots that could not be parsed were left out");
    }
    if buyers_only {
        states.retain(|(_, s)| s.profile.orders() > 0);
        let as_of = states.iter().filter_map(|(_, s)| s.profile.last_seen()).max().unwrap_or_else(chrono::Utc::now);
        let (ids, rows) = states.into_iter().map(|(id, s)| (id, s.profile.features(as_of).to_vec())).unzip();
        return Ok((ids, rows, as_of));
    }
    let latest_event: Option<Option<chrono::DateTime<chrono::Utc>>> = entities::event::Entity::find()
        .select_only()
        .column_as(entities::event::Column::EventTime.max(), "t")
        .into_tuple()
        .one(db)
        .await
        .context("reading the latest event time")?;
    // An empty log with snapshots (a pruned log, hand-made data) falls back
    // to the latest event any snapshot saw.
    let as_of = latest_event
        .flatten()
        .or_else(|| states.iter().filter_map(|(_, s)| s.profile.last_seen()).max())
        .unwrap_or_else(chrono::Utc::now);
    let (ids, rows) = states.into_iter().map(|(id, s)| (id, s.profile.features(as_of).to_vec())).unzip();
    Ok((ids, rows, as_of))
}

/// [`load_profiles`] from the data lake: every customer's state rebuilt by
/// applying the archived events, in log order, with the code the session
/// actors run (`features.timezone`, `actors.session_gap_s`), then the same
/// features as of the latest archived event. With the whole log archived it
/// gives what the snapshots give.
async fn lake_profiles(
    settings: &Settings,
    lake: &crate::lake::cli::LakeArgs,
    window: crate::lake::read::Window,
    buyers_only: bool,
) -> anyhow::Result<(Vec<String>, Vec<Vec<f64>>, chrono::DateTime<chrono::Utc>)> {
    use actors::data::state::{Changes, CustomerState};
    use std::collections::BTreeMap;
    let reader = crate::lake::read::LakeReader::open(lake.store(settings).await?).await?;
    let rules = settings.state_rules();
    let mut states: BTreeMap<String, CustomerState> = BTreeMap::new();
    let mut latest: Option<chrono::DateTime<chrono::Utc>> = None;
    let stats = reader
        .for_each_block(window, |events| {
            let mut changes = Changes::default();
            for e in &events {
                latest = latest.max(Some(e.event.time));
                let id = e.event.customer_id.as_str();
                if id.starts_with("guest-") {
                    continue;
                }
                let state =
                    states.entry(id.to_owned()).or_insert_with(|| CustomerState::new(e.event.customer_id.clone()));
                state.apply(e, rules, &mut changes);
                changes.closed.clear();
                changes.reached.clear();
            }
            Ok(())
        })
        .await?;
    eprintln!(
        "profiles of {} customers from {} archived events ({} files) of the lake {}",
        states.len(),
        stats.events,
        stats.files,
        reader.describe()
    );
    let mut states: Vec<(String, CustomerState)> = states.into_iter().collect();
    let as_of = if buyers_only {
        states.retain(|(_, s)| s.profile.orders() > 0);
        states.iter().filter_map(|(_, s)| s.profile.last_seen()).max()
    } else {
        latest
    }
    .unwrap_or_else(chrono::Utc::now);
    let (ids, rows) = states.into_iter().map(|(id, s)| (id, s.profile.features(as_of).to_vec())).unzip();
    Ok((ids, rows, as_of))
}

/// Everything the blocking part computes.
struct JobFit {
    matrix: Array2<f64>,
    /// Every customer's segment (nearest centroid), in row order.
    labels: Vec<usize>,
    fit_s: f64,
    scaler: Scaler,
    k: usize,
    inertia: f64,
    silhouette: f64,
    sample: usize,
    scores: Vec<KScore>,
    centroids: Vec<Vec<f64>>,
    sizes: Vec<usize>,
    names: Vec<String>,
}

/// Builds the matrix for `rows` with a scaler fitted on them.
pub fn build_matrix(rows: &[Vec<f64>]) -> anyhow::Result<(Scaler, Array2<f64>)> {
    let scaler = Scaler::fit(&ProfileFeatures::NAMES, rows);
    let d = ProfileFeatures::NAMES.len();
    let flat: Vec<f64> = rows.iter().flat_map(|r| scaler.transform(r)).collect();
    Ok((scaler, Array2::from_shape_vec((rows.len(), d), flat)?))
}

fn fit_all(rows: &[Vec<f64>], k: KChoice, seed: u64) -> anyhow::Result<JobFit> {
    let (scaler, matrix) = build_matrix(rows)?;
    let sample = sample_indices(matrix.nrows(), SILHOUETTE_SAMPLE);
    let dist = pairwise(&matrix, &sample);
    let ks: Vec<usize> = match k {
        KChoice::Fixed(k) => vec![k],
        // Never more clusters than customers (tiny databases).
        KChoice::Auto => AUTO_K.filter(|&k| k < matrix.nrows()).collect(),
    };
    anyhow::ensure!(!ks.is_empty(), "too few customers for --k auto");
    let mut best: Option<(f64, usize, OneFit)> = None;
    let mut scores = Vec::with_capacity(ks.len());
    let mut fit_s = 0.0;
    for k in ks {
        let t = Instant::now();
        let one = kmeans(&matrix, k, seed)?;
        let one_s = t.elapsed().as_secs_f64();
        fit_s += one_s;
        let sample_labels: Vec<usize> = sample.iter().map(|&i| one.labels[i]).collect();
        let s = silhouette(&dist, &sample_labels, k);
        scores.push(KScore { k, inertia: one.inertia, silhouette: s, fit_s: one_s });
        // Strictly better only: on a tie the smaller k wins.
        if best.as_ref().is_none_or(|b| s > b.0) {
            best = Some((s, k, one));
        }
    }
    let (silhouette, k, one) = best.ok_or_else(|| anyhow::anyhow!("no k was fitted"))?;
    let mut sizes = vec![0usize; k];
    for &l in &one.labels {
        sizes[l] += 1;
    }
    let centroids = one.centroids;
    let mi = ProfileFeatures::NAMES.iter().position(|n| *n == "monetary");
    let net_spend: Vec<f64> = centroids.iter().map(|c| mi.map_or(f64::NAN, |i| scaler.inverse(c)[i])).collect();
    let names = naming::name_segments(&ProfileFeatures::NAMES, &centroids, Some(&net_spend));
    Ok(JobFit {
        inertia: one.inertia,
        labels: one.labels,
        fit_s,
        matrix,
        scaler,
        k,
        silhouette,
        sample: sample.len(),
        scores,
        centroids,
        sizes,
        names,
    })
}

/// The parts of a fitted model the job keeps.
struct OneFit {
    centroids: Vec<Vec<f64>>,
    inertia: f64,
    labels: Vec<usize>,
}

/// One K-Means fit: [`N_RUNS`] runs, each a greedy k-means++ start
/// ([`greedy_kmeans_plus_plus`]) followed by Lloyd's iterations to
/// convergence ([`lloyd`]); the run with the lowest inertia wins, and
/// linfa's Lloyd takes one step from its centres (none to speak of at
/// convergence) to give the model whose centroids are kept. The runs are spread over
/// the CPUs; run `r` draws its start from the seed's generator jumped `r`
/// times, so the result does not depend on how many threads ran.
///
/// Why greedy k-means++ rather than linfa's `KMeansInit::KMeansPlusPlus`:
/// linfa draws one candidate per centre, and on Online Retail its best of 10
/// runs was up to 1.75 % worse than scikit-learn's at k = 12 (0.7 % at
/// k = 7). The greedy variant (scikit-learn's default) draws 2 + ln k
/// candidates per centre and keeps the one that lowers the potential most.
/// Why our own Lloyd: linfa's took 3–4.5× scikit-learn's time on the retail
/// matrix (allocation per iteration, a stricter stopping rule).
fn kmeans(matrix: &Array2<f64>, k: usize, seed: u64) -> anyhow::Result<OneFit> {
    let (n, d) = matrix.dim();
    anyhow::ensure!(k >= 1 && k <= n, "K-Means with k = {k} needs at least {k} customers (have {n})");
    let x = matrix.as_slice().ok_or_else(|| anyhow::anyhow!("the matrix is not contiguous"))?;
    let tol = lloyd::absolute_tol(x, d, TOLERANCE);
    let base = Xoshiro256Plus::seed_from_u64(seed);
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).clamp(1, N_RUNS);
    let run = |r: usize| -> (f64, Vec<f64>) {
        let mut rng = base.clone();
        for _ in 0..r {
            rng.jump();
        }
        let init = greedy_kmeans_plus_plus(matrix, k, &mut rng);
        let start = init.as_slice().map(<[f64]>::to_vec).unwrap_or_else(|| init.iter().copied().collect());
        let (centres, _) = lloyd::lloyd(x, d, start, MAX_ITERATIONS, tol);
        let inertia = x.chunks_exact(d).map(|row| lloyd::nearest(row, &centres, d).1).sum();
        (inertia, centres)
    };
    let results: Vec<(usize, f64, Vec<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let run = &run;
                s.spawn(move || (t..N_RUNS).step_by(threads).map(|r| (r, run(r))).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .map(|(r, (inertia, centres))| (r, inertia, centres))
            .collect()
    });
    anyhow::ensure!(results.len() == N_RUNS, "K-Means with k = {k}: a run failed");
    // Lowest inertia; the lowest run index on a tie, whatever the threads did.
    let (_, _, best) = results
        .into_iter()
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
        .ok_or_else(|| anyhow::anyhow!("K-Means with k = {k}: no run finished"))?;
    let init = Array2::from_shape_vec((k, d), best)?;
    let model = KMeans::params_with_rng(k, base)
        .init_method(KMeansInit::Precomputed(init))
        .n_runs(1)
        .max_n_iterations(1)
        .tolerance(f64::MAX)
        .fit(&DatasetBase::from(matrix.view()))
        .map_err(|e| anyhow::anyhow!("K-Means with k = {k}: {e}"))?;
    let centroids: Vec<Vec<f64>> = model.centroids().rows().into_iter().map(|r| r.to_vec()).collect();
    Ok(evaluate(matrix, centroids))
}

/// Labels and inertia of `centroids` over `matrix`.
fn evaluate(matrix: &Array2<f64>, centroids: Vec<Vec<f64>>) -> OneFit {
    // Labels by the live assigner's own function (not linfa's `predict`), so
    // the batch's segments are by construction what an actor would pick.
    let labels: Vec<usize> = matrix
        .outer_iter()
        .map(|r| match r.as_slice() {
            Some(row) => assign::nearest_centroid(&centroids, row),
            None => assign::nearest_centroid(&centroids, &r.to_vec()),
        })
        .collect();
    // linfa's `inertia()` is a per-sample mean; we report scikit-learn's total
    // (sum of squared distances to the assigned centroid) so the two compare directly.
    let inertia = matrix
        .rows()
        .into_iter()
        .zip(&labels)
        .map(|(row, &l)| row.iter().zip(&centroids[l]).map(|(x, c)| (x - c) * (x - c)).sum::<f64>())
        .sum();
    OneFit { centroids, inertia, labels }
}

/// A uniform draw in [0, 1) from the top 53 bits.
fn uniform(rng: &mut Xoshiro256Plus) -> f64 {
    use rand_xoshiro::rand_core::RngCore;
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Greedy k-means++ (Arthur & Vassilvitskii's seeding with the local trials
/// scikit-learn uses): the first centre is a uniformly drawn row; every next
/// one is the best of 2 + ⌊ln k⌋ rows drawn with probability proportional to
/// their squared distance to the nearest centre so far, "best" meaning the
/// lowest total squared distance once it is added.
pub fn greedy_kmeans_plus_plus(matrix: &Array2<f64>, k: usize, rng: &mut Xoshiro256Plus) -> Array2<f64> {
    let (n, d) = matrix.dim();
    let owned;
    let x = match matrix.as_slice() {
        Some(x) => x,
        None => {
            owned = matrix.iter().copied().collect::<Vec<f64>>();
            &owned
        }
    };
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let trials = 2 + (k as f64).ln().floor() as usize;
    let mut centres = Array2::zeros((k, d));
    let first = ((uniform(rng) * n as f64) as usize).min(n - 1);
    centres.row_mut(0).assign(&matrix.row(first));
    let mut closest: Vec<f64> = (0..n).map(|i| lloyd::sq_dist(row(i), row(first))).collect();
    let mut potential: f64 = closest.iter().sum();
    // Buffers reused across centres and trials: the candidate's distances,
    // and the best candidate's so far.
    let (mut cumulative, mut trial, mut kept) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for c in 1..k {
        let mut acc = 0.0;
        for (cum, &v) in cumulative.iter_mut().zip(&closest) {
            acc += v;
            *cum = acc;
        }
        let mut best: Option<(f64, usize)> = None;
        for _ in 0..trials {
            // All rows equal to a centre already (potential 0): any row will do.
            let target = uniform(rng) * potential;
            let cand = cumulative.partition_point(|&x| x <= target).min(n - 1);
            let candidate = row(cand);
            let mut pot = 0.0;
            for (i, (t, &near)) in trial.iter_mut().zip(&closest).enumerate() {
                *t = near.min(lloyd::sq_dist(row(i), candidate));
                pot += *t;
            }
            if best.is_none_or(|b| pot < b.0) {
                best = Some((pot, cand));
                std::mem::swap(&mut kept, &mut trial);
            }
        }
        if let Some((pot, cand)) = best {
            centres.row_mut(c).assign(&matrix.row(cand));
            std::mem::swap(&mut closest, &mut kept);
            potential = pot;
        }
    }
    centres
}

/// At most `m` of `0..n`, evenly spaced (deterministic, covers the id range).
pub fn sample_indices(n: usize, m: usize) -> Vec<usize> {
    if n <= m {
        return (0..n).collect();
    }
    (0..m).map(|i| i * n / m).collect()
}

/// Euclidean distances between the sampled rows (row-major, |sample|²).
fn pairwise(matrix: &Array2<f64>, sample: &[usize]) -> Vec<f64> {
    let n = sample.len();
    let mut d = vec![0.0; n * n];
    for a in 0..n {
        let ra = matrix.row(sample[a]);
        for b in (a + 1)..n {
            let rb = matrix.row(sample[b]);
            let v = ra.iter().zip(rb.iter()).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
            d[a * n + b] = v;
            d[b * n + a] = v;
        }
    }
    d
}

/// Mean silhouette over the sample (a point alone in its cluster scores 0).
pub fn silhouette(dist: &[f64], labels: &[usize], k: usize) -> f64 {
    let n = labels.len();
    if n == 0 {
        return 0.0;
    }
    let mut total = 0.0;
    let mut sums = vec![0.0; k];
    let mut counts = vec![0usize; k];
    for &l in labels {
        counts[l] += 1;
    }
    for i in 0..n {
        sums.iter_mut().for_each(|s| *s = 0.0);
        for j in 0..n {
            sums[labels[j]] += dist[i * n + j];
        }
        let own = labels[i];
        if counts[own] <= 1 {
            continue;
        }
        let a = sums[own] / (counts[own] - 1) as f64;
        let b = (0..k)
            .filter(|&c| c != own && counts[c] > 0)
            .map(|c| sums[c] / counts[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if b.is_finite() {
            let m = a.max(b);
            if m > 0.0 {
                total += (b - a) / m;
            }
        }
    }
    total / n as f64
}

fn write_assignments(path: &std::path::Path, ids: &[String], labels: &[usize]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["customer_id", "segment"])?;
    for (id, l) in ids.iter().zip(labels) {
        w.write_record([id.as_str(), &l.to_string()])?;
    }
    w.flush()?;
    Ok(())
}

fn write_matrix(path: &std::path::Path, ids: &[String], matrix: &Array2<f64>) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    let mut header = vec!["customer_id"];
    header.extend(ProfileFeatures::NAMES);
    w.write_record(&header)?;
    for (id, row) in ids.iter().zip(matrix.rows()) {
        let mut rec = vec![id.clone()];
        rec.extend(row.iter().map(|v| v.to_string()));
        w.write_record(&rec)?;
    }
    w.flush()?;
    Ok(())
}

/// The human table: one line per segment, largest first.
pub fn table(r: &SegmentReport) -> String {
    let mut out = format!(
        "segmentation v{}: k = {}, {} customers, inertia {:.1}, silhouette {:.3} (sample {})\n",
        r.version, r.k, r.n_customers, r.inertia, r.silhouette, r.silhouette_sample
    );
    // Name column as wide as the longest name, so the feature column lines up.
    let w = r.segments.iter().map(|s| s.name.chars().count()).max().unwrap_or(0).max(4);
    out.push_str(&format!(
        "{:>3}  {:>6}  {:>6}  {:<w$}  defining features (robust z)\n",
        "seg", "size", "share", "name"
    ));
    let mut segs: Vec<&SegmentInfo> = r.segments.iter().collect();
    segs.sort_by(|a, b| b.size.cmp(&a.size).then(a.segment.cmp(&b.segment)));
    for s in segs {
        let share = 100.0 * s.size as f64 / r.n_customers.max(1) as f64;
        let feats: Vec<String> = s.defining.iter().map(|(n, v)| format!("{n} {v:+.2}")).collect();
        out.push_str(&format!(
            "{:>3}  {:>6}  {:>5.1}%  {:<w$}  {}\n",
            s.segment,
            s.size,
            share,
            s.name,
            feats.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests;
