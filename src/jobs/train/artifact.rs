//! The model directory: `model.safetensors` (the ensemble's weights) and
//! `manifest.json` (version, architecture, feature schema with the fitted
//! encoder, decision threshold, CV figures, training-data sha256, created-at).
//! The directory alone is enough to score sessions ([`PurchaseModel`]), and it
//! gives bit-identical probabilities to the model as it was at the end of
//! training: weights are stored as f32 and the encoder statistics as JSON
//! numbers that round-trip exactly (serde_json `float_roundtrip`).

use super::model::Ensemble;
use super::{Dataset, Fitted, ModelConfig, TrainOptions, TrainReport};
use actors::features::encode::{Encoder, READABLE_ENCODING_VERSIONS};
use actors::features::ShoppersFeatures;
use anyhow::{bail, Context};
use candle_core::Device;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Identifies the manifest layout; a loader refuses any other.
pub const MANIFEST_FORMAT: &str = "cartpulse-purchase-intent/1";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub model_version: String,
    pub created_at: DateTime<Utc>,
    pub architecture: Architecture,
    pub feature_schema: FeatureSchema,
    /// Predict positive (will buy) when the probability is `>= threshold`;
    /// chosen on training rows only to maximize accuracy.
    pub threshold: f32,
    pub cv: CvSummary,
    pub training_data: TrainingData,
    pub training: TrainingRun,
    pub weights: WeightsFile,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Architecture {
    /// `mlp_ensemble`: the score is the mean of the members' sigmoid outputs.
    pub kind: String,
    /// Layer widths, input first, `1` (the logit) last.
    pub dims: Vec<usize>,
    pub members: usize,
    pub activation: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeatureSchema {
    /// The session features the model reads (UCI column names).
    pub source_columns: Vec<String>,
    /// Names of the encoded inputs, in order.
    pub inputs: Vec<String>,
    /// The fitted encoding (normalisation statistics and category levels).
    pub encoder: Encoder,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CvSummary {
    pub folds: usize,
    pub seed: u64,
    pub report: TrainReport,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainingData {
    pub file: String,
    pub sha256: String,
    pub rows: usize,
    pub positives: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainingRun {
    pub config: ModelConfig,
    pub seed: u64,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WeightsFile {
    pub file: String,
    pub sha256: String,
}

/// Writes the final model to `opts.out`: weights first, the manifest last, so
/// a directory with a manifest is complete.
pub(super) fn write(
    opts: &TrainOptions,
    data: &Dataset,
    fitted: &Fitted,
    report: &TrainReport,
    seconds: f64,
) -> anyhow::Result<Manifest> {
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let weights_path = opts.out.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&fitted.ensemble.tensors(), &weights_path)
        .with_context(|| format!("writing {}", weights_path.display()))?;
    let weights_sha = hex::encode(Sha256::digest(std::fs::read(&weights_path)?));
    let created_at = Utc::now();
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        model_version: format!("pi-{}-{}", created_at.format("%Y%m%dT%H%M%SZ"), &weights_sha[..8]),
        created_at,
        architecture: Architecture {
            kind: "mlp_ensemble".into(),
            dims: fitted.ensemble.dims.clone(),
            members: fitted.ensemble.nets.len(),
            activation: "relu".into(),
        },
        feature_schema: FeatureSchema {
            source_columns: ShoppersFeatures::UCI_COLUMNS.iter().map(|c| c.to_string()).collect(),
            inputs: fitted.encoder.input_names(),
            encoder: fitted.encoder.clone(),
        },
        threshold: fitted.threshold,
        cv: CvSummary { folds: opts.folds, seed: opts.seed, report: report.clone() },
        training_data: TrainingData {
            file: opts.data.display().to_string(),
            sha256: data.sha256.clone(),
            rows: data.labels.len(),
            positives: data.labels.iter().filter(|&&y| y).count(),
        },
        training: TrainingRun { config: opts.config.clone(), seed: opts.seed, seconds },
        weights: WeightsFile { file: WEIGHTS_FILE.into(), sha256: weights_sha },
    };
    let manifest_path = opts.out.join(MANIFEST_FILE);
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    Ok(manifest)
}

/// A model loaded from its directory, ready to score sessions.
pub struct PurchaseModel {
    pub manifest: Manifest,
    ensemble: Ensemble,
}

impl PurchaseModel {
    /// Loads and checks a model directory: manifest format, encoding version,
    /// weights sha256 and every tensor shape.
    pub fn load(dir: &Path) -> anyhow::Result<PurchaseModel> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest: Manifest = serde_json::from_slice(
            &std::fs::read(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?,
        )
        .with_context(|| format!("parsing {}", manifest_path.display()))?;
        if manifest.format != MANIFEST_FORMAT {
            bail!("{}: format {:?}, expected {MANIFEST_FORMAT:?}", manifest_path.display(), manifest.format);
        }
        let enc = &manifest.feature_schema.encoder;
        if !READABLE_ENCODING_VERSIONS.contains(&enc.encoding_version) {
            bail!(
                "{}: encoding version {}, this build reads {READABLE_ENCODING_VERSIONS:?}",
                manifest_path.display(),
                enc.encoding_version
            );
        }
        let weights_path = dir.join(&manifest.weights.file);
        let bytes = std::fs::read(&weights_path).with_context(|| format!("reading {}", weights_path.display()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != manifest.weights.sha256 {
            bail!("{}: sha256 {sha} does not match the manifest's {}", weights_path.display(), manifest.weights.sha256);
        }
        let dims = &manifest.architecture.dims;
        if dims.first() != Some(&enc.dim()) || dims.last() != Some(&1) {
            bail!(
                "{}: layer widths {dims:?} do not fit the encoder ({} inputs, 1 output)",
                manifest_path.display(),
                enc.dim()
            );
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .with_context(|| format!("parsing {}", weights_path.display()))?;
        let ensemble = Ensemble::from_tensors(&tensors, dims, manifest.architecture.members)?;
        Ok(PurchaseModel { manifest, ensemble })
    }

    pub fn encoder(&self) -> &Encoder {
        &self.manifest.feature_schema.encoder
    }

    /// Purchase probabilities for rows already encoded with [`Self::encoder`],
    /// laid out flat (`n × encoder().dim()`).
    pub fn score_encoded(&self, x: &[f32]) -> anyhow::Result<Vec<f32>> {
        self.ensemble.predict(x)
    }

    /// Purchase probabilities for `rows`.
    pub fn predict(&self, rows: &[ShoppersFeatures]) -> anyhow::Result<Vec<f32>> {
        let enc = self.encoder();
        let mut x = Vec::with_capacity(rows.len() * enc.dim());
        for r in rows {
            enc.encode_into(r, &mut x);
        }
        self.ensemble.predict(&x)
    }
}

/// `cartpulse predict`: scores every row of a UCI-format CSV (with or without
/// `Revenue`) and writes `row,probability` (rows numbered from 0) to `out`, or
/// to stdout without it.
pub fn predict(model_dir: &Path, data_csv: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let model = PurchaseModel::load(model_dir)?;
    let data = super::load_csv(data_csv, false)?;
    let p = model.predict(&data.features)?;
    let mut text = String::with_capacity(p.len() * 16 + 16);
    text.push_str("row,probability\n");
    for (i, p) in p.iter().enumerate() {
        // `{}` on f32 prints the shortest string that parses back to the same
        // value, so the file carries the exact probabilities.
        text.push_str(&format!("{i},{p}\n"));
    }
    match out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?,
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(())
}

/// Writes the report: ROC points and calibration bins of the out-of-fold
/// scores and the summed confusion matrix, as CSV/JSON and as PNG figures
/// (`roc.png`, `calibration.png`, `confusion.png`, see [`super::plots`]).
pub(super) fn write_evaluation(dir: &Path, oof: &[f32], labels: &[bool], report: &TrainReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut scores = String::from("row,label,score\n");
    for (i, (s, y)) in oof.iter().zip(labels).enumerate() {
        scores += &format!("{i},{},{s}\n", u8::from(*y));
    }
    std::fs::write(dir.join("oof_scores.csv"), scores)?;
    let mut order: Vec<usize> = (0..oof.len()).collect();
    order.sort_by(|&a, &b| oof[b].total_cmp(&oof[a]));
    let (p, n) = labels.iter().fold((0usize, 0usize), |(p, n), &y| if y { (p + 1, n) } else { (p, n + 1) });
    let mut roc = String::from("fpr,tpr\n0,0\n");
    let mut roc_points = vec![(0f64, 0f64)];
    let (mut tp, mut fp) = (0usize, 0usize);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1
        } else {
            fp += 1
        }
        if order.get(k + 1).is_none_or(|&j| oof[j] != oof[i]) {
            let point = (fp as f64 / n.max(1) as f64, tp as f64 / p.max(1) as f64);
            roc += &format!("{},{}\n", point.0, point.1);
            roc_points.push(point);
        }
    }
    std::fs::write(dir.join("roc.csv"), roc)?;
    let mut bins = vec![(0f64, 0usize, 0usize); 10];
    for (&s, &y) in oof.iter().zip(labels) {
        let b = ((s * 10.0) as usize).min(9);
        bins[b].0 += f64::from(s);
        bins[b].1 += 1;
        bins[b].2 += usize::from(y);
    }
    let mut cal = String::from("bin,mean_predicted,observed_rate,rows\n");
    let mut cal_points = Vec::new();
    for (b, (sum, count, pos)) in bins.iter().enumerate() {
        if *count > 0 {
            let (mean, rate) = (sum / *count as f64, *pos as f64 / *count as f64);
            cal += &format!("{b},{mean},{rate},{count}\n");
            cal_points.push((mean, rate, *count));
        }
    }
    std::fs::write(dir.join("calibration.csv"), cal)?;
    let total = report.folds.iter().fold(super::metrics::Confusion::default(), |mut acc, f| {
        acc.tp += f.confusion.tp;
        acc.fp += f.confusion.fp;
        acc.tn += f.confusion.tn;
        acc.r#fn += f.confusion.r#fn;
        acc
    });
    std::fs::write(dir.join("confusion.json"), serde_json::to_vec_pretty(&total)?)?;
    let auc = super::metrics::roc_auc(oof, labels).unwrap_or(f64::NAN);
    super::plots::write_all(dir, &roc_points, auc, &cal_points, &total)?;
    Ok(())
}
