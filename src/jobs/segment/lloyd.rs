//! Lloyd's K-Means iterations over a contiguous row-major `f64` matrix,
//! written for speed: no allocation per iteration, the distance loop
//! unrolled four ways so the CPU can overlap the multiply-adds. Convergence
//! follows scikit-learn (`algorithm="lloyd"`): stop when no label changed,
//! or when the squared centre shift summed over the centres is at most
//! `tol` (scikit-learn scales its `tol` by the data's mean variance first;
//! [`absolute_tol`] does the same).

/// Squared Euclidean distance, four partial sums at a time.
#[inline]
pub fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    let mut s = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            let d = x[l] - y[l];
            s[l] += d * d;
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        let d = x - y;
        tail += d * d;
    }
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// The nearest of the `k` centres (row-major, `k × d`) to `row`, and the
/// squared distance; the lowest index wins a tie.
#[inline]
pub fn nearest(row: &[f64], centres: &[f64], d: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (j, c) in centres.chunks_exact(d).enumerate() {
        let s = sq_dist(row, c);
        if s < best.1 {
            best = (j, s);
        }
    }
    best
}

/// scikit-learn's tolerance: `tol` times the mean over columns of their variance.
pub fn absolute_tol(x: &[f64], d: usize, tol: f64) -> f64 {
    let n = x.len() / d;
    if n == 0 {
        return 0.0;
    }
    let mut mean = vec![0.0; d];
    for row in x.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = 0.0;
    for row in x.chunks_exact(d) {
        var += sq_dist(row, &mean);
    }
    tol * var / (n * d) as f64
}

/// Runs Lloyd's iterations from `centres` (`k × d`, row-major) and returns
/// the final centres and the number of iterations. A centre that loses every
/// row keeps its place.
pub fn lloyd(x: &[f64], d: usize, mut centres: Vec<f64>, max_iter: usize, tol: f64) -> (Vec<f64>, usize) {
    let n = x.len() / d;
    let k = centres.len() / d;
    let mut labels = vec![usize::MAX; n];
    let mut sums = vec![0.0; k * d];
    let mut counts = vec![0usize; k];
    let mut iterations = 0;
    for _ in 0..max_iter {
        iterations += 1;
        sums.iter_mut().for_each(|s| *s = 0.0);
        counts.iter_mut().for_each(|c| *c = 0);
        let mut changed = false;
        for (row, label) in x.chunks_exact(d).zip(labels.iter_mut()) {
            let (j, _) = nearest(row, &centres, d);
            changed |= *label != j;
            *label = j;
            counts[j] += 1;
            for (s, v) in sums[j * d..(j + 1) * d].iter_mut().zip(row) {
                *s += v;
            }
        }
        if !changed {
            break;
        }
        let mut shift = 0.0;
        for j in 0..k {
            if counts[j] == 0 {
                continue;
            }
            let inv = 1.0 / counts[j] as f64;
            for t in 0..d {
                let new = sums[j * d + t] * inv;
                let delta = new - centres[j * d + t];
                shift += delta * delta;
                centres[j * d + t] = new;
            }
        }
        if shift <= tol {
            break;
        }
    }
    (centres, iterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_match_the_plain_sum() {
        let a: Vec<f64> = (0..29).map(|i| i as f64 * 0.37).collect();
        let b: Vec<f64> = (0..29).map(|i| (i as f64).sin()).collect();
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((sq_dist(&a, &b) - plain).abs() < 1e-9 * plain);
    }

    #[test]
    fn two_blobs_converge_to_their_means() {
        // Rows around (0, 0) and (10, 10); both centres start near the first blob.
        let mut x = Vec::new();
        for i in 0..50 {
            let e = (i % 5) as f64 * 0.1;
            x.extend([e, -e]);
            x.extend([10.0 + e, 10.0 - e]);
        }
        let start = vec![0.0, 0.0, 1.0, 1.0];
        let (c, it) = lloyd(&x, 2, start, 100, absolute_tol(&x, 2, 1e-4));
        let mut c: Vec<(f64, f64)> = c.chunks(2).map(|p| (p[0], p[1])).collect();
        c.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!((c[0].0 - 0.2).abs() < 1e-9 && (c[0].1 + 0.2).abs() < 1e-9, "{c:?}");
        assert!((c[1].0 - 10.2).abs() < 1e-9 && (c[1].1 - 9.8).abs() < 1e-9, "{c:?}");
        assert!(it < 10, "{it} iterations");
    }
}
