//! A model directory read back for scoring: `model.safetensors` (the
//! ensemble's weights) and `manifest.json`. The directory alone is enough to
//! score sessions, and it gives bit-identical probabilities to the model as
//! it was at the end of training: weights are stored as f32 and the encoder
//! statistics as JSON numbers that round-trip exactly (serde_json
//! `float_roundtrip`).

use super::manifest::{Manifest, MANIFEST_FILE, MANIFEST_FORMAT};
use super::net::Ensemble;
use actors::features::encode::{Encoder, READABLE_ENCODING_VERSIONS};
use actors::features::ShoppersFeatures;
use anyhow::{bail, Context};
use candle_core::Device;
use sha2::{Digest, Sha256};
use std::path::Path;

/// A model loaded from its directory, ready to score sessions.
pub struct PurchaseModel {
    pub manifest: Manifest,
    ensemble: Ensemble,
}

impl std::fmt::Debug for PurchaseModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurchaseModel").field("version", &self.manifest.model_version).finish_non_exhaustive()
    }
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

    /// The network behind the scores.
    pub fn ensemble(&self) -> &Ensemble {
        &self.ensemble
    }

    /// The probability that an open session with `pages` page views and
    /// whole-session score `p` ends in a purchase (`p` itself for a model
    /// without an open-session calibration).
    pub fn open_score(&self, p: f32, pages: u32) -> f32 {
        self.manifest.open_calibration.as_ref().map_or(p, |c| c.apply(p, pages))
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
