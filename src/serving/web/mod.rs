//! The HTTP base the serving path shares: the error type every handler
//! returns, authentication (API keys and console sessions) and who the
//! caller is, bounded body reading, and the client's address behind
//! proxies. The API ([`super::http`]), the console and the live stream all
//! build on it; it depends on none of them.

pub mod auth;
pub mod body;
pub mod client;
pub mod error;
pub mod path_id;
