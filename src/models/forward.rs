//! The ensemble's forward pass for scoring: every member's weights copied
//! once into contiguous f32 matrices and multiplied with `matrixmultiply`'s
//! sgemm (packed, cache-blocked, SIMD kernels chosen at run time), a block
//! of rows at a time. Candle stays the reference and the training engine;
//! scoring through it pays a fixed cost per op and per tensor that
//! dominated small batches and left the f32 units half idle on large ones.
//!
//! The first layers of all members, and their wide paths, sit side by side
//! in one matrix, so the widest product (inputs × first hidden layer) is a
//! single sgemm for the whole ensemble. `matrixmultiply` rather than the
//! `gemm` crate candle uses: `gemm` switches to other kernels for one-row
//! and small products (a different summation order), while
//! `matrixmultiply` runs every tile through the same micro-kernel and sums
//! each dot product in the same order whatever the number of rows, so a
//! session scored alone gets exactly the score it gets inside a batch.

use std::cell::RefCell;

/// Rows multiplied per block: the pool's largest batch; bigger inputs
/// (`cartpulse predict` on a file, training's held-out folds) are scored
/// block by block, which keeps the activations in cache and does not
/// change any row's score.
const BLOCK_ROWS: usize = 256;

/// One dense layer, `[inputs, outputs]` row-major, and its bias.
struct Dense {
    w: Vec<f32>,
    b: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

/// The weights of an ensemble laid out for sgemm.
pub struct DenseEnsemble {
    dim: usize,
    members: usize,
    /// Width of each member's first layer.
    first_width: usize,
    /// `[dim, members · first_width (+ members if wide)]`: member m's first
    /// layer in columns `m·first_width ..`, then one wide column per member.
    first: Vec<f32>,
    /// Bias of `first`'s columns (0 under the wide columns, which have none).
    first_bias: Vec<f32>,
    wide: bool,
    /// Layers after the first, per member.
    rest: Vec<Vec<Dense>>,
}

/// Per-thread buffers, so a worker scores batch after batch without
/// allocating.
#[derive(Default)]
struct Scratch {
    first: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A member as plain weights: per layer `(w [in, out] row-major, b [out])`,
/// and the wide path `[dim]` if any.
pub struct MemberWeights {
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
    pub wide: Option<Vec<f32>>,
}

impl DenseEnsemble {
    /// Lays out the members (all of the same `dims`, input first, 1 last).
    pub fn new(dims: &[usize], members: Vec<MemberWeights>) -> anyhow::Result<DenseEnsemble> {
        anyhow::ensure!(dims.len() >= 2 && dims.last() == Some(&1), "dims {dims:?} do not end in one logit");
        anyhow::ensure!(!members.is_empty(), "an ensemble needs a member");
        let (dim, first_width) = (dims[0], dims[1]);
        let wide = members[0].wide.is_some();
        for (m, member) in members.iter().enumerate() {
            anyhow::ensure!(member.layers.len() == dims.len() - 1, "member {m} has {} layers", member.layers.len());
            for (j, (w, b)) in member.layers.iter().enumerate() {
                anyhow::ensure!(
                    w.len() == dims[j] * dims[j + 1] && b.len() == dims[j + 1],
                    "member {m} layer {j} does not have shape [{}, {}]",
                    dims[j],
                    dims[j + 1]
                );
            }
            anyhow::ensure!(
                member.wide.as_ref().map(Vec::len) == wide.then_some(dim),
                "member {m}'s wide path differs from member 0's"
            );
        }
        let n = members.len();
        let cols = n * first_width + if wide { n } else { 0 };
        let mut first = vec![0f32; dim * cols];
        let mut first_bias = vec![0f32; cols];
        for (m, member) in members.iter().enumerate() {
            let (w, b) = &member.layers[0];
            for i in 0..dim {
                first[i * cols + m * first_width..][..first_width]
                    .copy_from_slice(&w[i * first_width..][..first_width]);
            }
            first_bias[m * first_width..][..first_width].copy_from_slice(b);
            if let Some(wv) = &member.wide {
                for (i, &v) in wv.iter().enumerate() {
                    first[i * cols + n * first_width + m] = v;
                }
            }
        }
        let rest = members
            .into_iter()
            .map(|member| {
                member
                    .layers
                    .into_iter()
                    .enumerate()
                    .skip(1)
                    .map(|(j, (w, b))| Dense { w, b, inputs: dims[j], outputs: dims[j + 1] })
                    .collect()
            })
            .collect();
        Ok(DenseEnsemble { dim, members: n, first_width, first, first_bias, wide, rest })
    }

    /// Mean member probability of each row of `x` (`n × dim`, flat),
    /// before calibration. Per row: the members' layers, ReLU between
    /// them, the wide path added to the logit, the sigmoid, and the mean
    /// as candle computes it (a sum scaled by `1/members`).
    pub fn mean_probability(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len() / self.dim.max(1);
        let mut out = Vec::with_capacity(n);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            for block in x[..n * self.dim].chunks(BLOCK_ROWS * self.dim) {
                self.block(block, &mut s, &mut out);
            }
        });
        let scale = (1.0 / self.members as f64) as f32;
        out.iter_mut().for_each(|p| *p *= scale);
        out
    }

    /// Appends the summed member probabilities of the rows of `x`.
    fn block(&self, x: &[f32], s: &mut Scratch, out: &mut Vec<f32>) {
        let rows = x.len() / self.dim;
        let cols = self.first_bias.len();
        let Scratch { first, a, b } = s;
        fill_bias(first, rows, &self.first_bias);
        sgemm(rows, self.dim, cols, x, self.dim, &self.first, cols, first, cols);
        let start = out.len();
        out.resize(start + rows, 0.0);
        let sums = &mut out[start..];
        let fw = self.first_width;
        for (m, layers) in self.rest.iter().enumerate() {
            // The member's first-layer activations are a column block of `first`.
            if !layers.is_empty() {
                for r in 0..rows {
                    relu(&mut first[r * cols + m * fw..][..fw]);
                }
            }
            for (j, l) in layers.iter().enumerate() {
                fill_bias(b, rows, &l.b);
                if j == 0 {
                    sgemm(rows, l.inputs, l.outputs, &first[m * fw..], cols, &l.w, l.outputs, b, l.outputs);
                } else {
                    sgemm(rows, l.inputs, l.outputs, a, l.inputs, &l.w, l.outputs, b, l.outputs);
                }
                if j + 1 < layers.len() {
                    b.chunks_mut(l.outputs).for_each(relu);
                }
                // `a` holds the latest layer's output.
                std::mem::swap(a, b);
            }
            for (r, sum) in sums.iter_mut().enumerate() {
                // The last layer has one output: the logit.
                let mut z = if layers.is_empty() { first[r * cols + m * fw] } else { a[r] };
                if self.wide {
                    z += first[r * cols + self.members * fw + m];
                }
                *sum += (1.0 + (-z).exp()).recip();
            }
        }
    }
}

/// `dst` becomes `rows` copies of `bias`: sgemm then adds the product to it.
fn fill_bias(dst: &mut Vec<f32>, rows: usize, bias: &[f32]) {
    dst.clear();
    for _ in 0..rows {
        dst.extend_from_slice(bias);
    }
}

fn relu(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = x.max(0.0));
}

/// `c[m × n] += a[m × k] · b[k × n]`, all row-major with the given row strides.
#[allow(clippy::too_many_arguments)]
fn sgemm(m: usize, k: usize, n: usize, a: &[f32], lda: usize, b: &[f32], ldb: usize, c: &mut [f32], ldc: usize) {
    if m == 0 || n == 0 {
        return;
    }
    // Every element the kernel touches is inside its slice.
    assert!(a.len() >= (m - 1) * lda + k && lda >= k);
    assert!(b.len() >= k.saturating_sub(1) * ldb + n && ldb >= n);
    assert!(c.len() >= (m - 1) * ldc + n && ldc >= n);
    // SAFETY: the asserts above keep every index the strides reach in bounds;
    // `c` is borrowed mutably, so it aliases neither `a` nor `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            lda as isize,
            1,
            b.as_ptr(),
            ldb as isize,
            1,
            1.0,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::jobs::train::{ModelConfig, TrainOptions};
    use crate::models::artifact::PurchaseModel;
    use crate::models::net::NetConfig;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Scores of every row both ways; the largest |online − offline|.
    fn largest_gap(model: &PurchaseModel, x: &[f32]) -> f32 {
        let online = model.score_encoded(x).unwrap();
        let offline = model.ensemble().predict_candle(x).unwrap();
        assert_eq!(online.len(), offline.len());
        online.iter().zip(&offline).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn online_scores_equal_candle_on_a_trained_model_for_any_input_and_batch() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("shoppers.csv");
        std::fs::write(&data, crate::jobs::train::synthetic_shoppers_csv(600, 7)).unwrap();
        let out = dir.path().join("model");
        // The default architecture (5 members, 64-32, rank inputs), a few epochs.
        for wide in [false, true] {
            crate::jobs::train::run(TrainOptions {
                data: data.clone().into(),
                folds: 2,
                seed: 7,
                out: out.clone(),
                report: None,
                config: ModelConfig {
                    calibrate: wide,
                    net: NetConfig { max_epochs: 4, wide, ..NetConfig::default() },
                    ..ModelConfig::default()
                },
                progress: false,
            })
            .unwrap();
            let model = PurchaseModel::load(&out).unwrap();
            assert_eq!(model.ensemble().nets.len(), 5);
            assert_eq!(model.ensemble().calibration.is_some(), wide);
            let dim = model.encoder().dim();

            // Real sessions, encoded as serving encodes them.
            let rows = crate::jobs::train::load_csv(&data, true).unwrap().features;
            let mut x = Vec::new();
            for r in &rows {
                model.encoder().encode_into(r, &mut x);
            }
            let gap = largest_gap(&model, &x);
            assert!(gap < 1e-5, "sessions: online and offline differ by {gap}");

            // Random inputs well outside the training range, with exact zeros.
            let mut rng = StdRng::seed_from_u64(11);
            let random: Vec<f32> =
                (0..1_000 * dim).map(|i| if i % 4 == 0 { 0.0 } else { rng.random_range(-4.0f32..4.0) }).collect();
            let gap = largest_gap(&model, &random);
            assert!(gap < 1e-5, "random inputs: online and offline differ by {gap}");

            // Whatever the batch (one row, a ragged block, blocks of 256 and
            // a tail), each row gets the score it gets in the whole batch.
            let whole = model.score_encoded(&random).unwrap();
            for size in [1, 3, 255, 256, 257, 700] {
                let mut parts = Vec::new();
                for chunk in random.chunks(size * dim) {
                    parts.extend(model.score_encoded(chunk).unwrap());
                }
                assert_eq!(parts, whole, "batches of {size}");
            }
        }
    }
}
