//! Seeded, stratified splits: the outer k-fold of cross-validation and the
//! inner folds a training fold is cut into for early stopping and threshold.

use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};

/// Assigns each row to one of `k` folds so that every fold has (within one row)
/// the same number of positives and of negatives. Each class is shuffled with
/// `seed` and dealt round-robin; the negatives continue where the positives
/// stopped so fold sizes also differ by at most one. `k` is clamped to >= 1.
pub fn stratified_folds(labels: &[bool], k: usize, seed: u64) -> Vec<usize> {
    let k = k.max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fold = vec![0; labels.len()];
    let mut next = 0;
    for class in [true, false] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        idx.shuffle(&mut rng);
        for i in idx {
            fold[i] = next % k;
            next += 1;
        }
    }
    fold
}

/// Row indices of (training, held-out) for fold `f`.
pub fn fold_indices(fold_of: &[usize], f: usize) -> (Vec<usize>, Vec<usize>) {
    (0..fold_of.len()).partition(|&i| fold_of[i] != f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize, every: usize) -> Vec<bool> {
        (0..n).map(|i| i % every == 0).collect()
    }

    #[test]
    fn folds_are_stratified_and_balanced() {
        let y = labels(1003, 7); // 144 positives
        let k = 5;
        let f = stratified_folds(&y, k, 42);
        for fold in 0..k {
            let n = f.iter().filter(|&&x| x == fold).count();
            let pos = (0..y.len()).filter(|&i| f[i] == fold && y[i]).count();
            assert!((200..=201).contains(&n), "fold {fold}: {n}");
            assert!((28..=29).contains(&pos), "fold {fold}: {pos} positives");
        }
    }

    #[test]
    fn same_seed_same_split_other_seed_other_split() {
        let y = labels(500, 4);
        assert_eq!(stratified_folds(&y, 5, 1), stratified_folds(&y, 5, 1));
        assert_ne!(stratified_folds(&y, 5, 1), stratified_folds(&y, 5, 2));
    }

    #[test]
    fn fold_indices_partition_rows() {
        let y = labels(50, 3);
        let f = stratified_folds(&y, 4, 7);
        let (train, test) = fold_indices(&f, 2);
        assert_eq!(train.len() + test.len(), 50);
        assert!(test.iter().all(|&i| f[i] == 2));
        assert!(train.iter().all(|&i| f[i] != 2));
    }
}
