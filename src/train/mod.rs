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

pub mod artifact;
pub mod metrics;
pub mod model;
pub mod plots;
pub mod split;

use actors::features::encode::Encoder;
use actors::features::ShoppersFeatures;
use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use metrics::Confusion;
use model::{Ensemble, NetConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use artifact::{predict, Manifest, PurchaseModel};

/// How the model is built; recorded in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    /// Ensemble size; each member is early-stopped on its own inner fold of the
    /// training rows, so the members' out-of-fold scores cover every training
    /// row and the threshold is chosen on all of them.
    pub members: usize,
    /// Inner folds (0 = as many as members); member m validates on fold m % k.
    pub inner_folds: usize,
    /// Each member trains on a bootstrap resample of its inner training rows.
    pub bootstrap: bool,
    /// Extra rank-transformed numeric inputs.
    pub rank_inputs: bool,
    pub net: NetConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { members: 5, inner_folds: 0, bootstrap: false, rank_inputs: true, net: NetConfig::default() }
    }
}

/// Options of `cartpulse train`.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// UCI Online Shoppers CSV (with header and `Revenue`).
    pub data: PathBuf,
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

/// Held-out figures of one outer fold.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoldReport {
    pub fold: usize,
    pub accuracy: f64,
    pub auc: f64,
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub threshold: f32,
    pub confusion: Confusion,
    pub train_rows: usize,
    pub test_rows: usize,
    /// Mean epoch (of the members) whose weights were kept.
    pub mean_best_epoch: f64,
    pub seconds: f64,
}

/// The result of `cartpulse train`; its JSON is the command's last stdout line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    pub accuracy: f64,
    pub accuracy_std: f64,
    pub auc: f64,
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub folds: Vec<FoldReport>,
    pub model_dir: String,
}

/// Rows read from a UCI Online Shoppers CSV.
pub struct Dataset {
    pub features: Vec<ShoppersFeatures>,
    pub labels: Vec<bool>,
    pub sha256: String,
}

/// Reads a UCI Online Shoppers CSV through the live feature code. With
/// `require_label` false a file without the `Revenue` column is accepted (its
/// labels are then all `false`).
pub fn load_csv(path: &Path, require_label: bool) -> anyhow::Result<Dataset> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
    let header: Vec<String> = reader.headers()?.iter().map(|h| h.trim().to_owned()).collect();
    let with_label = header.len() == ShoppersFeatures::UCI_COLUMNS.len() + 1;
    if !header.iter().zip(ShoppersFeatures::UCI_COLUMNS).all(|(h, c)| h == c)
        || header.len() < ShoppersFeatures::UCI_COLUMNS.len()
        || (with_label && header[17] != "Revenue")
        || (require_label && !with_label)
    {
        bail!(
            "{}: header must be the UCI Online Shoppers columns ({}{}), got {}",
            path.display(),
            ShoppersFeatures::UCI_COLUMNS.join(","),
            if require_label { ",Revenue" } else { "[,Revenue]" },
            header.join(",")
        );
    }
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: data row {}", path.display(), i + 1))?;
        let mut fields: Vec<&str> = record.iter().collect();
        if !with_label {
            fields.push("FALSE");
        }
        let (f, y) = ShoppersFeatures::from_uci_record(&fields)
            .with_context(|| format!("{}: data row {}", path.display(), i + 1))?;
        features.push(f);
        labels.push(y);
    }
    Ok(Dataset { features, labels, sha256 })
}

/// A model fitted on some rows: everything needed to score new ones.
pub struct Fitted {
    pub encoder: Encoder,
    pub ensemble: Ensemble,
    pub threshold: f32,
    pub mean_best_epoch: f64,
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

/// Fits encoder, ensemble and threshold on `rows` only.
pub fn fit(
    rows: &[ShoppersFeatures],
    labels: &[bool],
    config: &ModelConfig,
    seed: u64,
    on_epoch: &dyn Fn(u64),
) -> anyhow::Result<Fitted> {
    let encoder = Encoder::fit_with(rows, config.rank_inputs);
    let dim = encoder.dim();
    let mut x = Vec::with_capacity(rows.len() * dim);
    for r in rows {
        encoder.encode_into(r, &mut x);
    }
    let members = config.members.max(1);
    // With one member there is no inner k-fold; hold out a fifth instead.
    let k = if config.inner_folds == 0 { members.max(2) } else { config.inner_folds.max(2) };
    let inner = split::stratified_folds(labels, k, seed ^ 0x5EED_1AAE);
    let mut oof_sum = vec![0f32; rows.len()];
    let mut oof_n = vec![0u32; rows.len()];
    let mut oof = vec![f32::NAN; rows.len()];
    let mut nets = Vec::new();
    let mut best_epochs = 0.0;
    for m in 0..members {
        let (mut train, val) = split::fold_indices(&inner, m % k);
        if config.bootstrap {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(0xB007 + m as u64));
            let n = train.len();
            train = (0..n).map(|_| train[rng.random_range(0..n)]).collect();
        }
        let (net, stats) =
            model::train_net(&x, labels, dim, &train, &val, &config.net, seed.wrapping_add(1 + m as u64), on_epoch)?;
        let p = net.predict(&gather(&x, dim, &val), dim)?;
        for (&i, p) in val.iter().zip(p) {
            oof_sum[i] += p;
            oof_n[i] += 1;
            oof[i] = oof_sum[i] / oof_n[i] as f32;
        }
        best_epochs += stats.best_epoch as f64;
        nets.push(net);
    }
    let scored: Vec<usize> = (0..rows.len()).filter(|&i| !oof[i].is_nan()).collect();
    let threshold = metrics::best_accuracy_threshold(
        &scored.iter().map(|&i| oof[i]).collect::<Vec<_>>(),
        &scored.iter().map(|&i| labels[i]).collect::<Vec<_>>(),
    );
    let mut dims = vec![dim];
    dims.extend(&config.net.hidden);
    dims.push(1);
    Ok(Fitted { encoder, ensemble: Ensemble { nets, dims }, threshold, mean_best_epoch: best_epochs / members as f64 })
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

/// Runs cross-validation, fits the final model and writes the model directory.
pub fn run(opts: TrainOptions) -> anyhow::Result<TrainReport> {
    if opts.folds < 2 {
        bail!("--folds must be at least 2, got {}", opts.folds);
    }
    let started = Instant::now();
    let data = load_csv(&opts.data, true)?;
    let n = data.labels.len();
    let positives = data.labels.iter().filter(|&&y| y).count();
    if positives < opts.folds || n - positives < opts.folds {
        bail!("{}: too few rows of each class for {} folds", opts.data.display(), opts.folds);
    }
    let fold_of = split::stratified_folds(&data.labels, opts.folds, opts.seed);
    let cfg = &opts.config;
    let epochs_per_fit = (cfg.members.max(1) * cfg.net.max_epochs) as u64;

    let multi = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} epochs {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bars: Vec<ProgressBar> = (0..=opts.folds)
        .map(|j| {
            let b = multi.add(ProgressBar::new(epochs_per_fit));
            b.set_style(style.clone());
            b.set_prefix(if j < opts.folds { format!("fold {}", j + 1) } else { "final".into() });
            b
        })
        .collect();

    // Jobs 0..folds are the CV folds, job `folds` the final model. They are
    // independent and each is deterministic, so they run on worker threads
    // (one per core) without changing any figure.
    let jobs = opts.folds + 1;
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
                        done.push((job, run_job(job, &opts, &data, &fold_of, &bars[job])));
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
    let mut oof = vec![0f32; n];
    let mut sorted = results;
    sorted.sort_by_key(|(j, _)| *j);
    for (_, r) in sorted {
        match r? {
            JobOutput::Fold(report, p, idx) => {
                for (i, p) in idx.into_iter().zip(p) {
                    oof[i] = p;
                }
                folds.push(report);
            }
            JobOutput::Final(fitted, secs) => final_model = Some((fitted, secs)),
        }
    }
    let (fitted, _) = final_model.context("the final model was not trained")?;

    let k = folds.len() as f64;
    let mean = |f: fn(&FoldReport) -> f64| folds.iter().map(f).sum::<f64>() / k;
    let accuracy = mean(|f| f.accuracy);
    let accuracy_std = (folds.iter().map(|f| (f.accuracy - accuracy).powi(2)).sum::<f64>() / (k - 1.0).max(1.0)).sqrt();
    let report = TrainReport {
        accuracy,
        accuracy_std,
        auc: mean(|f| f.auc),
        f1: mean(|f| f.f1),
        precision: mean(|f| f.precision),
        recall: mean(|f| f.recall),
        folds,
        model_dir: opts.out.display().to_string(),
    };
    artifact::write(&opts, &data, &fitted, &report, started.elapsed().as_secs_f64())?;
    if let Some(dir) = &opts.report {
        artifact::write_evaluation(dir, &oof, &data.labels, &report)?;
    }
    eprintln!("{}", summary_table(&report, started.elapsed().as_secs_f64()));
    Ok(report)
}

fn run_job(
    job: usize,
    opts: &TrainOptions,
    data: &Dataset,
    fold_of: &[usize],
    bar: &ProgressBar,
) -> anyhow::Result<JobOutput> {
    let t0 = Instant::now();
    let seed = job_seed(opts.seed, job);
    let tick = |d: u64| bar.inc(d);
    if job == opts.folds {
        let fitted = fit(&data.features, &data.labels, &opts.config, seed, &tick)?;
        bar.finish();
        return Ok(JobOutput::Final(fitted, t0.elapsed().as_secs_f64()));
    }
    let (train, test) = split::fold_indices(fold_of, job);
    let fitted = fit(&pick(&data.features, &train), &pick(&data.labels, &train), &opts.config, seed, &tick)?;
    let y_test = pick(&data.labels, &test);
    let p = fitted.predict(&pick(&data.features, &test))?;
    let c = Confusion::at(&p, &y_test, fitted.threshold);
    bar.finish();
    Ok(JobOutput::Fold(
        FoldReport {
            fold: job + 1,
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
    let mut s = String::from("fold  accuracy  auc     f1      precision  recall  threshold  epochs  secs\n");
    for f in &r.folds {
        s += &format!(
            "{:<5} {:.4}    {:.4}  {:.4}  {:.4}     {:.4}  {:.4}     {:>6.1}  {:.1}\n",
            f.fold, f.accuracy, f.auc, f.f1, f.precision, f.recall, f.threshold, f.mean_best_epoch, f.seconds
        );
    }
    s += &format!(
        "mean  {:.4}±{:.4} auc {:.4}  f1 {:.4}  precision {:.4}  recall {:.4}  ({seconds:.1} s, model in {})",
        r.accuracy, r.accuracy_std, r.auc, r.f1, r.precision, r.recall, r.model_dir
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
            data,
            folds: 3,
            seed: 5,
            out: dir.join("model"),
            report: Some(dir.join("report")),
            config: ModelConfig {
                members: 2,
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
        let fitted = fit(&ds.features, &ds.labels, &opts.config, 77, &|_| {}).unwrap();
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
    fn tampered_weights_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic_csv(dir.path(), 200);
        let opts = options(dir.path(), data.clone());
        run(opts.clone()).unwrap();
        let w = opts.out.join(artifact::WEIGHTS_FILE);
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
