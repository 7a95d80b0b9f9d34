//! `cartpulse train --from-lake`: the training set from the sessions of the
//! event log archived in the data lake, for history the database no longer
//! holds. Every customer's events are applied in log order with the session
//! actors' own code (`features.timezone`, `actors.session_gap_s`), so a
//! session closes, and gets its features and its outcome, exactly as it did
//! live; a session still open at the end of the lake is closed as idle when
//! its last event is more than the session gap before the lake's latest
//! event (the actors' inactivity rule), else left out. Prefix examples come
//! from the same walk. With the whole log archived, the rows equal those of
//! `--from-db` (test `train_from_db::*`).

use super::dataset::{Dataset, Prefixes};
use crate::lake::cli::LakeArgs;
use crate::lake::read::{LakeReader, Window};
use crate::models::open_calibration::{key_of, PrefixSampler};
use actors::data::state::{Changes, CloseReason, ClosedSession, CustomerState, StateRules};
use actors::event::EventKind;
use actors::features::ShoppersFeatures;
use anyhow::bail;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;

/// Which archived sessions train a model: settled ones (ended at least
/// `label_delay` ago) that ended within `[since, until)` when given.
#[derive(Clone, Debug)]
pub struct LakeQuery {
    pub settings: crate::config::Settings,
    pub lake: LakeArgs,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub label_delay: Duration,
}

impl LakeQuery {
    pub fn describe(&self) -> String {
        let at = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
        let mut s = self.settings.clone();
        self.lake.apply(&mut s);
        format!(
            "lake {}: sessions ended in [{}, {}), settled for {} s",
            s.lake.store,
            at(self.since),
            at(self.until),
            self.label_delay.as_secs()
        )
    }

    /// Reads the lake on a thread of its own with its own runtime (callers
    /// may be synchronous or asynchronous).
    pub(super) fn load(&self) -> anyhow::Result<Dataset> {
        let query = self.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(query.read())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("reading the lake panicked"))?
    }

    async fn read(&self) -> anyhow::Result<Dataset> {
        let store = self.lake.store(&self.settings).await?;
        let reader = LakeReader::open(store).await?;
        let rules = self.settings.state_rules();
        let mut walk = Walk::default();
        let stats = reader.for_each_block(Window::default(), |events| {
            walk.apply(&events, rules);
            Ok(())
        });
        let stats = stats.await?;
        walk.close_idle(rules);
        let settled_before = Utc::now() - crate::config::chrono_span(self.label_delay);
        let until = self.until.map_or(settled_before, |u| u.min(settled_before));
        let mut rows: Vec<(String, ShoppersFeatures, bool, Prefixes)> = walk
            .closed
            .into_iter()
            .filter(|(c, _)| c.summary.ended_at < until && self.since.is_none_or(|s| c.summary.ended_at >= s))
            .map(|(c, prefixes)| (c.summary.session_id.as_str().to_owned(), c.features, c.summary.purchased, prefixes))
            .collect();
        if rows.is_empty() {
            bail!(
                "{}: no session qualifies among the {} archived events (archived through seq {})",
                self.describe(),
                stats.events,
                stats.archived_through
            );
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut data = Dataset {
            features: Vec::with_capacity(rows.len()),
            labels: Vec::with_capacity(rows.len()),
            prefixes: Vec::with_capacity(rows.len()),
            sha256: String::new(),
        };
        for (_, f, y, p) in rows {
            data.features.push(f);
            data.labels.push(y);
            data.prefixes.push(p);
        }
        data.sha256 = data.canonical().0.fingerprint();
        Ok(data)
    }
}

/// Customers' states as the log is applied, the sessions they closed (with
/// their prefix examples), and each open session's prefix sampler.
#[derive(Default)]
struct Walk {
    states: HashMap<String, CustomerState>,
    samplers: HashMap<String, PrefixSampler<ShoppersFeatures>>,
    closed: Vec<(ClosedSession, Prefixes)>,
    latest: Option<DateTime<Utc>>,
}

impl Walk {
    fn apply(&mut self, events: &[actors::event::LoggedEvent], rules: StateRules) {
        let mut changes = Changes::default();
        for e in events {
            self.latest = self.latest.max(Some(e.event.time));
            let id = e.event.customer_id.as_str();
            let state =
                self.states.entry(id.to_owned()).or_insert_with(|| CustomerState::new(e.event.customer_id.clone()));
            state.apply(e, rules, &mut changes);
            if matches!(e.event.kind, EventKind::PageView(_)) {
                if let Some(acc) = &state.open {
                    let sid = acc.session_id().as_str();
                    let sampler =
                        self.samplers.entry(sid.to_owned()).or_insert_with(|| PrefixSampler::new(key_of(sid)));
                    sampler.offer(acc.page_views(), || acc.features());
                }
            }
            self.take_closed(&mut changes);
        }
    }

    fn take_closed(&mut self, changes: &mut Changes) {
        for c in changes.closed.drain(..) {
            let prefixes = self.samplers.remove(c.summary.session_id.as_str()).map(PrefixSampler::finish);
            self.closed.push((c, prefixes.unwrap_or_default()));
        }
        changes.reached.clear();
    }

    /// Closes the sessions idle for longer than the gap at the end of the log.
    fn close_idle(&mut self, rules: StateRules) {
        let Some(latest) = self.latest else { return };
        let mut changes = Changes::default();
        let mut states = std::mem::take(&mut self.states);
        for state in states.values_mut() {
            if state.open.as_ref().is_some_and(|o| latest - o.last_event_at() > rules.session_gap) {
                state.close_open(CloseReason::Inactivity, rules, &mut changes);
                self.take_closed(&mut changes);
            }
        }
    }
}
