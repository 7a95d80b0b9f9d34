//! Training on the platform's own data: the UCI file replayed through the
//! service (a purchase inside every session whose Revenue is TRUE), then
//! `train --from-db` reads the closed sessions back. The training set must be
//! the file's rows (same features, same labels, every row) and the
//! cross-validation figures those of the file at the same seed.

use crate::helpers::*;
use cartpulse::jobs::train::{DataSource, ModelConfig, Protocol, SessionQuery, TrainOptions};
use cartpulse::models::net::NetConfig;
use std::path::PathBuf;
use std::time::Duration;

fn uci_file() -> PathBuf {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/online_shoppers_intention.csv"));
    assert!(path.exists(), "this test needs the UCI file at {} (CI has it)", path.display());
    path
}

#[actix_web::test]
async fn the_replayed_uci_file_trains_from_the_database_exactly_as_from_the_file() {
    let app = spawn_app(Db::Sqlite).await;
    let file = uci_file();
    let summary = app.replay_file(cartpulse::jobs::replay::ReplayFormat::Shoppers, file.clone()).await;
    assert_eq!(summary.sessions, 12_330);
    assert_eq!(summary.rejected, 0);

    let settings = test_settings(&app.database_url);
    let query = SessionQuery { settings, since: None, until: None, label_delay: Duration::from_secs(3600) };
    let from_db = DataSource::Database(Box::new(query.clone()));
    // Sessions reach the table with the actors' snapshots.
    let db_rows = eventually("every replayed session is stored", Duration::from_secs(120), || async {
        let db = from_db.clone();
        let d = tokio::task::spawn_blocking(move || db.load()).await.unwrap().map_err(|e| format!("{e:#}"))?;
        if d.labels.len() == 12_330 {
            Ok(d)
        } else {
            Err(format!("{} sessions so far", d.labels.len()))
        }
    })
    .await;
    let from_file = DataSource::Csv(file.clone()).load().unwrap();
    let (a, _) = from_file.canonical();
    let (b, _) = db_rows.canonical();
    assert_eq!(a.labels, b.labels, "the same labels");
    assert_eq!(b.labels.iter().filter(|&&y| y).count(), 1_908, "the file's purchases");
    for (i, (x, y)) in a.features.iter().zip(&b.features).enumerate() {
        assert_eq!(x, y, "canonical row {i}: file vs database");
    }
    // The open-session prefixes come from the event log: after each sampled
    // page, the session as the actors saw it, which is the file's row
    // replayed up to that page.
    let (_, order_a) = from_file.canonical();
    assert_eq!(b.prefixes.len(), 12_330);
    let mut checked = 0;
    for (i, pre) in b.prefixes.iter().enumerate().step_by(7) {
        let row = &from_file.features[order_a[i]];
        let mut replayed = Vec::new();
        actors::features::replay_row_pages(row, order_a[i] + 1, |acc| replayed.push(acc.features()));
        assert!(!pre.is_empty() && pre.len() <= 8, "row {i}: {} prefixes", pre.len());
        for (pages, f) in pre {
            assert_eq!(f, &replayed[*pages as usize - 1], "canonical row {i} after {pages} pages");
            checked += 1;
        }
    }
    assert!(checked > 5_000, "{checked} prefixes checked");

    // The same log archived to the data lake (one block holding all of it)
    // gives the same training set: `train --from-lake` applies each
    // customer's events as the actors did.
    let mut lake_settings = test_settings(&app.database_url);
    lake_settings.lake.store = app.dir.path().join("lake").display().to_string();
    let logged = {
        use sea_orm::{EntityTrait, PaginatorTrait};
        let db = cartpulse::db::connect(&lake_settings).await.unwrap();
        entities::event::Entity::find().count(&db).await.unwrap()
    };
    lake_settings.lake.block_events = logged;
    eventually("the whole log is archived", Duration::from_secs(60), || async {
        let s = lake_settings.clone();
        let r = tokio::task::spawn_blocking(move || cartpulse::jobs::archive::run(&s, false)).await.unwrap();
        match r {
            Ok(r) if r.archived_through == logged as i64 => Ok(()),
            Ok(r) => Err(format!("horizon {} of {logged}", r.horizon)),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await;
    let from_lake = DataSource::Lake(Box::new(cartpulse::jobs::train::LakeQuery {
        settings: lake_settings,
        lake: Default::default(),
        since: None,
        until: None,
        label_delay: Duration::from_secs(3600),
    }));
    let c = tokio::task::spawn_blocking(move || from_lake.load()).await.unwrap().unwrap();
    let (c, _) = c.canonical();
    assert_eq!(c.labels, b.labels, "lake vs database: labels");
    assert_eq!(c.features, b.features, "lake vs database: features");
    assert_eq!(c.prefixes, b.prefixes, "lake vs database: prefix examples");
    assert_eq!(c.sha256, b.sha256);

    // The same figures at the same seed (a small network: the point is
    // equality, not quality).
    let config = ModelConfig {
        members: 1,
        net: NetConfig { hidden: vec![8], max_epochs: 3, patience: 2, ..NetConfig::default() },
        ..ModelConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |data: DataSource| {
        let opts = TrainOptions {
            data,
            folds: 2,
            seed: 42,
            out: dir.path().join("unused"),
            report: None,
            config: config.clone(),
            progress: false,
        };
        cartpulse::jobs::train::run_protocol(opts, &Protocol { no_model: true, ..Protocol::default() }).unwrap()
    };
    let csv_report = run(DataSource::Csv(file));
    let db_report = run(DataSource::Database(Box::new(query)));
    assert_eq!(csv_report.folds.len(), 2);
    for (c, d) in csv_report.folds.iter().zip(&db_report.folds) {
        assert_eq!((c.accuracy, c.auc, c.threshold), (d.accuracy, d.auc, d.threshold), "fold {}", c.fold);
        assert_eq!((c.train_rows, c.test_rows), (d.train_rows, d.test_rows));
    }
    assert_eq!(csv_report.pooled_auc, db_report.pooled_auc);
}

#[actix_web::test]
async fn train_from_db_counts_only_settled_sessions_and_says_when_none_qualify() {
    let app = spawn_app(Db::Sqlite).await;
    let now = chrono::Utc::now();
    let t = |s: i64| (now - chrono::TimeDelta::seconds(s)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // A session that just ended: its outcome may still change.
    let events = serde_json::json!([
        page_view("fresh-1", "fresh-c", "fresh-s", &t(30), "product"),
        {"type": "session_end", "event_id": "fresh-end", "customer_id": "fresh-c", "session_id": "fresh-s", "time": t(20)},
    ]);
    let (status, body) = app.post_events(&events).await;
    assert_eq!(status, 200, "{body}");
    let settings = test_settings(&app.database_url);
    let query = |delay: u64| {
        DataSource::Database(Box::new(SessionQuery {
            settings: settings.clone(),
            since: None,
            until: None,
            label_delay: Duration::from_secs(delay),
        }))
    };
    // Stored as closed, but not settled for an hour.
    eventually("the session is stored", Duration::from_secs(30), || async {
        let q = query(0);
        let d = tokio::task::spawn_blocking(move || q.load()).await.unwrap().map_err(|e| format!("{e:#}"))?;
        if d.labels.len() == 1 {
            Ok(())
        } else {
            Err(format!("{} rows", d.labels.len()))
        }
    })
    .await;
    let q = query(3600);
    let err = tokio::task::spawn_blocking(move || q.load()).await.unwrap().err().expect("no settled session");
    assert!(format!("{err:#}").contains("no session qualifies"), "{err:#}");
}
