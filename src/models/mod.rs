//! Versioned purchase-intent models: the [`store`] (local directory or S3)
//! that holds each published version's immutable objects, the [`registry`]
//! (a database table) that says which versions exist and which serve what
//! share of traffic, and the `cartpulse models …` commands ([`cli`]).

pub mod cli;
pub mod registry;
pub mod store;

pub use registry::{
    Change, ModelInfo, ModelRegistry, Published, RegistryError, Released, ReportImage, ReportImageInfo, ServingEntry,
    ServingModels, ShadowChange, Share, Status,
};
pub use store::{ModelStore, StoreError};
