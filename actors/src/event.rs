//! Typed events: what the rest of the system sees after ingest has parsed and
//! validated the wire format. The serde form of [`Event`] is also the form kept
//! in the durable event log, so it must stay backwards compatible.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a text is not an id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {MAX_ID_LEN} bytes ({0} bytes)")]
    TooLong(usize),
    #[error("contains {0:?}; ids are printable ASCII without spaces, '/', '?', '#' or '%'")]
    BadChar(char),
}

/// An id newtype: parsed from text with [`validate_id`]'s rules.
pub trait Id: std::str::FromStr<Err = IdError> {
    /// What it identifies, for error messages ("customer", "session", …).
    const WHAT: &'static str;
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id that has already been validated (see [`validate_id`]).
            pub fn new_unchecked(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            /// Validates and wraps an id.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                validate_id(s)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Id for $name {
            const WHAT: &'static str = $what;
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // The API contract (`GET /v1/openapi.json`) shows the id rules of
        // [`validate_id`], so clients can check an id before sending it.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema($what)
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// The JSON schema of an id: [`validate_id`]'s rules as a pattern.
fn id_schema(what: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "A {what} id: 1 to {MAX_ID_LEN} bytes of printable ASCII without spaces, '/', '?', '#' or '%'."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_ID_LEN))
        .pattern(Some(ID_PATTERN))
        .into()
}

/// [`validate_id`] as a regular expression (ECMA-262, as JSON Schema uses):
/// `!`..`~` less `#` (0x23), `%` (0x25), `/` (0x2F) and `?` (0x3F).
pub const ID_PATTERN: &str = "^[!\"$&-.0->@-~]+$";

id_newtype!(
    /// Globally unique id chosen by the producer; the de-duplication key.
    EventId,
    "event"
);
id_newtype!(
    /// The shop's id for a customer (or a visitor cookie).
    CustomerId,
    "customer"
);
id_newtype!(
    /// The shop's id for one browsing session of one customer.
    SessionId,
    "session"
);

/// Longest id we accept, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Ids are 1..=128 bytes of printable ASCII without spaces, so they are safe in
/// URLs, logs and metric-free labels alike.
pub fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic() || *c == '/' || *c == '?' || *c == '#' || *c == '%') {
        return Err(IdError::BadChar(c));
    }
    Ok(())
}

/// One validated event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: EventId,
    pub customer_id: CustomerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// When it happened at the shop (not when we received it).
    pub time: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    PageView(PageView),
    AddToCart(CartChange),
    RemoveFromCart(CartChange),
    Purchase(Purchase),
    SessionEnd,
}

impl EventKind {
    /// The wire name of the event type (also a low-cardinality metric label).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::PageView(_) => "page_view",
            EventKind::AddToCart(_) => "add_to_cart",
            EventKind::RemoveFromCart(_) => "remove_from_cart",
            EventKind::Purchase(_) => "purchase",
            EventKind::SessionEnd => "session_end",
        }
    }
}

/// The kind of page, as in the UCI Online Shoppers data. `Other` pages (a home
/// page, a search page) count towards the session's bounce/exit/value means but
/// towards none of the three page counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageKind {
    Administrative,
    Informational,
    Product,
    Other,
}

/// The visitor type, as in the UCI Online Shoppers data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VisitorType {
    Returning,
    New,
    #[default]
    Other,
}

impl VisitorType {
    /// The spelling used in the UCI file's `VisitorType` column.
    pub fn uci_name(self) -> &'static str {
        match self {
            VisitorType::Returning => "Returning_Visitor",
            VisitorType::New => "New_Visitor",
            VisitorType::Other => "Other",
        }
    }
}

/// A page view with the page's analytics metrics (Google-Analytics style) and
/// the device/traffic context of the visit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageView {
    pub page_kind: PageKind,
    /// Seconds spent on the page; `None` when the shop could not measure it.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// The page's bounce rate, 0..=1.
    pub bounce_rate: f64,
    /// The page's exit rate, 0..=1.
    pub exit_rate: f64,
    /// The page's value (average revenue attributed to the page), >= 0.
    pub page_value: f64,
    /// Closeness of the visit to a special day (Mother's day, …), 0..=1.
    #[serde(default)]
    pub special_day: f64,
    #[serde(default)]
    pub os: u16,
    #[serde(default)]
    pub browser: u16,
    #[serde(default)]
    pub region: u16,
    #[serde(default)]
    pub traffic_type: u16,
    #[serde(default)]
    pub visitor_type: VisitorType,
}

/// Adding a product to (or removing it from) the cart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CartChange {
    pub sku: String,
    pub quantity: u32,
    /// Unit price, when known (always given for `add_to_cart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<f64>,
}

/// A completed order (an invoice) or, with `cancellation`, the cancellation of
/// (part of) an earlier one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    pub invoice: String,
    pub lines: Vec<OrderLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default)]
    pub cancellation: bool,
}

impl Purchase {
    /// Sum of quantity × unit price over the lines (always >= 0; a cancellation's
    /// value is what it takes back).
    pub fn value(&self) -> f64 {
        self.lines.iter().map(|l| l.quantity as f64 * l.unit_price).sum()
    }
    /// Number of items over all lines.
    pub fn items(&self) -> u64 {
        self.lines.iter().map(|l| l.quantity as u64).sum()
    }
}

/// One invoice line. Quantities are positive; for a cancellation they are the
/// quantities taken back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An event as read back from the durable log: its position and the event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// Position in the log; increases with commit order. Actors apply an event
    /// only if its `seq` is above the last one they applied, which is what makes
    /// redelivery after a crash harmless.
    pub seq: i64,
    pub event: Event,
    /// When ingest acknowledged the event (Unix ms), for the ingest →
    /// broadcast latency; 0 when it comes from recovery. Not part of the log.
    #[serde(skip)]
    pub acked_at_ms: i64,
    /// The sampled trace this event's processing belongs to (its request's,
    /// or the commit span's once committed); `None` when not traced. Not
    /// part of the log.
    #[serde(skip)]
    pub trace: Option<crate::trace::TraceParent>,
}
