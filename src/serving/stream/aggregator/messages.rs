//! What the [`Aggregator`](super::Aggregator) receives: the actors' updates
//! from the bus, as a stream, with lag reported instead of raised; and the
//! rollup's ticks.

use actors::hooks::Update;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// One item of the update bus.
pub enum BusItem {
    Update(Arc<Update>),
    /// The aggregator fell this many updates behind; they are lost to it.
    Lagged(u64),
}

/// The bus receiver as a stream of [`BusItem`]s; ends when the bus closes.
pub fn bus_stream(rx: broadcast::Receiver<Arc<Update>>) -> impl futures::Stream<Item = BusItem> {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(u) => Some((BusItem::Update(u), rx)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some((BusItem::Lagged(n), rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// A rollup is due; `at` is when it was scheduled, on a fixed grid of the
/// interval from the aggregator's start.
pub struct Tick {
    pub at: Instant,
}

/// Ticks every `period` after `start`, on the grid, with the scheduled time
/// rather than the time the actor got to run. A tick the actor was too busy
/// for is skipped, not fired in a burst: each rollup then covers whole
/// intervals of the schedule, so a rate over one never counts an event
/// twice or divides it by a sliver of time.
pub fn tick_stream(start: Instant, period: Duration) -> impl futures::Stream<Item = Tick> {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::from_std(start + period), period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    futures::stream::unfold(ticks, |mut ticks| async move {
        let at = ticks.tick().await.into_std();
        Some((Tick { at }, ticks))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn ticks_keep_to_the_grid_and_skip_what_a_busy_actor_missed() {
        let period = Duration::from_millis(40);
        let start = Instant::now();
        let mut ticks = Box::pin(tick_stream(start, period));
        let first = ticks.next().await.unwrap().at;
        assert_eq!(first, start + period);
        // The actor is busy for more than two periods.
        std::thread::sleep(period * 5 / 2);
        let resumed = Instant::now();
        let late = ticks.next().await.unwrap().at;
        let next = ticks.next().await.unwrap().at;
        for at in [late, next] {
            let offset = at.duration_since(start).as_nanos() % period.as_nanos();
            assert_eq!(offset, 0, "a tick off the grid");
        }
        assert!(late <= resumed, "the missed tick is reported with its schedule");
        assert!(next > resumed, "missed ticks were fired in a burst, not skipped");
    }
}
