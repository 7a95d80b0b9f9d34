//! `cartpulse replay --from-lake`: re-drives archived events from the data
//! lake through `POST /v1/events`, in log order, as they were logged (same
//! `event_id`s, so a target that still holds them counts them as
//! duplicates, and a fresh deployment rebuilds the same state).
//!
//! The lake is read a block at a time (bounded memory); each block's events
//! are cut into runs of one customer and sent with the usual batching and
//! per-customer ordering, and the next block goes once the last is
//! acknowledged, so every customer's events arrive in log order.

use super::sender::{plan_batches, SendReport};
use super::{per_second, ReplayOptions, ReplaySummary, SessionEvents};
use crate::lake::read::{LakeReader, Window};
use crate::lake::LakeStore;
use actors::event::{LoggedEvent, SessionId};
use std::collections::HashSet;
use std::time::Instant;

/// Sends the events of `store` whose event time is in `window`.
pub async fn run(opts: &ReplayOptions, store: LakeStore, window: Window) -> anyhow::Result<ReplaySummary> {
    let reader = LakeReader::open(store).await?;
    let (sender, progress) = super::sender_for(opts, reader.rows_to_scan(window))?;
    let started = Instant::now();
    let mut stats = Default::default();
    let mut report: Option<SendReport> = None;
    let mut sessions = HashSet::new();
    for files in reader.blocks(window) {
        let events = reader.read_block(&files, window, &mut stats).await?;
        sessions.extend(events.iter().filter_map(|e| e.event.session_id.as_ref().map(|s| s.as_str().to_owned())));
        let part = sender.send(plan_batches(runs(events), opts.batch_size)?).await?;
        match &mut report {
            Some(r) => r.merge(&part)?,
            None => report = Some(part),
        }
    }
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }
    let report = match report {
        Some(r) => r,
        None => sender.send(Vec::new()).await?,
    };
    let elapsed = started.elapsed();
    eprintln!(
        "read {} events of {} files ({} bytes) from the lake {} (archived through seq {}){}",
        stats.events,
        stats.files,
        stats.bytes,
        reader.describe(),
        stats.archived_through,
        if stats.unreadable > 0 { format!("; {} unreadable rows skipped", stats.unreadable) } else { String::new() }
    );
    Ok(ReplaySummary {
        sessions: sessions.len() as u64,
        events_sent: report.events_sent,
        accepted: report.accepted,
        duplicates: report.duplicates,
        rejected: report.rejected,
        elapsed_s: elapsed.as_secs_f64(),
        events_per_s: per_second(report.events_sent, elapsed),
        retail: None,
        lake: Some(stats),
    })
}

/// Log-ordered events cut into runs of one customer (the sender keeps each
/// customer's runs in order; a run is never split unless it alone exceeds
/// a batch).
fn runs(events: Vec<LoggedEvent>) -> Vec<SessionEvents> {
    let mut out: Vec<SessionEvents> = Vec::new();
    for logged in events {
        let e = logged.event;
        match out.last_mut() {
            Some(run) if run.customer == e.customer_id => run.events.push(e),
            _ => out.push(SessionEvents {
                customer: e.customer_id.clone(),
                // Runs are not sessions; the field only labels the run.
                session: e.session_id.clone().unwrap_or_else(|| SessionId::new_unchecked("-".to_owned())),
                events: vec![e],
            }),
        }
    }
    out
}
