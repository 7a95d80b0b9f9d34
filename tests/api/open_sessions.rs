//! Open sessions: UCI rows replayed through a served model; the event log
//! replayed page by page must give, for whole sessions, exactly the live
//! evaluation's figures (the features the actors stored and scored at
//! close), and figures at 1, 3, 5 and 10 pages over the sessions that got
//! that far.

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
            Some(n) if status == 200 && n == rows => Ok(e),
            _ => Err(format!("{status} {}", e["overall"]["sessions"])),
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
}
