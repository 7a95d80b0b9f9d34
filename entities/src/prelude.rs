//! The entity types under short names.

pub use crate::api_key::Entity as ApiKey;
pub use crate::checkpoint::Entity as Checkpoint;
pub use crate::console_session::Entity as ConsoleSession;
pub use crate::customer::Entity as Customer;
pub use crate::event::Entity as Event;
pub use crate::model_promotion::Entity as ModelPromotion;
pub use crate::model_version::Entity as ModelVersion;
pub use crate::segmentation::Entity as Segmentation;
pub use crate::session::Entity as Session;
pub use crate::user::Entity as User;
