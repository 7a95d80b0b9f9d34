//! The set of model versions being served and the A/B split between them.
//! A customer always lands on the same version for a given split: the choice
//! is a stable hash of the customer id against the cumulative traffic shares.

use crate::models::artifact::PurchaseModel;
use std::sync::Arc;

/// One served version.
#[derive(Clone)]
pub struct ServingModel {
    pub version: Arc<str>,
    /// Share of customers in [0, 1]; the shares of a set sum to 1.
    pub traffic_share: f64,
    pub model: Arc<PurchaseModel>,
}

/// The versions being served; empty when no model is active.
#[derive(Clone, Default)]
pub struct ServingSet {
    models: Vec<ServingModel>,
}

impl ServingSet {
    /// Normalises the shares so they sum to 1 (a set given as 0.3 / 0.7 or as
    /// a single model at any share serves every customer).
    pub fn new(mut models: Vec<ServingModel>) -> ServingSet {
        models.retain(|m| m.traffic_share.is_finite() && m.traffic_share > 0.0);
        let total: f64 = models.iter().map(|m| m.traffic_share).sum();
        for m in &mut models {
            m.traffic_share /= total;
        }
        ServingSet { models }
    }

    /// A set with one model taking all traffic.
    pub fn single(model: PurchaseModel) -> ServingSet {
        let version: Arc<str> = model.manifest.model_version.as_str().into();
        ServingSet::new(vec![ServingModel { version, traffic_share: 1.0, model: Arc::new(model) }])
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    pub fn models(&self) -> &[ServingModel] {
        &self.models
    }

    /// Versions and shares, for logs and comparisons.
    pub fn describe(&self) -> Vec<(String, f64)> {
        self.models.iter().map(|m| (m.version.to_string(), m.traffic_share)).collect()
    }

    /// The index of the model serving `key` (a customer id; requests without
    /// one go to the first, largest-share-first model).
    pub fn pick(&self, key: Option<&str>) -> Option<usize> {
        if self.models.is_empty() {
            return None;
        }
        let Some(key) = key else {
            return self
                .models
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.traffic_share.total_cmp(&b.1.traffic_share))
                .map(|(i, _)| i);
        };
        let u = unit_hash(key);
        let mut acc = 0.0;
        for (i, m) in self.models.iter().enumerate() {
            acc += m.traffic_share;
            if u < acc {
                return Some(i);
            }
        }
        Some(self.models.len() - 1)
    }
}

/// FNV-1a of the key mapped to [0, 1): stable across processes and releases,
/// so a customer keeps its arm of an A/B split on every replica.
pub fn unit_hash(key: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Mix the high bits down; FNV's low bits are weak for short keys.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::unit_hash;

    #[test]
    fn unit_hash_spreads_customers_evenly() {
        let n = 20_000;
        let below = (0..n).filter(|i| unit_hash(&format!("c{i}")) < 0.3).count();
        let share = below as f64 / n as f64;
        assert!((share - 0.3).abs() < 0.02, "{share}");
        assert_eq!(unit_hash("c42"), unit_hash("c42"));
    }
}
