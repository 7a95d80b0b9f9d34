//! Scheduled retraining end to end (`cartpulse retrain`, through the
//! library): the UCI rows are replayed in three thirds, and between them
//! retraining rounds run against the service's database and model store.
//! A deliberately weak model (learning rate 1e-5, one epoch) becomes the
//! first active version; a good candidate trained on the same sessions
//! goes to shadow, waits for sessions it did not train on, and is then
//! promoted on the paired comparison; a weak candidate is rejected against
//! it. Every decision is in `model_promotions` with its figures.

use crate::helpers::*;
use cartpulse::jobs::retrain::{Decision, RetrainOptions, RetrainReport};
use cartpulse::jobs::train::ModelConfig;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use std::path::Path;
use std::time::Duration;

/// The rows of thirds 0..=k of the file (rows i % 3 == 0, then 1, …). The
/// replay names sessions by their row in the replayed file, so each batch
/// replays the earlier thirds again first: their events are duplicates the
/// service ignores, and the new third's sessions get new ids.
fn thirds_up_to(k: usize) -> String {
    let text = uci_text();
    let mut lines = text.lines();
    let mut out = vec![lines.next().unwrap().to_owned()];
    let rows: Vec<&str> = lines.collect();
    for t in 0..=k {
        out.extend(rows.iter().enumerate().filter(|(i, _)| i % 3 == t).map(|(_, l)| (*l).to_owned()));
    }
    out.join("\n") + "\n"
}

fn good() -> ModelConfig {
    let mut c = ModelConfig { members: 2, ..Default::default() };
    c.net.hidden = vec![16];
    c.net.max_epochs = 6;
    c.net.patience = 3;
    c.net.swa = 1;
    c
}

fn weak() -> ModelConfig {
    let mut c = ModelConfig { members: 1, ..Default::default() };
    c.net.hidden = vec![2];
    c.net.max_epochs = 1;
    c.net.patience = 1;
    c.net.swa = 1;
    c.net.learning_rate = 1e-5;
    c
}

/// Replays thirds 0..=k of the file and waits until every session so far is
/// closed with its features.
async fn replay_third(app: &TestApp, k: usize, total: &mut u64) {
    let csv = thirds_up_to(k);
    *total = (csv.lines().count() - 1) as u64;
    let path = app.dir.path().join(format!("third-{k}.csv"));
    std::fs::write(&path, csv).unwrap();
    app.replay_file(cartpulse::jobs::replay::ReplayFormat::Shoppers, path).await;
    let db = cartpulse::db::connect(&test_settings(&app.database_url)).await.unwrap();
    let want = *total;
    eventually("the replayed sessions are closed and scored", Duration::from_secs(90), || async {
        use entities::session::{Column, Entity};
        let closed = Entity::find()
            .filter(Column::Status.eq("closed"))
            .filter(Column::Features.is_not_null())
            .count(&db)
            .await
            .map_err(|e| e.to_string())?;
        // The first third closed before any model served; every later
        // session is scored at close by the active version.
        let scored = Entity::find()
            .filter(Column::Status.eq("closed"))
            .filter(Column::Score.is_not_null())
            .count(&db)
            .await
            .map_err(|e| e.to_string())?;
        let want_scored = if k == 0 { 0 } else { want - want / (k as u64 + 1) };
        if closed == want && scored >= want_scored {
            Ok(())
        } else {
            Err(format!("{closed} of {want} closed, {scored} of {want_scored} scored"))
        }
    })
    .await;
}

async fn retrain(app: &TestApp, store: &Path, work: &Path, config: ModelConfig) -> RetrainReport {
    let mut settings = test_settings(&app.database_url);
    settings.model_store = store.display().to_string();
    let opts = RetrainOptions {
        settings,
        label_delay: Duration::from_secs(3600),
        since: None,
        margin: 0.0,
        min_sessions: 1000,
        folds: 2,
        seed: 7,
        config,
        work_dir: work.to_owned(),
        progress: false,
    };
    tokio::task::spawn_blocking(move || cartpulse::jobs::retrain::run(&opts))
        .await
        .unwrap()
        .expect("a retraining round")
}

/// The reason recorded with the newest `kind` change of `version`.
async fn reason(app: &TestApp, kind: &str, version: &str) -> serde_json::Value {
    use entities::model_promotion::{Column, Entity};
    let db = cartpulse::db::connect(&test_settings(&app.database_url)).await.unwrap();
    let row = Entity::find()
        .filter(Column::Kind.eq(kind))
        .filter(Column::Version.eq(version))
        .order_by_desc(Column::Id)
        .one(&db)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no {kind} of {version} in model_promotions"));
    serde_json::from_str(row.reason.as_deref().unwrap_or_else(|| panic!("the {kind} of {version} has no reason")))
        .unwrap()
}

#[actix_web::test]
async fn retraining_promotes_a_better_candidate_and_rejects_a_worse_one() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store_path = store.path().display().to_string();
    let app = spawn_app_with(Db::Sqlite, move |s| {
        s.model_store = store_path;
        s.inference.score_debounce_ms = Duration::from_millis(50);
        s.inference.refresh_s = Duration::from_secs(1);
    })
    .await;
    let mut total = 0;
    replay_third(&app, 0, &mut total).await;

    // Nothing active: the first model is promoted at once.
    let first = retrain(&app, store.path(), work.path(), weak()).await;
    assert!(first.decision.is_none(), "{first:?}");
    let weak_v = first.trained.as_ref().unwrap().version.clone();
    assert_eq!(first.trained.as_ref().unwrap().status, "active");
    assert_eq!(first.trained.as_ref().unwrap().rows as u64, total, "trained on every settled session");
    assert_eq!(reason(&app, "promote", &weak_v).await["decision"], "first_model");

    // A good candidate on the same sessions goes to shadow.
    let second = retrain(&app, store.path(), work.path(), good()).await;
    let good_v = second.trained.as_ref().unwrap().version.clone();
    assert_eq!(second.trained.as_ref().unwrap().status, "shadow", "{second:?}");
    assert_eq!(reason(&app, "shadow", &good_v).await["decision"], "shadowed");

    // No session closed since it was trained: it waits, nothing is trained.
    let third_round = retrain(&app, store.path(), work.path(), good()).await;
    match &third_round.decision {
        Some(Decision::Waiting { candidate, sessions: 0, needed: 1000, .. }) => assert_eq!(candidate, &good_v),
        other => panic!("expected to wait: {other:?}"),
    }
    assert!(third_round.trained.is_none());

    // Sessions it never saw arrive, scored at close by the weak model.
    eventually("the weak model serves", Duration::from_secs(15), || async {
        match app.inference.serving().first() {
            Some((v, _)) if *v == weak_v => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    replay_third(&app, 1, &mut total).await;
    let fourth = retrain(&app, store.path(), work.path(), weak()).await;
    let figures = match &fourth.decision {
        Some(Decision::Promoted { candidate, active, figures, .. }) => {
            assert_eq!((candidate, active), (&good_v, &weak_v));
            figures.clone()
        }
        other => panic!("expected the good candidate to be promoted: {other:?}"),
    };
    assert_eq!(figures.sessions, total / 2, "judged on the second third only: {figures:?}");
    assert!(figures.ci_low > 0.0 && figures.auc_b > figures.auc_a, "{figures:?}");
    let recorded = reason(&app, "promote", &good_v).await;
    assert_eq!(recorded["decision"], "promoted");
    assert_eq!(recorded["figures"]["sessions"], figures.sessions);
    assert!((recorded["figures"]["difference"].as_f64().unwrap() - figures.difference).abs() < 1e-12);
    let registry = cartpulse::models::ModelRegistry::from_settings(
        cartpulse::db::connect(&test_settings(&app.database_url)).await.unwrap(),
        &{
            let mut s = test_settings(&app.database_url);
            s.model_store = store.path().display().to_string();
            s
        },
    )
    .await
    .unwrap();
    assert_eq!(registry.get(&good_v).await.unwrap().status, "active");
    assert_eq!(registry.get(&weak_v).await.unwrap().status, "retired");
    // The same round trained a new (weak) candidate on both thirds.
    let next = fourth.trained.as_ref().expect("a new candidate after the decision");
    assert_eq!((next.status.as_str(), next.rows as u64), ("shadow", total));

    // A weak candidate does not beat the good model: back to candidate.
    replay_third(&app, 2, &mut total).await;
    let fifth = retrain(&app, store.path(), work.path(), weak()).await;
    match &fifth.decision {
        Some(Decision::Rejected { candidate, active, figures, .. }) => {
            assert_eq!((candidate, active), (&next.version, &good_v));
            assert!(figures.ci_low <= 0.0, "{figures:?}");
        }
        other => panic!("expected the weak candidate to be rejected: {other:?}"),
    }
    assert_eq!(registry.get(&next.version).await.unwrap().status, "candidate");
    assert_eq!(registry.get(&good_v).await.unwrap().status, "active");
    assert_eq!(reason(&app, "unshadow", &next.version).await["decision"], "rejected");
}
