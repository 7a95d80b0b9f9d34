//! Offline training and evaluation of the purchase-intent model
//! (`cartpulse train`, `cartpulse predict`).
//!
//! Rows of the UCI Online Shoppers file go through the same feature code as the
//! live session actors ([`ShoppersFeatures::from_uci_record`]) and the same
//! encoding as serving ([`Encoder`]). Evaluation is stratified k-fold
//! cross-validation without leakage: in each outer fold the encoder, the nets
//! (early-stopped on inner folds of the training part) and the decision
//! threshold are fitted on the training part only, then scored once on the
//! held-out part. The final model is fitted the same way on all rows and
//! written as `model.safetensors` + `manifest.json` (see [`artifact`]).
//!
//! - [`model`]: the candle network, its training loop and the ensemble;
//! - [`metrics`]: AUC, accuracy, precision, recall, F1, threshold choice;
//! - [`split`]: seeded stratified folds;
//! - [`artifact`]: the model directory (write, load, predict);
//! - [`plots`]: the `--report` figures (ROC, calibration, confusion matrix).
//! - [`dataset`]: where rows come from (a CSV, `--from-db`), and [`lake`]
//!   (`--from-lake`);
//! - [`gbdt`]: the gradient-boosted teacher that `distill` trains the
//!   networks towards (training only);
//! - [`config_file`]: `--config FILE` over the recommended configuration.

pub mod artifact;
pub mod cli;
pub mod config_file;
pub mod dataset;
pub mod gbdt;
pub mod lake;
pub mod metrics;
pub mod plots;
pub mod split;

use crate::models::net::Ensemble;
use crate::models::open_calibration::OpenCalibration;
use actors::features::encode::{Encoder, EncoderOptions};
use actors::features::ShoppersFeatures;
use anyhow::{bail, Context};
use dataset::Prefixes;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use metrics::Confusion;

use std::path::PathBuf;
use std::time::Instant;

pub use crate::models::artifact::PurchaseModel;
pub use crate::models::manifest::{FoldReport, Manifest, ModelConfig, RepeatReport, ThresholdRule, TrainReport};
pub use artifact::predict;
pub use dataset::{load_csv, DataSource, Dataset, SessionQuery};
pub use lake::LakeQuery;

/// Options of `cartpulse train`.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// The rows: a UCI Online Shoppers CSV (with header and `Revenue`), or
    /// the sessions recorded in the database.
    pub data: DataSource,
    /// Outer cross-validation folds (>= 2).
    pub folds: usize,
    pub seed: u64,
    /// Model directory to write.
    pub out: PathBuf,
    /// Directory for evaluation figures (ROC, calibration, confusion matrix).
    pub report: Option<PathBuf>,
    pub config: ModelConfig,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

/// How `cartpulse train` evaluates, beyond [`TrainOptions`]: repeats of the
/// k-fold on seeds `seed, seed + 1, …`, and files for peers run on the same
/// folds.
#[derive(Clone, Debug)]
pub struct Protocol {
    /// Repeats of stratified k-fold (>= 1); repeat `r` uses split seed `seed + r`.
    pub repeats: usize,
    /// CSV `row,seed,fold`: every row's fold (0-based) in every repeat.
    pub folds_out: Option<PathBuf>,
    /// CSV `row,seed,fold,label,score,threshold`: every row's out-of-fold
    /// probability in every repeat, with its fold model's decision threshold.
    pub oof_out: Option<PathBuf>,
    /// Skip fitting and writing the final model (evaluation only).
    pub no_model: bool,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol { repeats: 1, folds_out: None, oof_out: None, no_model: false }
    }
}

/// A model fitted on some rows: everything needed to score new ones.
pub struct Fitted {
    pub encoder: Encoder,
    pub ensemble: Ensemble,
    pub threshold: f32,
    pub mean_best_epoch: f64,
    /// The members' out-of-fold scores on the training rows (calibrated
    /// when the model is), one per row the inner folds scored.
    pub oof_scores: Vec<f32>,
    /// Fitted on the members' out-of-fold scores of the rows' prefixes;
    /// `None` without prefixes.
    pub open_calibration: Option<OpenCalibration>,
}

impl Fitted {
    /// Probabilities for `rows`.
    pub fn predict(&self, rows: &[ShoppersFeatures]) -> anyhow::Result<Vec<f32>> {
        let mut x = Vec::with_capacity(rows.len() * self.encoder.dim());
        for r in rows {
            self.encoder.encode_into(r, &mut x);
        }
        self.ensemble.predict(&x)
    }
}

/// Fits encoder, ensemble and threshold on `rows` only, and with `prefixes`
/// (one entry per row, or none) the open-session calibration.
pub fn fit(
    rows: &[ShoppersFeatures],
    labels: &[bool],
    prefixes: &[Prefixes],
    config: &ModelConfig,
    seed: u64,
    on_epoch: &dyn Fn(u64),
) -> anyhow::Result<Fitted> {
    let encoder =
        Encoder::fit_options(rows, EncoderOptions { rank: config.rank_inputs, piecewise_bins: config.piecewise_bins });
    let dim = encoder.dim();
    let mut x = Vec::with_capacity(rows.len() * dim);
    for r in rows {
        encoder.encode_into(r, &mut x);
    }
    let members = config.members.max(1);
    // With one member there is no inner k-fold; hold out a fifth instead.
    let k = if config.inner_folds == 0 { members.max(2) } else { config.inner_folds.max(2) };
    // Inner split r (members r·k … r·k + k − 1 with `inner_resplit`).
    let inner_split = |r: usize| {
        let s = seed ^ 0x5EED_1AAE;
        split::stratified_folds(labels, k, if r == 0 { s } else { s.wrapping_add(r as u64 * 0x9E37_79B9) })
    };
    let mut inner = inner_split(0);
    let raw: Vec<[f32; gbdt::COLUMNS]> =
        if config.distill > 0.0 { rows.iter().map(gbdt::raw).collect() } else { Vec::new() };
    let mut oof_sum = vec![0f32; rows.len()];
    let mut oof_n = vec![0u32; rows.len()];
    let mut oof = vec![f32::NAN; rows.len()];
    let with_prefixes = prefixes.len() == rows.len();
    // Per row, per prefix: the sum of the members' out-of-fold scores and their count.
    let mut prefix_oof: Vec<(Vec<f32>, u32)> =
        if with_prefixes { prefixes.iter().map(|p| (vec![0f32; p.len()], 0)).collect() } else { Vec::new() };
    let mut nets = Vec::new();
    let mut best_epochs = 0.0;
    let shared_teacher = |inner: &[usize]| {
        (config.distill > 0.0 && config.teacher_shared)
            .then(|| gbdt::cross_fit_on(&raw, labels, inner, &config.teacher))
    };
    let mut shared = shared_teacher(&inner);
    for m in 0..members {
        if config.inner_resplit && m > 0 && m % k == 0 {
            inner = inner_split(m / k);
            shared = shared_teacher(&inner);
        }
        let (mut train, val) = split::fold_indices(&inner, m % k);
        // The teacher's scores of this member's training rows, each from a
        // teacher that did not see that row (nor, unless shared, any
        // validation row).
        let targets = (config.distill > 0.0).then(|| {
            let t = match &shared {
                Some(all) => pick(all, &train),
                None => gbdt::cross_fit(
                    &pick(&raw, &train),
                    &pick(labels, &train),
                    config.teacher_folds,
                    &config.teacher,
                    seed.wrapping_add(0x7EAC + m as u64),
                ),
            };
            let a = config.distill.clamp(0.0, 1.0);
            let mut targets: Vec<f32> = labels.iter().map(|&y| f32::from(u8::from(y))).collect();
            for (&i, t) in train.iter().zip(t) {
                targets[i] = (1.0 - a) * targets[i] + a * t;
            }
            targets
        });
        if config.bootstrap {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(0xB007 + m as u64));
            let n = train.len();
            train = (0..n).map(|_| train[rng.random_range(0..n)]).collect();
        }
        let (net, stats) = crate::models::net::train_net_on(
            &x,
            labels,
            targets.as_deref(),
            dim,
            &train,
            &val,
            &config.net,
            seed.wrapping_add(1 + m as u64),
            on_epoch,
        )?;
        let p = net.predict(&gather(&x, dim, &val), dim)?;
        for (&i, p) in val.iter().zip(p) {
            oof_sum[i] += p;
            oof_n[i] += 1;
            oof[i] = oof_sum[i] / oof_n[i] as f32;
        }
        if with_prefixes {
            let mut px = Vec::new();
            for &i in &val {
                for (_, f) in &prefixes[i] {
                    encoder.encode_into(f, &mut px);
                }
            }
            let scores = if px.is_empty() { Vec::new() } else { net.predict(&px, dim)? };
            let mut scores = scores.into_iter();
            for &i in &val {
                let (sums, n) = &mut prefix_oof[i];
                sums.iter_mut().for_each(|s| *s += scores.next().unwrap_or(f32::NAN));
                *n += 1;
            }
        }
        best_epochs += stats.best_epoch as f64;
        nets.push(net);
    }
    let scored: Vec<usize> = (0..rows.len()).filter(|&i| !oof[i].is_nan()).collect();
    let mut scores: Vec<f32> = scored.iter().map(|&i| oof[i]).collect();
    let scored_labels: Vec<bool> = scored.iter().map(|&i| labels[i]).collect();
    let calibration = config.calibrate.then(|| metrics::fit_platt(&scores, &scored_labels));
    if let Some(c) = calibration {
        scores.iter_mut().for_each(|p| *p = crate::models::net::platt(*p, c));
    }
    let threshold = match config.threshold_rule {
        ThresholdRule::Best => metrics::best_accuracy_threshold(&scores, &scored_labels),
        ThresholdRule::Smoothed => {
            metrics::smoothed_accuracy_threshold(&scores, &scored_labels, config.threshold_bandwidth)
        }
        ThresholdRule::Half => 0.5,
    };
    let open_calibration = with_prefixes.then(|| {
        let examples: Vec<(u32, f32, bool)> = prefix_oof
            .iter()
            .zip(prefixes)
            .zip(labels)
            .filter(|(((_, n), _), _)| *n > 0)
            .flat_map(|(((sums, n), pre), &y)| {
                sums.iter().zip(pre).map(move |(s, (pages, _))| {
                    let p = s / *n as f32;
                    (*pages, calibration.map_or(p, |c| crate::models::net::platt(p, c)), y)
                })
            })
            .collect();
        OpenCalibration::fit(&examples, metrics::fit_platt)
    });
    let mut dims = vec![dim];
    dims.extend(&config.net.hidden);
    dims.push(1);
    Ok(Fitted {
        encoder,
        ensemble: Ensemble::new(nets, dims, calibration)?,
        threshold,
        mean_best_epoch: best_epochs / members as f64,
        oof_scores: scores,
        open_calibration,
    })
}

fn gather(x: &[f32], dim: usize, idx: &[usize]) -> Vec<f32> {
    idx.iter().flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied()).collect()
}

fn pick<T: Clone>(v: &[T], idx: &[usize]) -> Vec<T> {
    idx.iter().map(|&i| v[i].clone()).collect()
}

/// Per-job seeds derived from the run seed, so fold `f` trains the same
/// whatever order the worker threads pick the jobs up in.
fn job_seed(seed: u64, job: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(job as u64 * 0x1000_0001)
}

enum JobOutput {
    Fold(FoldReport, Vec<f32>, Vec<usize>),
    Final(Fitted, f64),
}

/// Runs cross-validation (one repeat), fits the final model and writes the
/// model directory.
pub fn run(opts: TrainOptions) -> anyhow::Result<TrainReport> {
    run_protocol(opts, &Protocol::default())
}

/// Mean and sample std.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let k = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / k;
    (mean, (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0).max(1.0)).sqrt())
}

/// Runs `protocol.repeats` repeats of stratified k-fold cross-validation (split
/// seeds `opts.seed`, `opts.seed + 1`, …), fits the final model on all rows
/// (seeded with `opts.seed`) and writes the model directory. Repeat `r` gives
/// exactly the figures of a one-repeat run with `--seed opts.seed + r`.
pub fn run_protocol(opts: TrainOptions, protocol: &Protocol) -> anyhow::Result<TrainReport> {
    if opts.folds < 2 {
        bail!("--folds must be at least 2, got {}", opts.folds);
    }
    if protocol.repeats < 1 {
        bail!("--repeats must be at least 1");
    }
    let started = Instant::now();
    // Row `i` here is row `order[i]` of the source (see Dataset::canonical).
    let (data, order) = opts.data.load()?.canonical();
    let n = data.labels.len();
    let positives = data.labels.iter().filter(|&&y| y).count();
    if positives < opts.folds || n - positives < opts.folds {
        bail!("{}: too few rows of each class for {} folds", opts.data.describe(), opts.folds);
    }
    let k = opts.folds;
    let seeds: Vec<u64> = (0..protocol.repeats as u64).map(|r| opts.seed.wrapping_add(r)).collect();
    let splits: Vec<Vec<usize>> = seeds.iter().map(|&s| split::stratified_folds(&data.labels, k, s)).collect();
    if let Some(path) = &protocol.folds_out {
        let mut text = String::from("row,seed,fold\n");
        for (split, seed) in splits.iter().zip(&seeds) {
            let mut rows: Vec<(usize, usize)> = split.iter().enumerate().map(|(i, f)| (order[i], *f)).collect();
            rows.sort_unstable();
            for (row, f) in rows {
                text += &format!("{row},{seed},{f}\n");
            }
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let cfg = &opts.config;
    let epochs_per_fit = (cfg.members.max(1) * cfg.net.max_epochs) as u64;

    let multi = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} epochs {elapsed} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    // One bar per repeat (its k folds) and one for the final model.
    let cv_jobs = seeds.len() * k;
    let with_final = !protocol.no_model;
    let bars: Vec<ProgressBar> = (0..seeds.len() + usize::from(with_final))
        .map(|j| {
            let len = if j < seeds.len() { k as u64 * epochs_per_fit } else { epochs_per_fit };
            let b = multi.add(ProgressBar::new(len));
            b.set_style(style.clone());
            b.set_prefix(match seeds.get(j) {
                Some(s) => format!("seed {s}"),
                None => "final".into(),
            });
            b
        })
        .collect();
    let pending: Vec<std::sync::atomic::AtomicUsize> =
        (0..seeds.len()).map(|_| std::sync::atomic::AtomicUsize::new(k)).collect();

    // Jobs 0..cv_jobs are the CV folds (repeat j / k, fold j % k), job cv_jobs
    // the final model. They are independent and each is deterministic, so they
    // run on worker threads (one per core) without changing any figure.
    let jobs = cv_jobs + usize::from(with_final);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, usize::from).min(jobs);
    let results: Vec<(usize, anyhow::Result<JobOutput>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let job = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if job >= jobs {
                            break;
                        }
                        let out = if job < cv_jobs {
                            let (r, f) = (job / k, job % k);
                            let bar = &bars[r];
                            let out = run_fold(&opts, &data, &splits[r], seeds[r], f, bar);
                            if pending[r].fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                                bar.finish();
                            }
                            out
                        } else {
                            run_final(&opts, &data, &bars[seeds.len()])
                        };
                        done.push((job, out));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| vec![(usize::MAX, Err(anyhow::anyhow!("a training thread panicked")))])
            })
            .collect()
    });
    let mut folds = Vec::new();
    let mut final_model = None;
    let mut oof = vec![vec![0f32; n]; seeds.len()];
    let mut thresholds = vec![vec![0f32; n]; seeds.len()];
    let mut sorted = results;
    sorted.sort_by_key(|(j, _)| *j);
    for (j, r) in sorted {
        match r? {
            JobOutput::Fold(report, p, idx) => {
                let r = j / k;
                for (i, p) in idx.into_iter().zip(p) {
                    oof[r][i] = p;
                    thresholds[r][i] = report.threshold;
                }
                folds.push(report);
            }
            JobOutput::Final(fitted, secs) => final_model = Some((fitted, secs)),
        }
    }

    let repeats: Vec<RepeatReport> = seeds
        .iter()
        .enumerate()
        .map(|(r, &seed)| {
            let fs = &folds[r * k..(r + 1) * k];
            let (accuracy, accuracy_std) = mean_std(&fs.iter().map(|f| f.accuracy).collect::<Vec<_>>());
            RepeatReport {
                seed,
                accuracy,
                accuracy_std,
                auc: mean_std(&fs.iter().map(|f| f.auc).collect::<Vec<_>>()).0,
                pooled_auc: metrics::roc_auc(&oof[r], &data.labels).unwrap_or(f64::NAN),
                brier: metrics::brier(&oof[r], &data.labels),
                ece: metrics::expected_calibration_error(&oof[r], &data.labels),
                f1: mean_std(&fs.iter().map(|f| f.f1).collect::<Vec<_>>()).0,
            }
        })
        .collect();
    let fold_mean = |f: fn(&FoldReport) -> f64| mean_std(&folds.iter().map(f).collect::<Vec<_>>()).0;
    let (accuracy, accuracy_std) = mean_std(&folds.iter().map(|f| f.accuracy).collect::<Vec<_>>());
    let over_repeats = |f: fn(&RepeatReport) -> f64| repeats.iter().map(f).collect::<Vec<_>>();
    let acc_r = over_repeats(|r| r.accuracy);
    let auc_r = over_repeats(|r| r.auc);
    let report = TrainReport {
        accuracy,
        accuracy_std,
        auc: fold_mean(|f| f.auc),
        f1: fold_mean(|f| f.f1),
        precision: fold_mean(|f| f.precision),
        recall: fold_mean(|f| f.recall),
        accuracy_repeat_std: mean_std(&acc_r).1 * f64::from(u8::from(acc_r.len() > 1)),
        auc_repeat_std: mean_std(&auc_r).1 * f64::from(u8::from(auc_r.len() > 1)),
        worst_accuracy: acc_r.iter().copied().fold(f64::INFINITY, f64::min),
        worst_auc: auc_r.iter().copied().fold(f64::INFINITY, f64::min),
        pooled_auc: mean_std(&over_repeats(|r| r.pooled_auc)).0,
        brier: mean_std(&over_repeats(|r| r.brier)).0,
        ece: mean_std(&over_repeats(|r| r.ece)).0,
        repeats,
        folds,
        model_dir: if with_final { opts.out.display().to_string() } else { String::new() },
    };
    if let Some(path) = &protocol.oof_out {
        let mut text = String::from("row,seed,fold,label,score,threshold\n");
        let mut by_row: Vec<usize> = (0..n).collect();
        by_row.sort_unstable_by_key(|&i| order[i]);
        for (r, seed) in seeds.iter().enumerate() {
            for &i in &by_row {
                text += &format!(
                    "{},{seed},{},{},{},{}\n",
                    order[i],
                    splits[r][i],
                    u8::from(data.labels[i]),
                    oof[r][i],
                    thresholds[r][i]
                );
            }
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some((fitted, _)) = &final_model {
        artifact::write(&opts, &data, fitted, &report, started.elapsed().as_secs_f64())?;
    } else if with_final {
        bail!("the final model was not trained");
    }
    if let Some(dir) = &opts.report {
        // The figures are drawn from the first repeat's out-of-fold scores.
        let first = TrainReport { folds: report.folds[..k].to_vec(), ..report.clone() };
        artifact::write_evaluation(dir, &oof[0], &data.labels, &first)?;
    }
    eprintln!("{}", summary_table(&report, started.elapsed().as_secs_f64()));
    Ok(report)
}

fn run_final(opts: &TrainOptions, data: &Dataset, bar: &ProgressBar) -> anyhow::Result<JobOutput> {
    let t0 = Instant::now();
    let tick = |d: u64| bar.inc(d);
    let fitted =
        fit(&data.features, &data.labels, &data.prefixes, &opts.config, job_seed(opts.seed, opts.folds), &tick)?;
    bar.finish();
    Ok(JobOutput::Final(fitted, t0.elapsed().as_secs_f64()))
}

fn run_fold(
    opts: &TrainOptions,
    data: &Dataset,
    fold_of: &[usize],
    split_seed: u64,
    fold: usize,
    bar: &ProgressBar,
) -> anyhow::Result<JobOutput> {
    let t0 = Instant::now();
    let seed = job_seed(split_seed, fold);
    let tick = |d: u64| bar.inc(d);
    let (train, test) = split::fold_indices(fold_of, fold);
    let prefixes = if data.prefixes.is_empty() { Vec::new() } else { pick(&data.prefixes, &train) };
    let fitted = fit(&pick(&data.features, &train), &pick(&data.labels, &train), &prefixes, &opts.config, seed, &tick)?;
    let y_test = pick(&data.labels, &test);
    let p = fitted.predict(&pick(&data.features, &test))?;
    let c = Confusion::at(&p, &y_test, fitted.threshold);
    Ok(JobOutput::Fold(
        FoldReport {
            seed: split_seed,
            fold: fold + 1,
            accuracy: c.accuracy(),
            auc: metrics::roc_auc(&p, &y_test).unwrap_or(f64::NAN),
            f1: c.f1(),
            precision: c.precision(),
            recall: c.recall(),
            threshold: fitted.threshold,
            confusion: c,
            train_rows: train.len(),
            test_rows: test.len(),
            mean_best_epoch: fitted.mean_best_epoch,
            seconds: t0.elapsed().as_secs_f64(),
        },
        p,
        test,
    ))
}

/// The human-readable table printed on stderr.
pub fn summary_table(r: &TrainReport, seconds: f64) -> String {
    let mut s = String::from("seed  fold  accuracy  auc     f1      precision  recall  threshold  epochs  secs\n");
    for f in &r.folds {
        s += &format!(
            "{:<5} {:<5} {:.4}    {:.4}  {:.4}  {:.4}     {:.4}  {:.4}     {:>6.1}  {:.1}\n",
            f.seed, f.fold, f.accuracy, f.auc, f.f1, f.precision, f.recall, f.threshold, f.mean_best_epoch, f.seconds
        );
    }
    if r.repeats.len() > 1 {
        s += "repeat seed  accuracy  auc     pooled auc  brier   ece\n";
        for x in &r.repeats {
            s += &format!(
                "{:<12} {:.4}    {:.4}  {:.4}      {:.4}  {:.4}\n",
                x.seed, x.accuracy, x.auc, x.pooled_auc, x.brier, x.ece
            );
        }
        s += &format!(
            "over {} repeats: accuracy {:.4} ± {:.4} (worst {:.4}), auc {:.4} ± {:.4} (worst {:.4}), pooled auc {:.4}, brier {:.4}, ece {:.4}\n",
            r.repeats.len(),
            r.accuracy,
            r.accuracy_repeat_std,
            r.worst_accuracy,
            r.auc,
            r.auc_repeat_std,
            r.worst_auc,
            r.pooled_auc,
            r.brier,
            r.ece
        );
    }
    s += &format!(
        "mean  {:.4}±{:.4} auc {:.4} (pooled {:.4})  f1 {:.4}  precision {:.4}  recall {:.4}  brier {:.4}  ece {:.4}  ({seconds:.1} s{})",
        r.accuracy,
        r.accuracy_std,
        r.auc,
        r.pooled_auc,
        r.f1,
        r.precision,
        r.recall,
        r.brier,
        r.ece,
        if r.model_dir.is_empty() { String::new() } else { format!(", model in {}", r.model_dir) }
    );
    s
}

/// UCI-shaped rows of our own making (with header and `Revenue`), where page
/// value drives buying: enough signal to train on without the real file, for
/// tests that need a model.
pub fn synthetic_shoppers_csv(rows: usize, seed: u64) -> String {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s = ShoppersFeatures::UCI_COLUMNS.join(",") + ",Revenue\n";
    let months = ["Feb", "Mar", "May", "Nov", "Dec"];
    for _ in 0..rows {
        let pv: f64 = if rng.random_bool(0.3) { rng.random_range(1.0..80.0) } else { 0.0 };
        let buys = rng.random_bool(if pv > 0.0 { 0.6 } else { 0.05 });
        let pr: u32 = rng.random_range(1..60);
        s += &format!(
            "{},{:.1},{},0,{pr},{:.1},{:.3},{:.3},{pv:.2},0,{},{},{},{},{},{},{},{}\n",
            rng.random_range(0..5),
            rng.random_range(0.0..200.0),
            rng.random_range(0..2),
            f64::from(pr) * rng.random_range(5.0..60.0),
            rng.random_range(0.0..0.1),
            rng.random_range(0.0..0.2),
            months[rng.random_range(0..months.len())],
            rng.random_range(1..4),
            rng.random_range(1..3),
            rng.random_range(1..5),
            rng.random_range(1..6),
            if rng.random_bool(0.8) { "Returning_Visitor" } else { "New_Visitor" },
            if rng.random_bool(0.25) { "TRUE" } else { "FALSE" },
            if buys { "TRUE" } else { "FALSE" },
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::net::NetConfig;
    use std::path::Path;

    /// A small UCI-format file whose label depends mostly on PageValues, as in
    /// the real data (which tests must not need).
    fn synthetic_csv(dir: &Path, rows: usize) -> PathBuf {
        let s = synthetic_shoppers_csv(rows, 11);
        let path = dir.join("shoppers.csv");
        std::fs::write(&path, s).unwrap();
        path
    }

    fn options(dir: &Path, data: PathBuf) -> TrainOptions {
        TrainOptions {
            data: data.into(),
            folds: 3,
            seed: 5,
            out: dir.join("model"),
            report: Some(dir.join("report")),
            config: ModelConfig {
                members: 2,
                calibrate: true,
                piecewise_bins: 8,
                net: NetConfig {
                    hidden: vec![16],
                    max_epochs: 40,
                    patience: 8,
                    learning_rate: 1e-2,
                    ..NetConfig::default()
                },
                ..ModelConfig::default()
            },
            progress: false,
        }
    }

    /// The synthetic file has no January or April and regions 1–4 only. A
    /// January session must score as the same session with its month set to
    /// the neutral January encoding (half December, half February), and an
    /// unseen region as the same session with the training regions' mix: no
    /// weight the training never moved takes part.
    #[test]
    fn an_unseen_month_or_region_scores_as_its_neutral_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic_csv(dir.path(), 400);
        let ds = load_csv(&data, true).unwrap();
        assert!(ds.features.iter().all(|r| r.month != 1 && r.month != 4 && r.region <= 4));
        let config = options(dir.path(), data.clone()).config;
        let fitted = fit(&ds.features, &ds.labels, &ds.prefixes, &config, 3, &|_| {}).unwrap();
        let score = |x: &[f32]| fitted.ensemble.predict(x).unwrap()[0];
        let base = ds.features[0].clone();
        let with = |f: &dyn Fn(&mut ShoppersFeatures)| {
            let mut r = base.clone();
            f(&mut r);
            fitted.encoder.encode(&r)
        };
        let mix = |parts: &[(f32, Vec<f32>)]| {
            let mut out = vec![0.0f32; parts[0].1.len()];
            for (w, v) in parts {
                out.iter_mut().zip(v).for_each(|(o, x)| *o += w * x);
            }
            out
        };

        let january = score(&with(&|r| r.month = 1));
        let neutral = score(&mix(&[(0.5, with(&|r| r.month = 12)), (0.5, with(&|r| r.month = 2))]));
        assert!((january - neutral).abs() < 1e-5, "January {january} vs ½ Dec + ½ Feb {neutral}");

        let counts: Vec<(u16, usize)> =
            (1..=4).map(|g| (g, ds.features.iter().filter(|r| r.region == g).count())).collect();
        let parts: Vec<(f32, Vec<f32>)> = counts
            .iter()
            .map(|&(g, n)| (n as f32 / ds.features.len() as f32, with(&|r: &mut ShoppersFeatures| r.region = g)))
            .collect();
        let unseen = score(&with(&|r| r.region = 99));
        let neutral = score(&mix(&parts));
        assert!((unseen - neutral).abs() < 1e-5, "region 99 {unseen} vs the training mix {neutral}");
        // And it is not just any score: it differs from some seen region's.
        assert!(counts.iter().any(|&(g, _)| (score(&with(&|r| r.region = g)) - unseen).abs() > 1e-7));
    }

    #[test]
    fn same_seed_same_report_and_artifact_reloads_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic_csv(dir.path(), 400);
        let a = run(options(dir.path(), data.clone())).unwrap();
        let b = run(options(dir.path(), data.clone())).unwrap();
        let figures = |r: &TrainReport| {
            let mut r = r.clone();
            r.folds.iter_mut().for_each(|f| f.seconds = 0.0);
            serde_json::to_string(&r).unwrap()
        };
        assert_eq!(figures(&a), figures(&b));
        assert_eq!(a.folds.len(), 3);
        assert!(a.auc > 0.7, "auc {}", a.auc);
        assert!(dir.path().join("report/roc.csv").exists());
        assert!(dir.path().join("report/confusion.png").exists());

        // The reloaded model scores exactly as the in-memory one did.
        let opts = options(dir.path(), data.clone());
        let ds = load_csv(&data, true).unwrap();
        let fitted = fit(&ds.features, &ds.labels, &ds.prefixes, &opts.config, 77, &|_| {}).unwrap();
        let manifest = artifact::write(&opts, &ds, &fitted, &a, 1.0).unwrap();
        let loaded = PurchaseModel::load(&opts.out).unwrap();
        assert_eq!(loaded.manifest.model_version, manifest.model_version);
        assert_eq!(loaded.manifest.training_data.sha256, ds.sha256);
        let want = fitted.predict(&ds.features).unwrap();
        assert_eq!(loaded.predict(&ds.features).unwrap(), want);

        // `predict` writes the same numbers, one per row.
        let out = dir.path().join("p.csv");
        predict(&opts.out, &data, Some(&out)).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("row,probability"));
        let got: Vec<f32> = lines.map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn repeats_equal_single_runs_and_write_folds_and_scores() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic_csv(dir.path(), 300);
        let mut opts = options(dir.path(), data.clone());
        opts.report = None;
        let folds_out = dir.path().join("folds.csv");
        let oof_out = dir.path().join("oof.csv");
        let protocol =
            Protocol { repeats: 2, folds_out: Some(folds_out.clone()), oof_out: Some(oof_out.clone()), no_model: true };
        let both = run_protocol(opts.clone(), &protocol).unwrap();
        assert_eq!(both.repeats.len(), 2);
        assert_eq!(both.folds.len(), 6);
        assert!(!opts.out.join(crate::models::manifest::MANIFEST_FILE).exists(), "--no-model wrote a model");
        for (r, seed) in [5u64, 6].into_iter().enumerate() {
            let single = run_protocol(
                TrainOptions { seed, ..opts.clone() },
                &Protocol { no_model: true, ..Protocol::default() },
            )
            .unwrap();
            let rep = &both.repeats[r];
            assert_eq!(rep.seed, seed);
            assert_eq!(rep.accuracy, single.accuracy);
            assert_eq!(rep.auc, single.auc);
            assert_eq!(rep.brier, single.brier);
            assert!(rep.brier > 0.0 && rep.brier < 0.25, "brier {}", rep.brier);
            assert!(rep.ece >= 0.0 && rep.ece < 0.5, "ece {}", rep.ece);
            assert!(rep.pooled_auc > 0.6);
        }
        let (m, _) = mean_std(&[both.repeats[0].accuracy, both.repeats[1].accuracy]);
        assert!((both.accuracy - m).abs() < 1e-12);
        assert_eq!(both.worst_accuracy, both.repeats[0].accuracy.min(both.repeats[1].accuracy));

        // Folds file: every row once per repeat, folds as the split gives them.
        let ds = load_csv(&data, true).unwrap();
        let text = std::fs::read_to_string(&folds_out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("row,seed,fold"));
        let rows: Vec<(usize, u64, usize)> = lines
            .map(|l| {
                let v: Vec<&str> = l.split(',').collect();
                (v[0].parse().unwrap(), v[1].parse().unwrap(), v[2].parse().unwrap())
            })
            .collect();
        assert_eq!(rows.len(), 600);
        // The split is of the rows in their canonical order; the file names
        // them by their place in the file.
        let (canonical, order) = ds.canonical();
        let split6 = split::stratified_folds(&canonical.labels, 3, 6);
        let mut fold_of_row = vec![usize::MAX; 300];
        for (i, &row) in order.iter().enumerate() {
            fold_of_row[row] = split6[i];
        }
        assert!(rows[300..].iter().enumerate().all(|(k, &(i, s, f))| i == k && s == 6 && fold_of_row[i] == f));
        // Scores file: the held-out scores reproduce each fold's accuracy.
        let text = std::fs::read_to_string(&oof_out).unwrap();
        let recs: Vec<Vec<String>> = text.lines().skip(1).map(|l| l.split(',').map(str::to_owned).collect()).collect();
        assert_eq!(recs.len(), 600);
        for f in &both.folds {
            let fold: Vec<&Vec<String>> = recs
                .iter()
                .filter(|r| r[1].parse::<u64>().unwrap() == f.seed && r[2].parse::<usize>().unwrap() + 1 == f.fold)
                .collect();
            let correct = fold
                .iter()
                .filter(|r| (r[4].parse::<f32>().unwrap() >= r[5].parse::<f32>().unwrap()) == (r[3] == "1"))
                .count();
            assert_eq!(correct as f64 / fold.len() as f64, f.accuracy);
        }
    }

    #[test]
    fn a_january_session_and_an_unseen_region_score_as_their_neutral_encodings() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic_csv(dir.path(), 600); // months Feb, Mar, May, Nov, Dec; regions 1..=4
        let ds = load_csv(&data, true).unwrap();
        let opts = options(dir.path(), data);
        let fitted = fit(&ds.features, &ds.labels, &ds.prefixes, &opts.config, 3, &|_| {}).unwrap();
        let enc = &fitted.encoder;
        // Every slot is set by some training row: no first-layer weight keeps its initial value.
        let names = enc.input_names();
        assert!(!names.iter().any(|n| n == "Month=other" || n == "Region=other"), "{names:?}");
        let x: Vec<Vec<f32>> = ds.features.iter().map(|r| enc.encode(r)).collect();
        for (j, name) in names.iter().enumerate().filter(|(_, n)| n.contains('=')) {
            assert!(x.iter().any(|v| v[j] != 0.0), "{name} is never active in training");
        }
        let score = |v: &[f32]| fitted.ensemble.predict(v).unwrap()[0];
        let mut within_range = 0;
        for base in ds.features.iter().take(40) {
            let with_month = |m: u8| ShoppersFeatures { month: m, ..base.clone() };
            // January = ½ December + ½ February: the neutral value of its field.
            let (dec, feb) = (enc.encode(&with_month(12)), enc.encode(&with_month(2)));
            let neutral: Vec<f32> = dec.iter().zip(&feb).map(|(a, b)| (a + b) / 2.0).collect();
            let jan = fitted.predict(&[with_month(1)]).unwrap()[0];
            assert_eq!(enc.encode(&with_month(1)), neutral);
            assert_eq!(jan, score(&neutral));
            // An unseen region = the training frequencies of the regions.
            let region = enc.categorical.iter().position(|c| c.column == "Region").unwrap();
            let offset = enc.numeric.len()
                + enc.categorical[..region].iter().map(|c| c.levels.len() + usize::from(c.other_slot)).sum::<usize>();
            let mut mix = enc.encode(base);
            let freq = &enc.categorical[region].unseen;
            assert_eq!(freq.len(), 4);
            assert!((freq.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            mix[offset..offset + 4].copy_from_slice(freq);
            let unseen = fitted.predict(&[ShoppersFeatures { region: 99, ..base.clone() }]).unwrap()[0];
            assert_eq!(unseen, score(&mix));
            // Observed, not guaranteed: January lands within the scores of the trained months.
            let trained: Vec<f32> =
                [2u8, 3, 5, 11, 12].iter().map(|&m| fitted.predict(&[with_month(m)]).unwrap()[0]).collect();
            let (lo, hi) = trained.iter().fold((1f32, 0f32), |(lo, hi), &p| (lo.min(p), hi.max(p)));
            within_range += usize::from(jan >= lo && jan <= hi);
        }
        assert!(within_range >= 36, "{within_range}/40 January scores within the trained months' range");
    }

    #[test]
    fn tampered_weights_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic_csv(dir.path(), 200);
        let opts = options(dir.path(), data.clone());
        run(opts.clone()).unwrap();
        let w = opts.out.join(crate::models::manifest::WEIGHTS_FILE);
        let mut bytes = std::fs::read(&w).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&w, bytes).unwrap();
        let err = PurchaseModel::load(&opts.out).err().unwrap().to_string();
        assert!(err.contains("sha256"), "{err}");
    }

    #[test]
    fn bad_rows_and_headers_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, "a,b\n1,2\n").unwrap();
        assert!(load_csv(&p, true).err().unwrap().to_string().contains("header"));
        let good = synthetic_csv(dir.path(), 3);
        let text = std::fs::read_to_string(&good).unwrap().replacen("Returning_Visitor", "Robot", 1).replacen(
            "New_Visitor",
            "Robot",
            1,
        );
        std::fs::write(&p, text).unwrap();
        let err = format!("{:#}", load_csv(&p, true).err().unwrap());
        assert!(err.contains("data row") && err.contains("VisitorType"), "{err}");
    }
}
