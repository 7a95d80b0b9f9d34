//! The purchase-intent network in candle: a small ReLU MLP with dropout trained
//! with AdamW on (optionally class-weighted) binary cross-entropy and early
//! stopping, and the ensemble of such nets whose averaged probability is the
//! model's score.
//!
//! Every random draw (weight init, batch order, dropout masks) comes from a
//! seeded `StdRng` owned here rather than from candle's unseeded CPU RNG, so the
//! same seed gives bit-identical weights.

use super::forward::{DenseEnsemble, MemberWeights};
use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Hyper-parameters of one net and of its training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetConfig {
    /// Widths of the hidden layers.
    pub hidden: Vec<usize>,
    /// Dropout on the hidden activations while training.
    pub dropout: f32,
    /// Dropout on the inputs while training.
    pub input_dropout: f32,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub max_epochs: usize,
    /// Epochs without a better validation loss before stopping.
    pub patience: usize,
    /// Loss weight of a positive row (1 = unweighted).
    pub pos_weight: f32,
    /// Learning rate is multiplied by this at each epoch.
    pub lr_decay: f64,
    /// Adds a linear ("wide") path from the inputs straight to the logit.
    pub wide: bool,
    /// Weights kept are the mean of the last `swa` epochs' weights up to the best one.
    pub swa: usize,
    /// Targets become `y(1-ε) + ε/2`.
    pub label_smoothing: f32,
    /// Cosine learning-rate schedule over `max_epochs`.
    pub cosine: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            hidden: vec![64, 32],
            dropout: 0.2,
            input_dropout: 0.1,
            learning_rate: 2e-3,
            weight_decay: 1e-4,
            batch_size: 128,
            max_epochs: 80,
            patience: 10,
            pos_weight: 1.0,
            lr_decay: 1.0,
            wide: false,
            swa: 5,
            label_smoothing: 0.0,
            cosine: false,
        }
    }
}

struct Layer {
    /// `[in, out]`.
    w: Var,
    /// `[out]`.
    b: Var,
}

/// One MLP: `dim → hidden… → 1` logit.
pub struct Net {
    layers: Vec<Layer>,
    /// `[in, 1]` linear path added to the logit, if any.
    wide: Option<Var>,
}

impl Net {
    /// He-uniform weights (suited to ReLU), zero biases.
    fn init(dims: &[usize], wide: bool, rng: &mut StdRng) -> anyhow::Result<Net> {
        let mut layers = Vec::new();
        for pair in dims.windows(2) {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let a = (6.0 / fan_in.max(1) as f32).sqrt();
            let w: Vec<f32> = (0..fan_in * fan_out).map(|_| rng.random_range(-a..a)).collect();
            layers.push(Layer {
                w: Var::from_tensor(&Tensor::from_vec(w, (fan_in, fan_out), &Device::Cpu)?)?,
                b: Var::zeros(fan_out, DType::F32, &Device::Cpu)?,
            });
        }
        let wide = if wide { Some(Var::zeros((dims[0], 1), DType::F32, &Device::Cpu)?) } else { None };
        Ok(Net { layers, wide })
    }

    fn vars(&self) -> Vec<Var> {
        let mut v: Vec<Var> = self.layers.iter().flat_map(|l| [l.w.clone(), l.b.clone()]).collect();
        v.extend(self.wide.clone());
        v
    }

    fn snapshot(&self) -> anyhow::Result<Vec<Tensor>> {
        Ok(self.vars().iter().map(|v| v.as_tensor().copy()).collect::<Result<_, _>>()?)
    }

    fn restore(&self, saved: &[Tensor]) -> anyhow::Result<()> {
        for (v, t) in self.vars().iter().zip(saved) {
            v.set(t)?;
        }
        Ok(())
    }

    /// Logits `[n]` for inputs `[n, dim]`; with `dropout` the training-time
    /// masks are drawn from the given RNG.
    fn forward(&self, x: &Tensor, mut dropout: Option<(&NetConfig, &mut StdRng)>) -> anyhow::Result<Tensor> {
        let mut h = x.clone();
        if let Some((cfg, rng)) = dropout.as_mut() {
            h = apply_dropout(&h, cfg.input_dropout, rng)?;
        }
        let wide = match &self.wide {
            Some(w) => Some(x.matmul(w.as_tensor())?),
            None => None,
        };
        let last = self.layers.len().saturating_sub(1);
        for (i, l) in self.layers.iter().enumerate() {
            h = h.matmul(l.w.as_tensor())?.broadcast_add(l.b.as_tensor())?;
            if i < last {
                h = h.relu()?;
                if let Some((cfg, rng)) = dropout.as_mut() {
                    h = apply_dropout(&h, cfg.dropout, rng)?;
                }
            }
        }
        if let Some(w) = wide {
            h = (h + w)?;
        }
        Ok(h.squeeze(1)?)
    }

    /// Probabilities for `n` encoded rows laid out flat in `x`.
    pub fn predict(&self, x: &[f32], dim: usize) -> anyhow::Result<Vec<f32>> {
        if x.is_empty() {
            return Ok(Vec::new());
        }
        let t = Tensor::from_slice(x, (x.len() / dim, dim), &Device::Cpu)?;
        let p = candle_nn::ops::sigmoid(&self.forward(&t, None)?)?;
        Ok(p.to_vec1::<f32>()?)
    }

    fn save_into(&self, prefix: &str, out: &mut HashMap<String, Tensor>) {
        for (j, l) in self.layers.iter().enumerate() {
            out.insert(format!("{prefix}.layer{j}.weight"), l.w.as_tensor().clone());
            out.insert(format!("{prefix}.layer{j}.bias"), l.b.as_tensor().clone());
        }
        if let Some(w) = &self.wide {
            out.insert(format!("{prefix}.wide.weight"), w.as_tensor().clone());
        }
    }

    fn load_from(prefix: &str, n_layers: usize, dims: &[usize], map: &HashMap<String, Tensor>) -> anyhow::Result<Net> {
        let mut layers = Vec::new();
        for j in 0..n_layers {
            let get = |what: &str| {
                map.get(&format!("{prefix}.layer{j}.{what}"))
                    .with_context(|| format!("weights file lacks {prefix}.layer{j}.{what}"))
            };
            let (w, b) = (get("weight")?, get("bias")?);
            if w.dims() != [dims[j], dims[j + 1]] || b.dims() != [dims[j + 1]] {
                bail!(
                    "{prefix}.layer{j} has shape {:?}/{:?}, expected [{}, {}]",
                    w.dims(),
                    b.dims(),
                    dims[j],
                    dims[j + 1]
                );
            }
            layers.push(Layer {
                w: Var::from_tensor(&w.to_dtype(DType::F32)?)?,
                b: Var::from_tensor(&b.to_dtype(DType::F32)?)?,
            });
        }
        let wide = match map.get(&format!("{prefix}.wide.weight")) {
            Some(w) if w.dims() == [dims[0], 1] => Some(Var::from_tensor(&w.to_dtype(DType::F32)?)?),
            Some(w) => bail!("{prefix}.wide has shape {:?}, expected [{}, 1]", w.dims(), dims[0]),
            None => None,
        };
        Ok(Net { layers, wide })
    }
}

fn apply_dropout(h: &Tensor, p: f32, rng: &mut StdRng) -> anyhow::Result<Tensor> {
    if p <= 0.0 {
        return Ok(h.clone());
    }
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..h.elem_count()).map(|_| if rng.random::<f32>() < p { 0.0 } else { keep }).collect();
    Ok(h.mul(&Tensor::from_vec(mask, h.shape(), &Device::Cpu)?)?)
}

/// Mean weighted binary cross-entropy on logits, in the numerically stable
/// form `max(z,0) - z·y + ln(1 + e^{-|z|})`.
fn bce_with_logits(z: &Tensor, y: &Tensor, w: &Tensor) -> anyhow::Result<Tensor> {
    let per_row = ((z.relu()? - z.mul(y)?)? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    Ok((per_row.mul(w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64)?)
}

fn log_loss(p: &[f32], y: &[bool]) -> f64 {
    let eps = 1e-7f64;
    let total: f64 = p
        .iter()
        .zip(y)
        .map(|(&p, &y)| {
            let p = f64::from(p).clamp(eps, 1.0 - eps);
            -(if y { p.ln() } else { (1.0 - p).ln() })
        })
        .sum();
    total / p.len().max(1) as f64
}

/// Element-wise mean of weight snapshots.
fn average(snaps: &std::collections::VecDeque<Vec<Tensor>>) -> anyhow::Result<Vec<Tensor>> {
    let n = snaps.len().max(1) as f64;
    let mut out: Vec<Tensor> = Vec::new();
    for (k, s) in snaps.iter().enumerate() {
        if k == 0 {
            out = s.clone();
        } else {
            for (o, t) in out.iter_mut().zip(s) {
                *o = (&*o + t)?;
            }
        }
    }
    Ok(out.into_iter().map(|t| t / n).collect::<Result<_, _>>()?)
}

/// What happened while training one net.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetStats {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_loss: f64,
}

/// Rows gathered from a flat matrix.
fn gather(x: &[f32], dim: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        out.extend_from_slice(&x[i * dim..(i + 1) * dim]);
    }
    out
}

/// Trains one net on rows `train` of `x`/`y`, stopping early on the log-loss of
/// rows `val`, and returns it with the weights of its best epoch. `on_epoch` is
/// called once per epoch (and with the skipped count on an early stop) for
/// progress reporting.
#[allow(clippy::too_many_arguments)]
pub fn train_net(
    x: &[f32],
    y: &[bool],
    dim: usize,
    train: &[usize],
    val: &[usize],
    cfg: &NetConfig,
    seed: u64,
    on_epoch: &dyn Fn(u64),
) -> anyhow::Result<(Net, NetStats)> {
    train_net_on(x, y, None, dim, train, val, cfg, seed, on_epoch)
}

/// [`train_net`] with soft training targets: row `i` trains towards
/// `targets[i]` (in `[0, 1]`) instead of its label when given. Early stopping
/// still scores the validation rows against their labels.
#[allow(clippy::too_many_arguments)]
pub fn train_net_on(
    x: &[f32],
    y: &[bool],
    targets: Option<&[f32]>,
    dim: usize,
    train: &[usize],
    val: &[usize],
    cfg: &NetConfig,
    seed: u64,
    on_epoch: &dyn Fn(u64),
) -> anyhow::Result<(Net, NetStats)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut dims = vec![dim];
    dims.extend(&cfg.hidden);
    dims.push(1);
    let net = Net::init(&dims, cfg.wide, &mut rng)?;
    let mut opt = AdamW::new(
        net.vars(),
        ParamsAdamW { lr: cfg.learning_rate, weight_decay: cfg.weight_decay, ..ParamsAdamW::default() },
    )?;
    let x_val = gather(x, dim, val);
    let y_val: Vec<bool> = val.iter().map(|&i| y[i]).collect();
    let mut order = train.to_vec();
    let mut best = (f64::INFINITY, 0usize, net.snapshot()?);
    let mut recent: std::collections::VecDeque<Vec<Tensor>> = std::collections::VecDeque::new();
    let mut epochs = 0;
    let batch = cfg.batch_size.max(1);
    for epoch in 0..cfg.max_epochs {
        epochs = epoch + 1;
        order.shuffle(&mut rng);
        for chunk in order.chunks(batch) {
            if chunk.len() < 2 {
                continue;
            }
            let xb = Tensor::from_vec(gather(x, dim, chunk), (chunk.len(), dim), &Device::Cpu)?;
            let eps = cfg.label_smoothing;
            let target = |i: usize| targets.map_or(f32::from(u8::from(y[i])), |t| t[i]);
            let yv: Vec<f32> = chunk.iter().map(|&i| target(i) * (1.0 - eps) + eps / 2.0).collect();
            let wv: Vec<f32> = chunk.iter().map(|&i| if y[i] { cfg.pos_weight } else { 1.0 }).collect();
            let yb = Tensor::from_vec(yv, chunk.len(), &Device::Cpu)?;
            let wb = Tensor::from_vec(wv, chunk.len(), &Device::Cpu)?;
            let z = net.forward(&xb, Some((cfg, &mut rng)))?;
            let loss = bce_with_logits(&z, &yb, &wb)?;
            opt.backward_step(&loss)?;
        }
        if cfg.cosine {
            let t = epochs as f64 / cfg.max_epochs.max(1) as f64;
            opt.set_learning_rate(cfg.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()));
        } else {
            opt.set_learning_rate(opt.learning_rate() * cfg.lr_decay);
        }
        on_epoch(1);
        let swa = cfg.swa.max(1);
        recent.push_back(net.snapshot()?);
        if recent.len() > swa {
            recent.pop_front();
        }
        let candidate = if swa > 1 { Some(average(&recent)?) } else { None };
        let live = match &candidate {
            Some(c) => {
                let l = net.snapshot()?;
                net.restore(c)?;
                Some(l)
            }
            None => None,
        };
        let val_loss = if val.is_empty() { 0.0 } else { log_loss(&net.predict(&x_val, dim)?, &y_val) };
        if let Some(l) = &live {
            net.restore(l)?;
        }
        if val_loss < best.0 {
            best = (val_loss, epochs, candidate.map_or_else(|| net.snapshot(), Ok)?);
        } else if epochs - best.1 >= cfg.patience {
            on_epoch((cfg.max_epochs - epochs) as u64);
            break;
        }
    }
    net.restore(&best.2)?;
    Ok((net, NetStats { epochs, best_epoch: best.1, best_val_loss: best.0 }))
}

/// The nets whose mean probability is the model's score.
pub struct Ensemble {
    pub nets: Vec<Net>,
    /// Layer widths, input first, `1` last.
    pub dims: Vec<usize>,
    /// Platt scaling `[a, b]` of the mean probability `p`:
    /// `sigmoid(a · logit(p) + b)`, fitted on training rows only.
    pub calibration: Option<[f32; 2]>,
    /// The members' weights as read when the ensemble was built, laid out
    /// for scoring (the nets are not changed once in an ensemble).
    dense: DenseEnsemble,
}

/// Name of the calibration tensor in the weights file.
const CALIBRATION_TENSOR: &str = "calibration";

/// `sigmoid(a · logit(p) + b)` in f32, the same on every scoring path.
pub fn platt(p: f32, [a, b]: [f32; 2]) -> f32 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    let z = a * (p / (1.0 - p)).ln() + b;
    (1.0 + (-z).exp()).recip()
}

impl Ensemble {
    /// The ensemble of `nets` (each of layer widths `dims`), its weights
    /// copied for scoring.
    pub fn new(nets: Vec<Net>, dims: Vec<usize>, calibration: Option<[f32; 2]>) -> anyhow::Result<Ensemble> {
        let members = nets
            .iter()
            .map(|net| {
                let flat = |v: &Var| v.as_tensor().flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>();
                Ok(MemberWeights {
                    layers: net
                        .layers
                        .iter()
                        .map(|l| Ok((flat(&l.w)?, flat(&l.b)?)))
                        .collect::<candle_core::Result<_>>()?,
                    wide: net.wide.as_ref().map(flat).transpose()?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let dense = DenseEnsemble::new(&dims, members)?;
        Ok(Ensemble { nets, dims, calibration, dense })
    }

    /// Mean probability of the members for `n` encoded rows laid out flat in
    /// `x`, calibrated if the model is.
    ///
    /// The forward pass runs on the weights copied into contiguous matrices
    /// (`forward`), not as a chain of candle ops whose fixed cost per op
    /// dominated serving. It differs from candle's ([`Self::predict_candle`])
    /// only by the order of the products summed inside each dot product
    /// (|Δ| well below 1e-5), and a row's score does not depend on the batch
    /// it is scored in.
    pub fn predict(&self, x: &[f32]) -> anyhow::Result<Vec<f32>> {
        let dim = self.dims.first().copied().unwrap_or(1).max(1);
        anyhow::ensure!(x.len() % dim == 0, "{} inputs are not rows of {dim}", x.len());
        if x.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.calibrate(self.dense.mean_probability(x)))
    }

    /// [`Self::predict`] through candle ops: the reference the scoring path
    /// is checked against.
    pub fn predict_candle(&self, x: &[f32]) -> anyhow::Result<Vec<f32>> {
        let dim = self.dims.first().copied().unwrap_or(1).max(1);
        if x.is_empty() {
            return Ok(Vec::new());
        }
        // One input tensor for every member; one copy back at the end.
        let t = Tensor::from_slice(x, (x.len() / dim, dim), &Device::Cpu)?;
        let mut sum: Option<Tensor> = None;
        for net in &self.nets {
            let p = candle_nn::ops::sigmoid(&net.forward(&t, None)?)?;
            sum = Some(match sum {
                Some(s) => (s + p)?,
                None => p,
            });
        }
        let n = self.nets.len().max(1) as f64;
        let p = match sum {
            Some(s) => (s / n)?.to_vec1::<f32>()?,
            None => vec![0.0; x.len() / dim],
        };
        Ok(self.calibrate(p))
    }

    /// Applies the calibration, if any, to mean probabilities.
    fn calibrate(&self, p: Vec<f32>) -> Vec<f32> {
        match self.calibration {
            Some(c) => p.into_iter().map(|p| platt(p, c)).collect(),
            None => p,
        }
    }

    /// Weights by name, `net{i}.layer{j}.weight|bias`.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, net) in self.nets.iter().enumerate() {
            net.save_into(&format!("net{i}"), &mut out);
        }
        if let Some(c) = self.calibration {
            if let Ok(t) = Tensor::new(&c, &Device::Cpu) {
                out.insert(CALIBRATION_TENSOR.into(), t);
            }
        }
        out
    }

    /// Rebuilds the ensemble from named weights, checking every shape.
    pub fn from_tensors(map: &HashMap<String, Tensor>, dims: &[usize], members: usize) -> anyhow::Result<Ensemble> {
        if dims.len() < 2 {
            bail!("a net needs at least an input and an output layer");
        }
        let nets = (0..members)
            .map(|i| Net::load_from(&format!("net{i}"), dims.len() - 1, dims, map))
            .collect::<anyhow::Result<_>>()?;
        let calibration = match map.get(CALIBRATION_TENSOR) {
            Some(t) if t.dims() == [2] => {
                let v = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                Some([v[0], v[1]])
            }
            Some(t) => bail!("{CALIBRATION_TENSOR} has shape {:?}, expected [2]", t.dims()),
            None => None,
        };
        Ensemble::new(nets, dims.to_vec(), calibration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bce_matches_closed_form() {
        let z = Tensor::new(&[0.0f32, 2.0, -3.0], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1.0f32, 0.0, 0.0], &Device::Cpu).unwrap();
        let w = Tensor::new(&[1.0f32, 1.0, 2.0], &Device::Cpu).unwrap();
        let got = bce_with_logits(&z, &y, &w).unwrap().to_scalar::<f32>().unwrap();
        let sp = |x: f32| (1.0 + x.exp()).ln();
        let want = (sp(0.0) + sp(2.0) + 2.0 * sp(-3.0)) / 4.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn the_scoring_forward_pass_matches_candle() {
        let dim = 9;
        let mut rng = StdRng::seed_from_u64(5);
        for wide in [false, true] {
            let nets = (0..3)
                .map(|_| {
                    let net = Net::init(&[dim, 16, 8, 1], wide, &mut rng).unwrap();
                    // Non-zero biases and wide weights, as after training.
                    for v in net.vars().iter().skip(1).step_by(2).chain(net.wide.iter()) {
                        let t = Tensor::randn(0f32, 0.5, v.shape(), &Device::Cpu).unwrap();
                        v.set(&t).unwrap();
                    }
                    net
                })
                .collect();
            let ens = Ensemble::new(nets, vec![dim, 16, 8, 1], wide.then_some([1.3, -0.2])).unwrap();
            // Some exact zeros, as one-hot inputs have.
            let x: Vec<f32> =
                (0..40 * dim).map(|i| if i % 3 == 0 { 0.0 } else { rng.random_range(-2.0f32..2.0) }).collect();
            let direct = ens.predict(&x).unwrap();
            let candle = ens.predict_candle(&x).unwrap();
            assert_eq!(direct.len(), 40);
            for (a, b) in direct.iter().zip(&candle) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
            // A row scores the same alone as in any batch.
            for r in 0..40 {
                assert_eq!(ens.predict(&x[r * dim..(r + 1) * dim]).unwrap()[0], direct[r]);
            }
        }
    }

    #[test]
    fn learns_a_separable_rule_deterministically() {
        let dim = 2;
        let mut rng = StdRng::seed_from_u64(3);
        let x: Vec<f32> = (0..400 * dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let y: Vec<bool> = (0..400).map(|i| x[i * dim] + 0.5 * x[i * dim + 1] > 0.2).collect();
        let train: Vec<usize> = (0..300).collect();
        let val: Vec<usize> = (300..400).collect();
        let cfg = NetConfig { hidden: vec![8], max_epochs: 30, ..NetConfig::default() };
        let (a, _) = train_net(&x, &y, dim, &train, &val, &cfg, 9, &|_| {}).unwrap();
        let (b, _) = train_net(&x, &y, dim, &train, &val, &cfg, 9, &|_| {}).unwrap();
        let pa = a.predict(&gather(&x, dim, &val), dim).unwrap();
        assert_eq!(pa, b.predict(&gather(&x, dim, &val), dim).unwrap());
        let correct = pa.iter().zip(&val).filter(|(&p, &i)| (p >= 0.5) == y[i]).count();
        assert!(correct >= 90, "{correct}/100");
    }
}
