//! How a model does on sessions still open: the session actors score a
//! session after every page, but the model learned from whole sessions. From
//! the event log, every settled, closed session is replayed page by page
//! through the live feature code ([`SessionAccumulator`], in the shop's time
//! zone); its features after 1, 3, 5 and 10 pages (the session as it stood
//! then) are scored by the model and judged against the session's outcome,
//! beside the whole session's features. Only sessions that reached an age
//! count at that age. At an age the score is what serving gives an open
//! session (the whole-session score through the model's open-session
//! calibration, [`super::open_calibration`]), beside the uncalibrated
//! whole-session score; the live evaluation by age
//! ([`super::evaluation::Age`]) must agree with the former.

use super::artifact::PurchaseModel;
use super::evaluation::Figures;
use actors::event::EventKind;
use actors::features::session::SessionAccumulator;
use actors::features::ShoppersFeatures;
use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde::Serialize;
use std::collections::HashMap;

/// The ages (pages seen) reported: those the session actors keep scores at.
pub const AGES: [u32; 4] = actors::data::state::SCORED_AGES;

/// Figures at one session age (`pages`; `None` for whole sessions).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgeFigures {
    pub pages: Option<u32>,
    pub sessions: u64,
    pub purchases: u64,
    pub auc: Option<f64>,
    pub brier: f64,
    /// Mean score against the purchase rate: calibration in one number.
    pub mean_score: f64,
    pub purchase_rate: f64,
    /// At an age, the uncalibrated whole-session score's Brier score and
    /// mean (what an open session got before the open-session calibration).
    pub whole_model_brier: Option<f64>,
    pub whole_model_mean_score: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpenSessionReport {
    pub version: String,
    /// One per age of [`AGES`], then whole sessions.
    pub ages: Vec<AgeFigures>,
}

/// Replays the settled sessions of the log (ended before `settled_before`,
/// and at or after `since`) and scores them at each age with `model`.
pub async fn report(
    db: &DatabaseConnection,
    model: &PurchaseModel,
    timezone: chrono_tz::Tz,
    since: Option<DateTime<Utc>>,
    settled_before: DateTime<Utc>,
) -> anyhow::Result<OpenSessionReport> {
    let outcomes = settled_sessions(db, since, settled_before).await?;
    let mut at_age: Vec<Vec<(ShoppersFeatures, bool)>> = vec![Vec::new(); AGES.len()];
    let accs = replay_log_sessions(
        db,
        timezone,
        |sid| outcomes.get(sid).copied(),
        |purchased, acc| {
            if let Some(k) = AGES.iter().position(|a| *a == acc.page_views()) {
                at_age[k].push((acc.features(), *purchased));
            }
        },
    )
    .await?;
    let whole: Vec<(ShoppersFeatures, bool)> =
        accs.values().map(|(acc, purchased)| (acc.features(), *purchased)).collect();
    let mut ages = Vec::with_capacity(AGES.len() + 1);
    for (pages, rows) in AGES.iter().map(|a| Some(*a)).zip(&at_age).chain(std::iter::once((None, &whole))) {
        ages.push(figures(model, pages, rows)?);
    }
    Ok(OpenSessionReport { version: model.manifest.model_version.clone(), ages })
}

/// Replays the sessions of the event log that `start` picks (it gives each
/// one's state, from its id), event by event in log order through the live
/// feature code in `timezone`, as the session actors saw them; `on_page`
/// sees each after every page view. Returns each session's accumulator and
/// state, by id.
pub async fn replay_log_sessions<S>(
    db: &DatabaseConnection,
    timezone: chrono_tz::Tz,
    mut start: impl FnMut(&str) -> Option<S>,
    mut on_page: impl FnMut(&mut S, &SessionAccumulator),
) -> anyhow::Result<HashMap<String, (SessionAccumulator, S)>> {
    let mut sessions: HashMap<String, (SessionAccumulator, S)> = HashMap::new();
    let mut after = 0;
    loop {
        let page = actors::store::log_after(db, after, 10_000).await.context("reading the event log")?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for logged in &page {
            let e = &logged.event;
            let Some(sid) = e.session_id.as_ref() else { continue };
            let (acc, state) = match sessions.get_mut(sid.as_str()) {
                Some(s) => s,
                None => {
                    let Some(state) = start(sid.as_str()) else { continue };
                    let acc = SessionAccumulator::in_timezone(sid.clone(), e.time, timezone);
                    sessions.entry(sid.as_str().to_owned()).or_insert((acc, state))
                }
            };
            acc.apply(e);
            if matches!(e.kind, EventKind::PageView(_)) {
                on_page(state, acc);
            }
        }
    }
    Ok(sessions)
}

fn figures(model: &PurchaseModel, pages: Option<u32>, rows: &[(ShoppersFeatures, bool)]) -> anyhow::Result<AgeFigures> {
    let features: Vec<ShoppersFeatures> = rows.iter().map(|(f, _)| f.clone()).collect();
    let whole = if features.is_empty() { Vec::new() } else { model.predict(&features)? };
    let threshold = f64::from(model.manifest.threshold);
    let scored = |scores: &mut dyn Iterator<Item = f32>| -> Vec<(f64, bool)> {
        scores.zip(rows).map(|(p, (_, y))| (f64::from(p), *y)).collect()
    };
    let mean = |s: &[(f64, bool)]| s.iter().map(|(p, _)| p).sum::<f64>() / s.len().max(1) as f64;
    let served = scored(&mut whole.iter().map(|&p| pages.map_or(p, |n| model.open_score(p, n))));
    let f = Figures::of(&served, threshold);
    let raw = pages.map(|_| scored(&mut whole.iter().copied()));
    Ok(AgeFigures {
        pages,
        sessions: f.sessions,
        purchases: f.positives,
        auc: f.auc,
        brier: f.brier,
        mean_score: mean(&served),
        purchase_rate: f.positive_rate,
        whole_model_brier: raw.as_ref().map(|r| Figures::of(r, threshold).brier),
        whole_model_mean_score: raw.as_ref().map(|r| mean(r)),
    })
}

/// Closed sessions that ended in `[since, settled_before)`: id → purchased.
async fn settled_sessions(
    db: &DatabaseConnection,
    since: Option<DateTime<Utc>>,
    settled_before: DateTime<Utc>,
) -> anyhow::Result<HashMap<String, bool>> {
    use entities::session::{Column, Entity};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    let mut q = Entity::find()
        .select_only()
        .columns([Column::SessionId, Column::Purchased])
        .filter(Column::Status.eq("closed"))
        .filter(Column::EndedAt.lt(settled_before));
    if let Some(since) = since {
        q = q.filter(Column::EndedAt.gte(since));
    }
    let rows: Vec<(String, bool)> = q.into_tuple().all(db).await.context("reading the closed sessions")?;
    Ok(rows.into_iter().collect())
}

/// The report as a table.
pub fn table(r: &OpenSessionReport) -> String {
    let mut s = format!(
        "{:<8}  {:>8}  {:>9}  {:>6}  {:>6}  {:>10}  {:>13}  {:>11}  {:>10}\n",
        "PAGES", "SESSIONS", "PURCHASES", "AUC", "BRIER", "MEAN SCORE", "PURCHASE RATE", "WHOLE BRIER", "WHOLE MEAN"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
    for a in &r.ages {
        s += &format!(
            "{:<8}  {:>8}  {:>9}  {:>6}  {:>6.4}  {:>10.4}  {:>13.4}  {:>11}  {:>10}\n",
            a.pages.map_or("whole".to_owned(), |p| p.to_string()),
            a.sessions,
            a.purchases,
            opt(a.auc),
            a.brier,
            a.mean_score,
            a.purchase_rate,
            opt(a.whole_model_brier),
            opt(a.whole_model_mean_score),
        );
    }
    s += "At an age, the score is the open-session score serving gives (calibrated by pages seen when the model has an\n\
          open-session calibration); WHOLE is the whole-session model's score of the same prefix.\n";
    s
}
