//! Lloyd's K-Means iterations over a contiguous row-major `f64` matrix,
//! written for speed: Hamerly's bounds skip the rows whose centre cannot
//! change, and the distance loop is unrolled four ways so the CPU can
//! overlap the multiply-adds. Convergence
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

/// The nearest and second-nearest centre to `row`: (index, distance,
/// second distance), distances not squared.
#[inline]
fn two_nearest(row: &[f64], centres: &[f64], d: usize) -> (usize, f64, f64) {
    let (mut best, mut first, mut second) = (0, f64::INFINITY, f64::INFINITY);
    for (j, c) in centres.chunks_exact(d).enumerate() {
        let s = sq_dist(row, c);
        if s < first {
            second = first;
            first = s;
            best = j;
        } else if s < second {
            second = s;
        }
    }
    (best, first.sqrt(), second.sqrt())
}

/// New centres: the mean of each centre's rows (a centre without rows keeps
/// its place). Returns how far each centre moved and the summed squared shift.
fn update_centres(
    x: &[f64],
    d: usize,
    labels: &[usize],
    centres: &mut [f64],
    sums: &mut [f64],
    counts: &mut [usize],
) -> (Vec<f64>, f64) {
    sums.iter_mut().for_each(|s| *s = 0.0);
    counts.iter_mut().for_each(|c| *c = 0);
    for (row, &j) in x.chunks_exact(d).zip(labels) {
        counts[j] += 1;
        for (s, v) in sums[j * d..(j + 1) * d].iter_mut().zip(row) {
            *s += v;
        }
    }
    let k = counts.len();
    let mut moved = vec![0.0; k];
    let mut shift = 0.0;
    for j in 0..k {
        if counts[j] == 0 {
            continue;
        }
        let inv = 1.0 / counts[j] as f64;
        let mut sq = 0.0;
        for t in 0..d {
            let new = sums[j * d + t] * inv;
            let delta = new - centres[j * d + t];
            sq += delta * delta;
            centres[j * d + t] = new;
        }
        moved[j] = sq.sqrt();
        shift += sq;
    }
    (moved, shift)
}

/// Runs Lloyd's iterations from `centres` (`k × d`, row-major) and returns
/// the final centres and the number of iterations.
///
/// Exact Lloyd, accelerated with Hamerly's bounds: each row keeps an upper
/// bound on the distance to its centre and a lower bound on the distance to
/// any other; when the upper bound is below both the lower bound and half
/// the distance from its centre to the nearest other centre, no other centre
/// can be closer and the row is skipped. Rows are assigned exactly as a full
/// scan would, so the result is Lloyd's (up to ties).
pub fn lloyd(x: &[f64], d: usize, mut centres: Vec<f64>, max_iter: usize, tol: f64) -> (Vec<f64>, usize) {
    let n = x.len() / d;
    let k = centres.len() / d;
    let mut labels = vec![0usize; n];
    let mut upper = vec![0.0; n];
    let mut lower = vec![0.0; n];
    for (i, row) in x.chunks_exact(d).enumerate() {
        let (j, u, l) = two_nearest(row, &centres, d);
        labels[i] = j;
        upper[i] = u;
        lower[i] = l;
    }
    let mut sums = vec![0.0; k * d];
    let mut counts = vec![0usize; k];
    let (mut moved, mut shift) = update_centres(x, d, &labels, &mut centres, &mut sums, &mut counts);
    let mut iterations = 1;
    let mut half_gap = vec![0.0; k];
    while iterations < max_iter && shift > tol {
        iterations += 1;
        let max_moved = moved.iter().copied().fold(0.0, f64::max);
        for (j, gap) in half_gap.iter_mut().enumerate() {
            let cj = &centres[j * d..(j + 1) * d];
            let nearest_other = centres
                .chunks_exact(d)
                .enumerate()
                .filter(|&(o, _)| o != j)
                .map(|(_, c)| sq_dist(cj, c))
                .fold(f64::INFINITY, f64::min);
            *gap = 0.5 * nearest_other.sqrt();
        }
        let mut changed = false;
        for (i, row) in x.chunks_exact(d).enumerate() {
            let a = labels[i];
            upper[i] += moved[a];
            lower[i] -= max_moved;
            let bound = half_gap[a].max(lower[i]);
            if upper[i] <= bound {
                continue;
            }
            upper[i] = sq_dist(row, &centres[a * d..(a + 1) * d]).sqrt();
            if upper[i] <= bound {
                continue;
            }
            let (j, u, l) = two_nearest(row, &centres, d);
            if j != a {
                changed = true;
                labels[i] = j;
            }
            upper[i] = u;
            lower[i] = l;
        }
        if !changed {
            break;
        }
        (moved, shift) = update_centres(x, d, &labels, &mut centres, &mut sums, &mut counts);
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

    /// Plain Lloyd with the same stopping rule: a full scan of every centre
    /// for every row at every iteration.
    fn plain(x: &[f64], d: usize, mut c: Vec<f64>, max_iter: usize, tol: f64) -> Vec<f64> {
        let k = c.len() / d;
        let mut labels: Vec<usize> = x.chunks_exact(d).map(|r| nearest(r, &c, d).0).collect();
        let (mut sums, mut counts) = (vec![0.0; k * d], vec![0; k]);
        let (_, mut shift) = update_centres(x, d, &labels, &mut c, &mut sums, &mut counts);
        let mut it = 1;
        while it < max_iter && shift > tol {
            it += 1;
            let next: Vec<usize> = x.chunks_exact(d).map(|r| nearest(r, &c, d).0).collect();
            if next == labels {
                break;
            }
            labels = next;
            shift = update_centres(x, d, &labels, &mut c, &mut sums, &mut counts).1;
        }
        c
    }

    #[test]
    fn the_bounds_change_nothing() {
        // Deterministic pseudo-random rows in 5 dimensions, 8 loose clusters.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let (n, d, k) = (2_000, 5, 8);
        let x: Vec<f64> =
            (0..n).flat_map(|i| (0..d).map(move |t| ((i % 8) * 3 + t) as f64)).map(|v| v + next() * 6.0).collect();
        let start: Vec<f64> = x[..k * d].to_vec();
        let tol = absolute_tol(&x, d, 1e-4);
        let (fast, _) = lloyd(&x, d, start.clone(), 300, tol);
        let slow = plain(&x, d, start, 300, tol);
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() < 1e-9, "{fast:?}\n{slow:?}");
        }
    }
}
