//! Messages between the runtime's actors, one module per family.

pub mod delivery;
pub mod lifecycle;
pub mod query;
