//! The model directory's manifest (`manifest.json`): version, architecture,
//! feature schema with the fitted encoder, decision threshold, the
//! configuration and cross-validation figures of the run that made it, the
//! training data's sha256 and the weights file. It is the contract between
//! `cartpulse train`, which writes it, and everything that serves or
//! registers a model, which reads it.

use crate::models::net::NetConfig;
use actors::features::encode::Encoder;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    /// The training rows' feature distributions and the out-of-fold score
    /// distribution, for drift (`models::drift`); absent in manifests
    /// written before drift existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<crate::models::drift::Reference>,
    /// How open sessions' scores are calibrated by pages seen
    /// (`models::open_calibration`); absent in manifests written before it
    /// existed (their open sessions get the whole-session score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_calibration: Option<crate::models::open_calibration::OpenCalibration>,
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
    /// Quantile bins of the piecewise-linear encoding of every numeric column
    /// (0 = none).
    pub piecewise_bins: usize,
    /// Platt-scale the ensemble's probability, fitted on the members'
    /// inner out-of-fold scores (training rows only).
    pub calibrate: bool,
    /// Members beyond the first `k` (inner folds) validate on folds of new
    /// inner splits (seeded anew every `k` members) instead of the same
    /// split again, so a row's out-of-fold score averages members trained
    /// on different rows.
    pub inner_resplit: bool,
    /// How the decision threshold is chosen on the inner out-of-fold scores.
    pub threshold_rule: ThresholdRule,
    /// Width, in logits, of the smoothing of [`ThresholdRule::Smoothed`].
    pub threshold_bandwidth: f32,
    /// Distillation: each member trains on `(1 − distill)·label + distill·t`,
    /// where `t` is a gradient-boosted teacher's cross-fitted probability on
    /// the member's own training rows (0 = plain labels). The teacher is
    /// used only while training.
    pub distill: f32,
    /// The teacher's cross-fitting folds.
    pub teacher_folds: usize,
    /// One teacher cross-fit on the inner folds serves every member of an
    /// inner split (`k` teacher fits instead of `k · teacher_folds`): a
    /// member's targets then come from teachers that saw its validation
    /// rows, which the held-out fold never is.
    pub teacher_shared: bool,
    pub teacher: crate::jobs::train::gbdt::GbdtConfig,
    pub net: NetConfig,
}

impl ModelConfig {
    /// What `cartpulse train` and `cartpulse retrain` use unless `--config`
    /// says otherwise: the default with the networks distilled from the
    /// gradient-boosted teacher and the ensemble's probability Platt-scaled
    /// on the inner out-of-fold scores (docs/model.md gives the figures it
    /// was chosen on). [`Default`] stays the plain network: it is what a
    /// manifest without these fields was trained with, and what the quick
    /// models (demo, tests) build on. Chosen on the development seeds only.
    pub fn recommended() -> Self {
        ModelConfig { distill: 0.8, calibrate: true, ..Default::default() }
    }
}

/// How the decision threshold is chosen on the training rows' inner
/// out-of-fold scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdRule {
    /// The threshold of best accuracy (the middle one of ties).
    #[default]
    Best,
    /// The maximum of the accuracy smoothed with a logistic kernel of
    /// `threshold_bandwidth` logits.
    Smoothed,
    /// 0.5 (meant for a calibrated model).
    Half,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            members: 5,
            inner_folds: 0,
            bootstrap: false,
            rank_inputs: true,
            piecewise_bins: 0,
            calibrate: false,
            inner_resplit: false,
            threshold_rule: ThresholdRule::Best,
            threshold_bandwidth: 0.3,
            distill: 0.0,
            teacher_folds: 5,
            teacher_shared: false,
            teacher: Default::default(),
            net: NetConfig::default(),
        }
    }
}

/// Held-out figures of one outer fold.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoldReport {
    /// Seed of the repeat (the outer split) this fold belongs to.
    #[serde(default)]
    pub seed: u64,
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

/// One repeat of k-fold cross-validation (one outer split, seeded `seed`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RepeatReport {
    pub seed: u64,
    /// Mean of the folds' held-out accuracies, and their std across folds.
    pub accuracy: f64,
    pub accuracy_std: f64,
    /// Mean of the folds' held-out ROC AUCs.
    pub auc: f64,
    /// ROC AUC of all out-of-fold scores of the repeat pooled together.
    pub pooled_auc: f64,
    /// Brier score of the pooled out-of-fold probabilities.
    pub brier: f64,
    /// Expected calibration error (10 equal-width bins) of the same.
    pub ece: f64,
    pub f1: f64,
}

/// The result of `cartpulse train`; its JSON is the command's last stdout line.
///
/// The fold-level figures (`accuracy`, `auc`, …) are means over every held-out
/// fold of every repeat; `accuracy_std` is the std across those folds. The
/// figures across repeats (one value per outer split) are in `repeats` and
/// summarized by the `*_repeat_std`, `worst_*` and pooled fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    pub accuracy: f64,
    pub accuracy_std: f64,
    pub auc: f64,
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    /// Std of the repeats' accuracies / AUCs (0 with one repeat).
    #[serde(default)]
    pub accuracy_repeat_std: f64,
    #[serde(default)]
    pub auc_repeat_std: f64,
    /// Lowest repeat accuracy and lowest repeat AUC (each over all repeats).
    #[serde(default)]
    pub worst_accuracy: f64,
    #[serde(default)]
    pub worst_auc: f64,
    /// Mean over repeats of the pooled out-of-fold AUC.
    #[serde(default)]
    pub pooled_auc: f64,
    /// Mean over repeats of the Brier score and ECE.
    #[serde(default)]
    pub brier: f64,
    #[serde(default)]
    pub ece: f64,
    #[serde(default)]
    pub repeats: Vec<RepeatReport>,
    pub folds: Vec<FoldReport>,
    pub model_dir: String,
}

/// Counts of the confusion matrix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    pub tn: usize,
    pub r#fn: usize,
}

impl Confusion {
    /// Predicts positive when `score >= threshold`.
    pub fn at(scores: &[f32], labels: &[bool], threshold: f32) -> Confusion {
        let mut c = Confusion::default();
        for (&s, &l) in scores.iter().zip(labels) {
            match (s >= threshold, l) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.r#fn += 1,
            }
        }
        c
    }

    pub fn total(&self) -> usize {
        self.tp + self.fp + self.tn + self.r#fn
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total())
    }

    /// 0 when nothing is predicted positive.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// 0 when there are no positives.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.r#fn)
    }

    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.r#fn)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
