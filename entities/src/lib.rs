//! sea-orm entities of cartpulse, one module per table.

pub mod api_key;
pub mod checkpoint;
pub mod console_session;
pub mod customer;
pub mod event;
pub mod model_promotion;
pub mod model_version;
pub mod prelude;
pub mod segmentation;
pub mod session;
pub mod user;
