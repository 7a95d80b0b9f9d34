//! Writing the model directory at the end of training (its format is
//! [`crate::models::manifest`]; [`PurchaseModel`] reads it back), the
//! evaluation figures beside it, and `cartpulse predict`.

use super::{Dataset, Fitted, TrainOptions, TrainReport};
use crate::models::artifact::PurchaseModel;
use crate::models::manifest::*;
use actors::features::ShoppersFeatures;
use anyhow::Context;
use chrono::Utc;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

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
            file: opts.data.describe(),
            sha256: data.sha256.clone(),
            rows: data.labels.len(),
            positives: data.labels.iter().filter(|&&y| y).count(),
        },
        training: TrainingRun { config: opts.config.clone(), seed: opts.seed, seconds },
        weights: WeightsFile { file: WEIGHTS_FILE.into(), sha256: weights_sha },
        reference: Some(crate::models::drift::Reference::of(&data.features, &fitted.oof_scores)),
        open_calibration: fitted.open_calibration.clone(),
    };
    let manifest_path = opts.out.join(MANIFEST_FILE);
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    Ok(manifest)
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
