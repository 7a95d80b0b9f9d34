//! What the [`Aggregator`](super::Aggregator) receives: the actors' updates
//! from the bus, as a stream, with lag reported instead of raised.

use actors::hooks::Update;
use std::sync::Arc;
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
