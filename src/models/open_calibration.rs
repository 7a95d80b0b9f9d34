//! Scores for sessions still open. The network learned from whole sessions,
//! but the session actors score a session after its first page, its third,
//! …: the same features then describe a prefix of a longer session, and the
//! whole-session score of a prefix is not the probability that the session
//! will end in a purchase (a one-page prefix looks like a one-page bounce).
//!
//! Training therefore also builds prefix examples (the 17 features as they
//! stood after some page of a session, labelled with the session's final
//! outcome) and fits, per band of pages seen, a Platt scaling of the
//! whole-session score on the members' out-of-fold scores of those
//! prefixes. The manifest keeps it ([`OpenCalibration`]); serving applies
//! it to open sessions only ([`actors::hooks::Stage::Open`]). A closed
//! session's final score is the whole-session score as before.
//!
//! Each session gives one prefix per band it reached, at a page count drawn
//! within the band (among the pages it reached) by a seeded hash, so long
//! sessions do not outweigh short ones and each band sees the ages it serves.

use serde::{Deserialize, Serialize};

/// Bands of pages seen, `(from, to)` inclusive; `None`: no upper end.
pub const BANDS: [(u32, Option<u32>); 8] =
    [(1, Some(1)), (2, Some(2)), (3, Some(3)), (4, Some(5)), (6, Some(10)), (11, Some(20)), (21, Some(50)), (51, None)];

/// Fewer prefixes than this (or only one outcome among them) leave a band
/// uncalibrated: its open sessions get the whole-session score.
pub const MIN_BAND_EXAMPLES: usize = 50;

/// The open-session calibration of a model (in its manifest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpenCalibration {
    pub bands: Vec<OpenBand>,
}

/// One band's Platt scaling: `p' = σ(a·logit(p) + b)` of the whole-session
/// score `p`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpenBand {
    pub from_pages: u32,
    /// Inclusive; absent for the last band.
    pub to_pages: Option<u32>,
    pub a: f32,
    pub b: f32,
    /// Prefixes it was fitted on, and how many of their sessions purchased.
    pub examples: usize,
    pub positives: usize,
}

impl OpenBand {
    fn holds(&self, pages: u32) -> bool {
        pages >= self.from_pages && self.to_pages.is_none_or(|t| pages <= t)
    }
}

impl OpenCalibration {
    /// Fits one band per entry of [`BANDS`] from `(pages, whole-session
    /// score, purchased)` examples; bands with too few examples (or one
    /// outcome) are left out.
    pub fn fit(examples: &[(u32, f32, bool)], fit_platt: impl Fn(&[f32], &[bool]) -> [f32; 2]) -> OpenCalibration {
        let bands = BANDS
            .iter()
            .filter_map(|&(from, to)| {
                let in_band = |p: u32| p >= from && to.is_none_or(|t| p <= t);
                let (scores, labels): (Vec<f32>, Vec<bool>) =
                    examples.iter().filter(|(p, _, _)| in_band(*p)).map(|(_, s, y)| (*s, *y)).unzip();
                let positives = labels.iter().filter(|&&y| y).count();
                if scores.len() < MIN_BAND_EXAMPLES || positives == 0 || positives == labels.len() {
                    return None;
                }
                let [a, b] = fit_platt(&scores, &labels);
                Some(OpenBand { from_pages: from, to_pages: to, a, b, examples: scores.len(), positives })
            })
            .collect();
        OpenCalibration { bands }
    }

    /// The probability that an open session with `pages` page views and
    /// whole-session score `p` ends in a purchase.
    pub fn apply(&self, p: f32, pages: u32) -> f32 {
        match self.bands.iter().find(|b| b.holds(pages)) {
            Some(b) => super::net::platt(p, [b.a, b.b]),
            None => p,
        }
    }
}

/// Picks a session's prefix examples as its pages go by: one per band it
/// reaches, uniform among the band's pages it reaches (a reservoir of one
/// per band, drawn by a hash of `key`, the band and the page, so the same
/// session and key always give the same prefixes).
pub struct PrefixSampler<T> {
    key: u64,
    picked: Vec<Option<(u32, T)>>,
}

impl<T> PrefixSampler<T> {
    pub fn new(key: u64) -> Self {
        PrefixSampler { key, picked: BANDS.iter().map(|_| None).collect() }
    }

    /// The session has `pages` page views now; `take` gives its features
    /// (called only when this page is kept).
    pub fn offer(&mut self, pages: u32, take: impl FnOnce() -> T) {
        let Some(band) = BANDS.iter().position(|&(from, to)| pages >= from && to.is_none_or(|t| pages <= t)) else {
            return;
        };
        let seen = u64::from(pages - BANDS[band].0) + 1;
        if mix(self.key ^ ((band as u64 + 1) << 56) ^ (u64::from(pages) << 32)) % seen == 0 {
            self.picked[band] = Some((pages, take()));
        }
    }

    /// The prefixes kept, youngest first.
    pub fn finish(self) -> Vec<(u32, T)> {
        self.picked.into_iter().flatten().collect()
    }
}

/// A stable 64-bit key of a text (FNV-1a), for [`PrefixSampler::new`].
pub fn key_of(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// SplitMix64's finaliser: a well-spread hash of a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u32, key: u64) -> Vec<u32> {
        let mut s = PrefixSampler::new(key);
        for p in 1..=n {
            s.offer(p, || p);
        }
        s.finish()
            .into_iter()
            .map(|(p, v)| {
                assert_eq!(p, v);
                p
            })
            .collect()
    }

    #[test]
    fn prefixes_are_one_per_band_reached_and_within_it() {
        assert_eq!(sample(0, 1), Vec::<u32>::new());
        assert_eq!(sample(1, 1), vec![1]);
        assert_eq!(sample(3, 9), vec![1, 2, 3]);
        for key in 0..300 {
            let p = sample(37, key);
            assert_eq!(p.len(), 7);
            assert_eq!(&p[..3], &[1, 2, 3]);
            assert!((4..=5).contains(&p[3]) && (6..=10).contains(&p[4]) && (11..=20).contains(&p[5]));
            assert!((21..=37).contains(&p[6]), "{p:?}");
            assert_eq!(p, sample(37, key), "the same key draws the same pages");
        }
        // The draw is uniform over the band's pages: 3,000 draws over the
        // five pages 6..=10 put 600 on each, give or take sampling noise.
        let mut counts = [0u32; 5];
        for key in 0..3000 {
            counts[(sample(10, key)[4] - 6) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (480..=720).contains(&c)), "{counts:?}");
    }

    #[test]
    fn a_band_moves_its_own_scores_only() {
        // Band 1 (one page): sessions score 0.1 whole but half of them buy.
        let mut ex: Vec<(u32, f32, bool)> = (0..400).map(|i| (1, 0.1, i % 2 == 0)).collect();
        ex.extend((0..10).map(|i| (2, 0.3, i % 2 == 0)));
        let platt = |s: &[f32], y: &[bool]| {
            // The least-squares logit shift that matches the purchase rate.
            let rate = y.iter().filter(|&&v| v).count() as f32 / y.len() as f32;
            let z = |p: f32| (p / (1.0 - p)).ln();
            [1.0, z(rate) - z(s[0])]
        };
        let c = OpenCalibration::fit(&ex, platt);
        assert_eq!(c.bands.len(), 1, "band 2 has too few examples");
        assert_eq!((c.bands[0].examples, c.bands[0].positives), (400, 200));
        assert!((c.apply(0.1, 1) - 0.5).abs() < 1e-5);
        assert_eq!(c.apply(0.3, 2), 0.3);
        assert_eq!(c.apply(0.3, 60), 0.3);
    }
}
