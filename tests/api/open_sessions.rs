//! Open sessions: UCI rows replayed through a served model; the event log
//! replayed page by page must give, for whole sessions, exactly the live
//! evaluation's figures (the features the actors stored and scored at
//! close), and at 1, 3, 5 and 10 pages exactly the live evaluation by age
//! (the scores the actors got while the sessions were open, through the
//! model's open-session calibration), which must be better calibrated than
//! the whole-session model's scores of the same prefixes.

use crate::helpers::*;
use crate::inference::tiny_model;
use cartpulse::models::artifact::PurchaseModel;
use std::time::Duration;

#[actix_web::test]
async fn open_session_figures_by_age_end_at_the_live_evaluation() {
    let dir = tiny_model(1);
    let model = PurchaseModel::load(&dir).unwrap();
    let version = model.manifest.model_version.clone();
    let model_dir = dir.display().to_string();
    let app = spawn_app_with(Db::Sqlite, move |s| {
        s.inference.model_dir = Some(model_dir);
        s.inference.score_debounce_ms = Duration::from_millis(50);
        s.inference.evaluate_every_s = Duration::from_secs(1);
    })
    .await;
    let csv = uci_rows(|i| i % 5 == 1);
    let rows = (csv.lines().count() - 1) as u64;
    let path = app.dir.path().join("sample.csv");
    std::fs::write(&path, csv).unwrap();
    app.replay_file(cartpulse::jobs::replay::ReplayFormat::Shoppers, path).await;
    let evaluation = eventually("every session is scored at close", Duration::from_secs(90), || async {
        let (status, e) = app.get_json(&format!("/v1/models/{version}/evaluation"), Some(&app.read_key)).await;
        match e["overall"]["sessions"].as_u64() {
            // Age scores can land after the final score: wait for the youngest age too.
            Some(n) if status == 200 && n == rows && e["by_age"][0]["sessions"].as_u64() == Some(rows) => Ok(e),
            _ => Err(format!("{status} {} {}", e["overall"]["sessions"], e["by_age"][0]["sessions"])),
        }
    })
    .await;

    let db = cartpulse::db::connect(&test_settings(&app.database_url)).await.unwrap();
    let r = cartpulse::models::open_sessions::report(&db, &model, chrono_tz::Tz::UTC, None, chrono::Utc::now())
        .await
        .unwrap();
    eprintln!("{}", cartpulse::models::open_sessions::table(&r));
    assert_eq!(r.ages.len(), 5);
    let whole = &r.ages[4];
    assert_eq!((whole.pages, whole.sessions), (None, rows));
    let o = &evaluation["overall"];
    assert_eq!(whole.purchases, o["positives"].as_u64().unwrap());
    assert!((whole.auc.unwrap() - o["auc"].as_f64().unwrap()).abs() < 1e-9, "{whole:?} vs {o}");
    assert!((whole.brier - o["brier"].as_f64().unwrap()).abs() < 1e-9, "{whole:?} vs {o}");
    // Fewer sessions reach each later age; every age has both outcomes.
    let counts: Vec<u64> = r.ages[..4].iter().map(|a| a.sessions).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]) && counts[0] <= rows && counts[3] > 0, "{counts:?}");
    for a in &r.ages[..4] {
        assert!(a.auc.is_some(), "{a:?}");
    }
    assert_eq!(r.ages.iter().map(|a| a.pages).collect::<Vec<_>>(), vec![Some(1), Some(3), Some(5), Some(10), None]);

    // Live by age = offline by age, to 1e-9.
    let calibration = model.manifest.open_calibration.as_ref().expect("the model has an open-session calibration");
    assert!(calibration.bands.len() >= 5, "{calibration:?}");
    let live = evaluation["by_age"].as_array().unwrap();
    assert_eq!(live.len(), 4);
    for (a, l) in r.ages[..4].iter().zip(live) {
        assert_eq!(l["pages"].as_u64().map(|p| p as u32), a.pages, "{l}");
        // Every session of this replay has its age scores once it is scored:
        // none was open across a restart or a promotion.
        assert_eq!(l["sessions"].as_u64(), Some(a.sessions), "age {:?}: {l}", a.pages);
        assert_eq!(l["positives"].as_u64(), Some(a.purchases), "age {:?}: {l}", a.pages);
        assert!((l["auc"].as_f64().unwrap() - a.auc.unwrap()).abs() < 1e-9, "{a:?} vs {l}");
        assert!((l["brier"].as_f64().unwrap() - a.brier).abs() < 1e-9, "{a:?} vs {l}");
        // Calibrated by pages seen, the open scores are closer to the truth
        // than the whole-session model's scores of the same prefixes.
        let whole_brier = a.whole_model_brier.unwrap();
        assert!(
            a.brier < whole_brier,
            "age {:?}: brier {} not below the whole model's {whole_brier}",
            a.pages,
            a.brier
        );
    }
    let young = &r.ages[0];
    let gap = |m: f64| (m - young.purchase_rate).abs();
    assert!(
        gap(young.mean_score) < gap(young.whole_model_mean_score.unwrap()),
        "after one page the calibrated mean score is nearer the purchase rate: {young:?}"
    );
    // The same figures reach /metrics. The gauge is set by the periodic
    // evaluation, so it may show an earlier one for up to a tick.
    let series = format!("cartpulse_model_open_auc{{pages=\"5\",version=\"{version}\"}}");
    let want = r.ages[2].auc.unwrap();
    eventually("the open AUC at 5 pages reaches /metrics", Duration::from_secs(20), || async {
        let text = app.metrics_text().await;
        match cartpulse::telemetry::scrape::sample(&text, &series) {
            Some(v) if (v - want).abs() < 1e-9 => Ok(()),
            other => Err(format!("{other:?}, want {want} ({:?})", r.ages[2])),
        }
    })
    .await;
}
