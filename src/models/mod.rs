//! The purchase-intent model as the rest of the system knows it: its
//! network ([`net`]: the candle MLP ensemble, its forward pass and training
//! step; [`forward`]: the same forward pass on contiguous weights with SIMD
//! sgemm, which scores), the model directory's format ([`manifest`]) and reader
//! ([`artifact`]), the [`store`] (local directory or S3) that holds each
//! published version's immutable objects, the [`registry`] (a database
//! table) that says which versions exist and which serve what share of
//! traffic, and the `cartpulse models …` commands ([`cli`]). How served
//! versions do on live traffic: [`evaluation`] (final scores against the
//! sessions' outcomes), [`comparison`] (the A/B analysis), [`drift`]
//! (against the training distribution) and [`open_sessions`] (by session
//! age); [`open_calibration`] turns whole-session scores into open-session
//! ones. Training runs in `jobs::train`; serving in `serving::inference`;
//! both build on this.

pub mod artifact;
pub mod cli;
pub mod comparison;
pub mod drift;
pub mod evaluation;
pub mod forward;
pub mod manifest;
pub mod net;
pub mod open_calibration;
pub mod open_sessions;
pub mod registry;
pub mod store;

pub use registry::{
    Change, ModelInfo, ModelRegistry, Published, RegistryError, Released, ReportImage, ReportImageInfo, ServingEntry,
    ServingModels, ShadowChange, Share, Status,
};
pub use store::{ModelStore, StoreError};
