//! Transform, naming and silhouette on small hand-made matrices.

use super::*;
use crate::segments::naming::{name_rfm, name_segments};
use crate::segments::transform::Scaler;

#[test]
fn robust_scaling_centres_on_the_median_and_logs_money() {
    let names = ["recency_days", "monetary", "cancellation_rate"];
    let rows = vec![
        vec![10.0, 0.0, 0.0],
        vec![20.0, 99.0, 0.0],
        vec![30.0, 999.0, 0.0],
        vec![40.0, 9_999.0, 0.0],
        vec![50.0, 99_999.0, 0.5],
    ];
    let s = Scaler::fit(&names, &rows);
    assert_eq!(s.log1p, vec![false, true, false]);
    // recency: median 30, IQR 40 − 20 = 20, linear.
    assert_eq!(s.median[0], 30.0);
    assert_eq!(s.iqr[0], 20.0);
    // monetary: median ln(1000); the 100,000 outlier is tamed by the log.
    assert!((s.median[1] - 1000f64.ln()).abs() < 1e-12);
    let t = s.transform(&rows[4]);
    assert!(t[1] < 2.0, "logged outlier stays within a few IQRs: {}", t[1]);
    assert_eq!(s.transform(&rows[2])[0], 0.0);
    // cancellation_rate has IQR 0: falls back to the range (0.5, also the ratio floor), never NaN.
    assert_eq!(s.iqr[2], 0.5);
    assert_eq!(t[2], 1.0);
    // Negative money goes through the signed log, non-finite input counts as 0.
    let neg = s.transform(&[f64::NAN, -99.0, 0.0]);
    assert!(neg.iter().all(|v| v.is_finite()) && neg[1] < 0.0);
}

#[test]
fn names_follow_recency_frequency_monetary() {
    assert_eq!(name_rfm(-0.5, 1.5, 2.0), "loyal high spenders");
    assert_eq!(name_rfm(1.2, -0.4, -0.6), "lapsed one-timers");
    assert_eq!(name_rfm(-0.5, -0.4, 1.0), "new big-ticket one-timers");
    assert_eq!(name_rfm(0.5, 1.0, 0.0), "cooling frequent mid spenders");
    assert_eq!(name_rfm(0.0, 0.0, -1.0), "regular low spenders");
    let feats = ["recency_days", "frequency", "monetary", "weekend_order_share"];
    let names = name_segments(
        &feats,
        &[vec![1.2, -0.4, -0.6, 0.0], vec![1.3, -0.5, 0.0, 0.0], vec![-0.5, 1.5, 2.0, 0.0], vec![0.0, 0.0, 0.0, 2.0]],
        None,
    );
    assert_eq!(names[..3], ["lapsed one-timers", "lapsed one-timers #2", "loyal high spenders"]);
    let names = name_segments(&feats, &[vec![0.0, 0.0, 0.0, 2.0], vec![0.1, 0.0, 0.0, -0.5], vec![0.0; 4]], None);
    assert_eq!(
        names,
        [
            "regular mid spenders, high weekend_order_share",
            "regular mid spenders, low weekend_order_share",
            "regular mid spenders",
        ]
    );
}

#[test]
fn zero_or_negative_net_spend_names_the_segment() {
    use crate::segments::naming::name_net_spend;
    assert_eq!(name_net_spend(0.0, -250.0).as_deref(), Some("net returners"));
    assert_eq!(name_net_spend(1.5, -250.0).as_deref(), Some("lapsed net returners"));
    assert_eq!(name_net_spend(0.0, 0.0).as_deref(), Some("no net spend"));
    assert_eq!(name_net_spend(0.7, 0.4).as_deref(), Some("cooling, no net spend"));
    assert_eq!(name_net_spend(0.0, 1.5), None);
    // The rule wins over r/f/m only where the net spend is ≤ 0; unknown (NaN) never triggers it.
    let feats = ["recency_days", "frequency", "monetary"];
    let cents = [vec![1.2, -0.4, -6.0], vec![-0.5, 1.5, 2.0], vec![1.2, -0.4, -0.6]];
    let names = name_segments(&feats, &cents, Some(&[-80.0, 900.0, f64::NAN]));
    assert_eq!(names, ["lapsed net returners", "loyal high spenders", "lapsed one-timers"]);
    // End to end through the scaler: customers who only returned goods form their own segment.
    let d = ProfileFeatures::NAMES.len();
    let mut rows = Vec::new();
    for i in 0..40 {
        let mut r = vec![0.0; d];
        r[0] = 20.0 + i as f64;
        r[1] = 3.0 + (i % 4) as f64;
        r[2] = 400.0 + 25.0 * i as f64;
        rows.push(r);
    }
    for i in 0..8 {
        let mut r = vec![0.0; d];
        r[0] = 200.0 + i as f64;
        r[2] = -300.0 - 10.0 * i as f64;
        r[8] = 1.0;
        rows.push(r);
    }
    let fit = fit_all(&rows, KChoice::Fixed(2), 42).expect("fit");
    let returners = fit.names.iter().position(|n| n.contains("net returners"));
    let returners = returners.unwrap_or_else(|| panic!("no net returners among {:?}", fit.names));
    assert_eq!(fit.sizes[returners], 8);
}

#[test]
fn transform_and_kmeans_find_loyal_ordinary_and_lapsed() {
    // 30 ordinary customers, 10 loyal big spenders, 10 lapsed one-timers; the
    // other 26 features stay 0 (a constant column must not disturb anything).
    let d = ProfileFeatures::NAMES.len();
    let row = |recency: f64, frequency: f64, monetary: f64| {
        let mut r = vec![0.0; d];
        r[0] = recency;
        r[1] = frequency;
        r[2] = monetary;
        r
    };
    let mut rows = Vec::new();
    for i in 0..30 {
        let x = i as f64;
        rows.push(row(30.0 + x, 2.0 + (i % 3) as f64, 300.0 + 10.0 * x));
    }
    for i in 0..10 {
        let x = i as f64;
        rows.push(row(2.0 + x * 0.1, 40.0 + x, 20_000.0 + 100.0 * x));
        rows.push(row(330.0 + x, 1.0, 80.0 + x));
    }
    let fit = fit_all(&rows, KChoice::Fixed(3), 42).expect("fit");
    let mut got: Vec<(String, usize)> = fit.names.iter().cloned().zip(fit.sizes.iter().copied()).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("lapsed one-timers".to_owned(), 10),
            ("loyal high spenders".to_owned(), 10),
            ("regular mid spenders".to_owned(), 30)
        ]
    );
    assert!(fit.silhouette > 0.5, "silhouette {}", fit.silhouette);
    assert_eq!(fit.matrix.dim(), (50, d));
    // auto tries 2..=12, and the same seed gives the same result.
    let auto = fit_all(&rows, KChoice::Auto, 42).expect("auto");
    assert_eq!(auto.scores.len(), 11);
    let again = fit_all(&rows, KChoice::Auto, 42).expect("auto again");
    assert_eq!((auto.k, &auto.centroids), (again.k, &again.centroids));
}

#[test]
fn k_parses() {
    assert_eq!("auto".parse::<KChoice>().ok(), Some(KChoice::Auto));
    assert_eq!("4".parse::<KChoice>().ok(), Some(KChoice::Fixed(4)));
    assert!("1".parse::<KChoice>().is_err() && "x".parse::<KChoice>().is_err());
}
