//! A small gradient-boosted tree model (log loss, histogram splits,
//! depth-limited trees), used only while training: its cross-fitted scores
//! are the soft targets the network is distilled on
//! ([`ModelConfig::distill`](crate::models::manifest::ModelConfig)). It is
//! never served and never written to a model directory.
//!
//! Inputs are the 17 UCI fields as numbers (categorical codes as ordinals),
//! binned once at the training rows' quantiles. Deterministic: no sampling.

use actors::event::VisitorType;
use actors::features::ShoppersFeatures;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of the teacher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GbdtConfig {
    pub trees: usize,
    pub depth: usize,
    pub learning_rate: f32,
    /// L2 penalty on leaf values.
    pub lambda: f32,
    /// Least hessian sum of a child.
    pub min_child_weight: f32,
    /// Quantile bins per column (at most 255).
    pub bins: usize,
}

impl Default for GbdtConfig {
    fn default() -> Self {
        GbdtConfig { trees: 300, depth: 4, learning_rate: 0.05, lambda: 1.0, min_child_weight: 1.0, bins: 64 }
    }
}

/// Columns of [`raw`].
pub const COLUMNS: usize = 17;

/// The 17 fields of a session as numbers.
pub fn raw(f: &ShoppersFeatures) -> [f32; COLUMNS] {
    [
        f.administrative as f32,
        f.administrative_duration as f32,
        f.informational as f32,
        f.informational_duration as f32,
        f.product_related as f32,
        f.product_related_duration as f32,
        f.bounce_rates as f32,
        f.exit_rates as f32,
        f.page_values as f32,
        f.special_day as f32,
        f32::from(f.month),
        f32::from(f.operating_systems),
        f32::from(f.browser),
        f32::from(f.region),
        f32::from(f.traffic_type),
        match f.visitor_type {
            VisitorType::Returning => 0.0,
            VisitorType::New => 1.0,
            VisitorType::Other => 2.0,
        },
        f32::from(u8::from(f.weekend)),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Node {
    /// Rows with `x[feature] <= threshold` go to `left`, the others to `left + 1`.
    Split {
        feature: usize,
        threshold: f32,
        left: usize,
    },
    Leaf(f32),
}

/// A fitted model: the base logit plus the trees' leaf values.
pub struct Gbdt {
    base: f32,
    trees: Vec<Vec<Node>>,
}

impl Gbdt {
    /// Fits on `rows` (flat, [`COLUMNS`] per row) and `labels`.
    pub fn fit(rows: &[[f32; COLUMNS]], labels: &[bool], cfg: &GbdtConfig) -> Gbdt {
        let n = rows.len();
        let pos = labels.iter().filter(|&&y| y).count() as f32;
        let rate = ((pos + 0.5) / (n as f32 + 1.0)).clamp(1e-4, 1.0 - 1e-4);
        let base = (rate / (1.0 - rate)).ln();
        let bins = cfg.bins.clamp(2, 255);
        // Cut points per column: distinct training quantiles; code = number of cuts below the value.
        let cuts: Vec<Vec<f32>> = (0..COLUMNS)
            .map(|c| {
                let mut v: Vec<f32> = rows.iter().map(|r| r[c]).collect();
                v.sort_by(f32::total_cmp);
                let mut cuts: Vec<f32> = (1..bins).map(|b| v[(b * (n - 1)) / bins]).collect();
                cuts.dedup();
                // The largest value never splits anything off.
                if cuts.last() == v.last() {
                    cuts.pop();
                }
                cuts
            })
            .collect();
        // codes[c * n + i]
        let mut codes = vec![0u8; COLUMNS * n];
        for (c, cut) in cuts.iter().enumerate() {
            for (i, r) in rows.iter().enumerate() {
                codes[c * n + i] = cut.partition_point(|&t| t < r[c]) as u8;
            }
        }
        let y: Vec<f32> = labels.iter().map(|&l| f32::from(u8::from(l))).collect();
        let mut f = vec![base; n];
        let mut g = vec![0f32; n];
        let mut h = vec![0f32; n];
        let mut trees = Vec::with_capacity(cfg.trees);
        let mut hist = vec![(0f64, 0f64); COLUMNS * 256];
        for _ in 0..cfg.trees {
            for i in 0..n {
                let p = 1.0 / (1.0 + (-f[i]).exp());
                g[i] = p - y[i];
                h[i] = (p * (1.0 - p)).max(1e-6);
            }
            // Depth-wise growth; `nodes[k]` covers `members[k]`.
            let mut nodes: Vec<Node> = vec![Node::Leaf(0.0)];
            let mut frontier: Vec<(usize, Vec<usize>)> = vec![(0, (0..n).collect())];
            for level in 0..=cfg.depth {
                let mut next = Vec::new();
                for (k, idx) in frontier {
                    let (gs, hs) =
                        idx.iter().fold((0f64, 0f64), |(a, b), &i| (a + f64::from(g[i]), b + f64::from(h[i])));
                    let lambda = f64::from(cfg.lambda);
                    let leaf = (-gs / (hs + lambda)) as f32 * cfg.learning_rate;
                    nodes[k] = Node::Leaf(leaf);
                    if level == cfg.depth || idx.len() < 2 {
                        continue;
                    }
                    hist.iter_mut().for_each(|e| *e = (0.0, 0.0));
                    for c in 0..COLUMNS {
                        let col = &codes[c * n..(c + 1) * n];
                        let hc = &mut hist[c * 256..(c + 1) * 256];
                        for &i in &idx {
                            let e = &mut hc[col[i] as usize];
                            e.0 += f64::from(g[i]);
                            e.1 += f64::from(h[i]);
                        }
                    }
                    let parent = gs * gs / (hs + lambda);
                    let mut best: Option<(f64, usize, usize)> = None;
                    let mcw = f64::from(cfg.min_child_weight);
                    for (c, cut) in cuts.iter().enumerate() {
                        let (mut gl, mut hl) = (0f64, 0f64);
                        for b in 0..cut.len() {
                            let e = hist[c * 256 + b];
                            gl += e.0;
                            hl += e.1;
                            let (gr, hr) = (gs - gl, hs - hl);
                            if hl < mcw || hr < mcw {
                                continue;
                            }
                            let gain = gl * gl / (hl + lambda) + gr * gr / (hr + lambda) - parent;
                            if gain > 1e-9 && best.is_none_or(|(bg, _, _)| gain > bg) {
                                best = Some((gain, c, b));
                            }
                        }
                    }
                    let Some((_, c, b)) = best else { continue };
                    let left = nodes.len();
                    nodes.push(Node::Leaf(0.0));
                    nodes.push(Node::Leaf(0.0));
                    nodes[k] = Node::Split { feature: c, threshold: cuts[c][b], left };
                    let col = &codes[c * n..(c + 1) * n];
                    let (l, r): (Vec<usize>, Vec<usize>) = idx.iter().partition(|&&i| col[i] as usize <= b);
                    next.push((left, l));
                    next.push((left + 1, r));
                }
                frontier = next;
                if frontier.is_empty() {
                    break;
                }
            }
            for (i, row) in rows.iter().enumerate() {
                f[i] += eval(&nodes, row);
            }
            trees.push(nodes);
        }
        Gbdt { base, trees }
    }

    /// Probabilities of `rows`.
    pub fn predict(&self, rows: &[[f32; COLUMNS]]) -> Vec<f32> {
        rows.iter()
            .map(|r| {
                let z = self.base + self.trees.iter().map(|t| eval(t, r)).sum::<f32>();
                1.0 / (1.0 + (-z).exp())
            })
            .collect()
    }
}

fn eval(nodes: &[Node], row: &[f32; COLUMNS]) -> f32 {
    let mut k = 0;
    loop {
        match nodes[k] {
            Node::Leaf(v) => return v,
            Node::Split { feature, threshold, left } => k = if row[feature] <= threshold { left } else { left + 1 },
        }
    }
}

/// Cross-fitted probabilities: every row of `rows` scored by a model fitted on
/// the other `k − 1` of `k` stratified folds.
pub fn cross_fit(rows: &[[f32; COLUMNS]], labels: &[bool], k: usize, cfg: &GbdtConfig, seed: u64) -> Vec<f32> {
    let folds = super::split::stratified_folds(labels, k.max(2), seed);
    cross_fit_on(rows, labels, &folds, cfg)
}

/// [`cross_fit`] on given folds (`folds[i]` is row `i`'s, `0..k`).
pub fn cross_fit_on(rows: &[[f32; COLUMNS]], labels: &[bool], folds: &[usize], cfg: &GbdtConfig) -> Vec<f32> {
    let k = folds.iter().max().map_or(0, |&f| f + 1);
    let mut out = vec![0f32; rows.len()];
    for f in 0..k {
        let (train, test) = super::split::fold_indices(folds, f);
        let model = Gbdt::fit(
            &train.iter().map(|&i| rows[i]).collect::<Vec<_>>(),
            &train.iter().map(|&i| labels[i]).collect::<Vec<_>>(),
            cfg,
        );
        let p = model.predict(&test.iter().map(|&i| rows[i]).collect::<Vec<_>>());
        for (i, p) in test.into_iter().zip(p) {
            out[i] = p;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_teacher_learns_the_synthetic_rule() {
        let csv = super::super::synthetic_shoppers_csv(1500, 4);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        std::fs::write(&path, csv).unwrap();
        let ds = super::super::load_csv(&path, true).unwrap();
        let rows: Vec<[f32; COLUMNS]> = ds.features.iter().map(raw).collect();
        let p = cross_fit(&rows, &ds.labels, 3, &GbdtConfig { trees: 60, ..GbdtConfig::default() }, 1);
        let auc = super::super::metrics::roc_auc(&p, &ds.labels).unwrap();
        assert!(auc > 0.8, "auc {auc}");
        assert_eq!(p, cross_fit(&rows, &ds.labels, 3, &GbdtConfig { trees: 60, ..GbdtConfig::default() }, 1));
    }
}
