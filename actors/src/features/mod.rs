//! Feature code shared by the live session actors and the offline jobs.
//!
//! - [`session`]: the 17 UCI Online Shoppers session features, computed live
//!   from one session's events ([`SessionAccumulator`]); [`uci`]: their form
//!   in the UCI file; [`expand`]: the inverse (a UCI row as page views) used
//!   by the replay tool and the tests.
//! - [`profile`]: a customer's long-term behavioural profile
//!   ([`ProfileAccumulator`]) with bounded memory, deterministic and
//!   JSON-snapshot-safe.
//!
//! Both accumulators are plain data: they are serialized with `serde_json` into
//! actor snapshots and must give bit-identical features after a reload, which is
//! why the crate enables serde_json's `float_roundtrip` feature.

pub mod encode;
pub mod expand;
pub mod profile;
pub mod session;
pub mod uci;

#[cfg(test)]
mod tests;

pub use expand::{expand_row_pages, replay_row_pages, session_start_for};
pub use profile::{ProfileAccumulator, ProfileFeatures, SessionSummary};
pub use session::{SessionAccumulator, ShoppersFeatures};

/// Errors from turning external data into features.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FeatureError {
    /// A field could not be parsed or is out of range.
    #[error("column {column}: invalid value {value:?}: {reason}")]
    InvalidValue { column: &'static str, value: String, reason: String },
    /// A record has the wrong number of fields.
    #[error("expected {expected} fields, got {got}")]
    FieldCount { expected: usize, got: usize },
}

/// Neumaier-compensated sum: keeps long sums (a session's page durations, a
/// customer's spend) exact to within an ulp or two whatever the summation length,
/// and deterministic for a fixed order of additions.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct NeumaierSum {
    sum: f64,
    comp: f64,
}

impl NeumaierSum {
    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }

    pub(crate) fn value(&self) -> f64 {
        self.sum + self.comp
    }
}
