//! The `events` table of the lake: one Parquet row per logged event, with
//! the typed columns of every event kind (null where a kind has none) and
//! the raw payload as stored in the log.
//!
//! | column | type | of |
//! | --- | --- | --- |
//! | `seq` | int64 | every event: its log position |
//! | `event_id`, `customer_id` | string | every event |
//! | `session_id` | string, null | every event that named one |
//! | `kind` | string | `page_view`, `add_to_cart`, `remove_from_cart`, `purchase`, `session_end` |
//! | `event_time`, `received_at` | timestamp µs UTC | every event (shop time; commit time) |
//! | `page_kind`, `duration_s`, `bounce_rate`, `exit_rate`, `page_value`, `special_day`, `os`, `browser`, `region`, `traffic_type`, `visitor_type` | string / double / int32 | `page_view` |
//! | `sku`, `quantity`, `unit_price` | string / int64 / double | `add_to_cart`, `remove_from_cart` |
//! | `invoice`, `country`, `cancellation`, `items`, `order_value`, `revenue` | string / bool / int64 / double | `purchase`; `revenue` is the order's value, negative for a cancellation |
//! | `lines` | list of struct {sku, quantity, unit_price, description} | `purchase` |
//! | `payload` | string | every event: the JSON body of the log (`type` and the kind's fields) |
//!
//! A payload that does not parse (it never should) is archived all the same,
//! with its kind's typed columns null: the lake never loses an event.

use actors::event::{EventKind, PageKind, VisitorType};
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

/// One row of the log as read from the database.
#[derive(Clone, Debug)]
pub struct LogRow {
    pub seq: i64,
    pub event_id: String,
    pub customer_id: String,
    pub session_id: Option<String>,
    pub event_type: String,
    pub event_time: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub body: String,
}

fn line_fields() -> Fields {
    Fields::from(vec![
        Field::new("sku", DataType::Utf8, false),
        Field::new("quantity", DataType::Int64, false),
        Field::new("unit_price", DataType::Float64, false),
        Field::new("description", DataType::Utf8, true),
    ])
}

/// The schema of every file of the `events` table.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            Arc::new(Schema::new(vec![
                Field::new("seq", DataType::Int64, false),
                Field::new("event_id", DataType::Utf8, false),
                Field::new("customer_id", DataType::Utf8, false),
                Field::new("session_id", DataType::Utf8, true),
                Field::new("kind", DataType::Utf8, false),
                Field::new("event_time", ts.clone(), false),
                Field::new("received_at", ts, false),
                Field::new("page_kind", DataType::Utf8, true),
                Field::new("duration_s", DataType::Float64, true),
                Field::new("bounce_rate", DataType::Float64, true),
                Field::new("exit_rate", DataType::Float64, true),
                Field::new("page_value", DataType::Float64, true),
                Field::new("special_day", DataType::Float64, true),
                Field::new("os", DataType::Int32, true),
                Field::new("browser", DataType::Int32, true),
                Field::new("region", DataType::Int32, true),
                Field::new("traffic_type", DataType::Int32, true),
                Field::new("visitor_type", DataType::Utf8, true),
                Field::new("sku", DataType::Utf8, true),
                Field::new("quantity", DataType::Int64, true),
                Field::new("unit_price", DataType::Float64, true),
                Field::new("invoice", DataType::Utf8, true),
                Field::new("country", DataType::Utf8, true),
                Field::new("cancellation", DataType::Boolean, true),
                Field::new("items", DataType::Int64, true),
                Field::new("order_value", DataType::Float64, true),
                Field::new("revenue", DataType::Float64, true),
                Field::new_list("lines", Field::new_list_field(DataType::Struct(line_fields()), true), true),
                Field::new("payload", DataType::Utf8, false),
            ]))
        })
        .clone()
}

fn page_kind_name(k: PageKind) -> &'static str {
    match k {
        PageKind::Administrative => "administrative",
        PageKind::Informational => "informational",
        PageKind::Product => "product",
        PageKind::Other => "other",
    }
}

fn visitor_type_name(v: VisitorType) -> &'static str {
    match v {
        VisitorType::Returning => "returning",
        VisitorType::New => "new",
        VisitorType::Other => "other",
    }
}

/// The typed fields of a log body: [`EventKind`]'s fields, borrowed from the
/// body where they can be. [`parse_body`] reads it.
#[derive(Debug, PartialEq)]
enum Body<'a> {
    PageView(PageFields),
    AddToCart(CartFields<'a>),
    RemoveFromCart(CartFields<'a>),
    Purchase(PurchaseFields<'a>),
    SessionEnd,
}

impl Body<'_> {
    fn name(&self) -> &'static str {
        match self {
            Body::PageView(_) => "page_view",
            Body::AddToCart(_) => "add_to_cart",
            Body::RemoveFromCart(_) => "remove_from_cart",
            Body::Purchase(_) => "purchase",
            Body::SessionEnd => "session_end",
        }
    }
}

// The field structs mirror actors::event's PageView, CartChange, Purchase and
// OrderLine field for field, with the same serde attributes (so they accept
// exactly the same maps), plus `type`, which marks a second tag (refused by
// EventKind, so the fast path gives up on it and the slow one decides).

#[derive(Debug, PartialEq, serde::Deserialize)]
struct PageFields {
    page_kind: PageKind,
    #[serde(default)]
    duration_s: Option<f64>,
    bounce_rate: f64,
    exit_rate: f64,
    page_value: f64,
    #[serde(default)]
    special_day: f64,
    #[serde(default)]
    os: u16,
    #[serde(default)]
    browser: u16,
    #[serde(default)]
    region: u16,
    #[serde(default)]
    traffic_type: u16,
    #[serde(default)]
    visitor_type: VisitorType,
    #[serde(default, rename = "type")]
    tag: SecondTag,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct CartFields<'a> {
    #[serde(borrow)]
    sku: Cow<'a, str>,
    quantity: u32,
    #[serde(default)]
    unit_price: Option<f64>,
    #[serde(default, rename = "type")]
    tag: SecondTag,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct PurchaseFields<'a> {
    #[serde(borrow)]
    invoice: Cow<'a, str>,
    #[serde(borrow)]
    lines: Vec<LineFields<'a>>,
    #[serde(default, borrow)]
    country: Option<Cow<'a, str>>,
    #[serde(default)]
    cancellation: bool,
    #[serde(default, rename = "type")]
    tag: SecondTag,
}

impl PurchaseFields<'_> {
    /// As `Purchase::value`: the same sum in the same order.
    fn value(&self) -> f64 {
        self.lines.iter().map(|l| l.quantity as f64 * l.unit_price).sum()
    }

    /// As `Purchase::items`.
    fn items(&self) -> u64 {
        self.lines.iter().map(|l| l.quantity as u64).sum()
    }
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct LineFields<'a> {
    #[serde(borrow)]
    sku: Cow<'a, str>,
    quantity: u32,
    unit_price: f64,
    #[serde(default, borrow)]
    description: Option<Cow<'a, str>>,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct EndFields {
    #[serde(default, rename = "type")]
    tag: SecondTag,
}

/// Whether a body's map held `type` a second time (whatever its value).
#[derive(Debug, Default, PartialEq)]
struct SecondTag(bool);

impl<'de> serde::Deserialize<'de> for SecondTag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <serde::de::IgnoredAny as serde::Deserialize>::deserialize(d).map(|_| SecondTag(true))
    }
}

/// The fast path: a JSON object whose first key is `type` (as serde writes
/// every body), read straight into the borrowed field structs.
struct TagFirst;

impl<'de> serde::de::Visitor<'de> for TagFirst {
    type Value = Body<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an event body whose first key is `type`")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Body<'de>, A::Error> {
        use serde::de::Error;
        use serde::Deserialize;
        let key: Option<&'de str> = map.next_key()?;
        if key != Some("type") {
            return Err(A::Error::custom("the first key is not `type`"));
        }
        let tag: &'de str = map.next_value()?;
        let rest = serde::de::value::MapAccessDeserializer::new(map);
        let body = match tag {
            "page_view" => Body::PageView(PageFields::deserialize(rest)?),
            "add_to_cart" => Body::AddToCart(CartFields::deserialize(rest)?),
            "remove_from_cart" => Body::RemoveFromCart(CartFields::deserialize(rest)?),
            "purchase" => Body::Purchase(PurchaseFields::deserialize(rest)?),
            "session_end" => {
                let end = EndFields::deserialize(rest)?;
                if end.tag.0 {
                    return Err(A::Error::custom("a second `type`"));
                }
                Body::SessionEnd
            }
            _ => return Err(A::Error::custom("an unknown event type")),
        };
        let second_tag = match &body {
            Body::PageView(f) => f.tag.0,
            Body::AddToCart(f) | Body::RemoveFromCart(f) => f.tag.0,
            Body::Purchase(f) => f.tag.0,
            Body::SessionEnd => false,
        };
        if second_tag {
            return Err(A::Error::custom("a second `type`"));
        }
        Ok(body)
    }
}

/// A body's typed fields, or `None` when it does not parse as an
/// [`EventKind`]. Exactly what `serde_json::from_str::<EventKind>` accepts,
/// with the same values: bodies as serde writes them (`type` first) take a
/// fast path that allocates nothing but a purchase's lines (and strings with
/// escapes); anything else goes through [`EventKind`] itself.
fn parse_body(body: &str) -> Option<Body<'_>> {
    let mut de = serde_json::Deserializer::from_str(body);
    let fast = serde::Deserializer::deserialize_map(&mut de, TagFirst).and_then(|b| de.end().map(|()| b));
    match fast {
        Ok(b) => Some(b),
        Err(_) => serde_json::from_str::<EventKind>(body).ok().map(Body::from),
    }
}

impl From<EventKind> for Body<'static> {
    fn from(kind: EventKind) -> Self {
        let cart = |c: actors::event::CartChange| CartFields {
            sku: Cow::Owned(c.sku),
            quantity: c.quantity,
            unit_price: c.unit_price,
            tag: SecondTag(false),
        };
        match kind {
            EventKind::PageView(p) => Body::PageView(PageFields {
                page_kind: p.page_kind,
                duration_s: p.duration_s,
                bounce_rate: p.bounce_rate,
                exit_rate: p.exit_rate,
                page_value: p.page_value,
                special_day: p.special_day,
                os: p.os,
                browser: p.browser,
                region: p.region,
                traffic_type: p.traffic_type,
                visitor_type: p.visitor_type,
                tag: SecondTag(false),
            }),
            EventKind::AddToCart(c) => Body::AddToCart(cart(c)),
            EventKind::RemoveFromCart(c) => Body::RemoveFromCart(cart(c)),
            EventKind::Purchase(p) => Body::Purchase(PurchaseFields {
                invoice: Cow::Owned(p.invoice),
                lines: p
                    .lines
                    .into_iter()
                    .map(|l| LineFields {
                        sku: Cow::Owned(l.sku),
                        quantity: l.quantity,
                        unit_price: l.unit_price,
                        description: l.description.map(Cow::Owned),
                    })
                    .collect(),
                country: p.country.map(Cow::Owned),
                cancellation: p.cancellation,
                tag: SecondTag(false),
            }),
            EventKind::SessionEnd => Body::SessionEnd,
        }
    }
}

/// Column builders for one file's rows; [`Columns::finish`] makes a batch.
pub struct Columns {
    rows: usize,
    seq: Int64Builder,
    event_id: StringBuilder,
    customer_id: StringBuilder,
    session_id: StringBuilder,
    kind: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    page_kind: StringBuilder,
    duration_s: Float64Builder,
    bounce_rate: Float64Builder,
    exit_rate: Float64Builder,
    page_value: Float64Builder,
    special_day: Float64Builder,
    os: Int32Builder,
    browser: Int32Builder,
    region: Int32Builder,
    traffic_type: Int32Builder,
    visitor_type: StringBuilder,
    sku: StringBuilder,
    quantity: Int64Builder,
    unit_price: Float64Builder,
    invoice: StringBuilder,
    country: StringBuilder,
    cancellation: BooleanBuilder,
    items: Int64Builder,
    order_value: Float64Builder,
    revenue: Float64Builder,
    lines: ListBuilder<StructBuilder>,
    payload: StringBuilder,
}

impl Default for Columns {
    fn default() -> Self {
        Self::new()
    }
}

impl Columns {
    pub fn new() -> Columns {
        let line = StructBuilder::from_fields(line_fields(), 0);
        Columns {
            rows: 0,
            seq: Int64Builder::new(),
            event_id: StringBuilder::new(),
            customer_id: StringBuilder::new(),
            session_id: StringBuilder::new(),
            kind: StringBuilder::new(),
            event_time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            received_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            page_kind: StringBuilder::new(),
            duration_s: Float64Builder::new(),
            bounce_rate: Float64Builder::new(),
            exit_rate: Float64Builder::new(),
            page_value: Float64Builder::new(),
            special_day: Float64Builder::new(),
            os: Int32Builder::new(),
            browser: Int32Builder::new(),
            region: Int32Builder::new(),
            traffic_type: Int32Builder::new(),
            visitor_type: StringBuilder::new(),
            sku: StringBuilder::new(),
            quantity: Int64Builder::new(),
            unit_price: Float64Builder::new(),
            invoice: StringBuilder::new(),
            country: StringBuilder::new(),
            cancellation: BooleanBuilder::new(),
            items: Int64Builder::new(),
            order_value: Float64Builder::new(),
            revenue: Float64Builder::new(),
            lines: ListBuilder::new(line)
                .with_field(Arc::new(Field::new_list_field(DataType::Struct(line_fields()), true))),
            payload: StringBuilder::new(),
        }
    }

    /// Rows appended since the last [`Columns::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one logged event.
    pub fn push(&mut self, row: &LogRow) {
        self.rows += 1;
        self.seq.append_value(row.seq);
        self.event_id.append_value(&row.event_id);
        self.customer_id.append_value(&row.customer_id);
        self.session_id.append_option(row.session_id.as_deref());
        self.event_time.append_value(row.event_time.timestamp_micros());
        self.received_at.append_value(row.received_at.timestamp_micros());
        self.payload.append_value(&row.body);
        let kind = parse_body(&row.body);
        self.kind.append_value(kind.as_ref().map(Body::name).unwrap_or(&row.event_type));
        let page = match &kind {
            Some(Body::PageView(p)) => Some(p),
            _ => None,
        };
        self.page_kind.append_option(page.map(|p| page_kind_name(p.page_kind)));
        self.duration_s.append_option(page.and_then(|p| p.duration_s));
        self.bounce_rate.append_option(page.map(|p| p.bounce_rate));
        self.exit_rate.append_option(page.map(|p| p.exit_rate));
        self.page_value.append_option(page.map(|p| p.page_value));
        self.special_day.append_option(page.map(|p| p.special_day));
        self.os.append_option(page.map(|p| i32::from(p.os)));
        self.browser.append_option(page.map(|p| i32::from(p.browser)));
        self.region.append_option(page.map(|p| i32::from(p.region)));
        self.traffic_type.append_option(page.map(|p| i32::from(p.traffic_type)));
        self.visitor_type.append_option(page.map(|p| visitor_type_name(p.visitor_type)));
        let cart = match &kind {
            Some(Body::AddToCart(c) | Body::RemoveFromCart(c)) => Some(c),
            _ => None,
        };
        self.sku.append_option(cart.map(|c| &*c.sku));
        self.quantity.append_option(cart.map(|c| i64::from(c.quantity)));
        self.unit_price.append_option(cart.and_then(|c| c.unit_price));
        let order = match &kind {
            Some(Body::Purchase(p)) => Some(p),
            _ => None,
        };
        self.invoice.append_option(order.map(|o| &*o.invoice));
        self.country.append_option(order.and_then(|o| o.country.as_deref()));
        self.cancellation.append_option(order.map(|o| o.cancellation));
        self.items.append_option(order.map(|o| o.items() as i64));
        self.order_value.append_option(order.map(|o| o.value()));
        self.revenue.append_option(order.map(|o| if o.cancellation { -o.value() } else { o.value() }));
        match order {
            Some(o) => {
                let s = self.lines.values();
                for l in &o.lines {
                    field::<StringBuilder>(s, 0).append_value(&l.sku);
                    field::<Int64Builder>(s, 1).append_value(i64::from(l.quantity));
                    field::<Float64Builder>(s, 2).append_value(l.unit_price);
                    field::<StringBuilder>(s, 3).append_option(l.description.as_deref());
                    s.append(true);
                }
                self.lines.append(true);
            }
            None => self.lines.append(false),
        }
    }

    /// The rows appended so far as a batch of [`schema`]; the builders start empty again.
    pub fn finish(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.seq.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.customer_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.page_kind.finish()),
            Arc::new(self.duration_s.finish()),
            Arc::new(self.bounce_rate.finish()),
            Arc::new(self.exit_rate.finish()),
            Arc::new(self.page_value.finish()),
            Arc::new(self.special_day.finish()),
            Arc::new(self.os.finish()),
            Arc::new(self.browser.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.traffic_type.finish()),
            Arc::new(self.visitor_type.finish()),
            Arc::new(self.sku.finish()),
            Arc::new(self.quantity.finish()),
            Arc::new(self.unit_price.finish()),
            Arc::new(self.invoice.finish()),
            Arc::new(self.country.finish()),
            Arc::new(self.cancellation.finish()),
            Arc::new(self.items.finish()),
            Arc::new(self.order_value.finish()),
            Arc::new(self.revenue.finish()),
            Arc::new(self.lines.finish()),
            Arc::new(self.payload.finish()),
        ];
        RecordBatch::try_new(schema(), columns)
    }
}

fn field<T: arrow_array::builder::ArrayBuilder>(s: &mut StructBuilder, i: usize) -> &mut T {
    s.field_builder::<T>(i).expect("the line struct's builders are the ones line_fields() names")
}

/// Writes one Parquet file of the `events` table in memory: zstd, row
/// groups of `row_group_rows` rows, statistics per page.
pub struct FileWriter {
    columns: Columns,
    writer: ArrowWriter<Vec<u8>>,
    pub rows: u64,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// Rows buffered in the builders before they are handed to the Parquet
/// writer (which cuts row groups at `row_group_rows` itself). Small: a block
/// whose events span many days has a writer open per day.
const BUFFER_ROWS: usize = 1024;

/// Columns whose values are (nearly) all different: a dictionary only costs
/// memory and time there.
const NO_DICTIONARY: [&str; 3] = ["seq", "event_id", "payload"];

impl FileWriter {
    pub fn new(row_group_rows: usize) -> Result<FileWriter, parquet::errors::ParquetError> {
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .set_created_by(format!("cartpulse {} archive", env!("CARGO_PKG_VERSION")));
        for column in NO_DICTIONARY {
            props = props.set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
        let props = props.build();
        Ok(FileWriter {
            columns: Columns::new(),
            writer: ArrowWriter::try_new(Vec::new(), schema(), Some(props))?,
            rows: 0,
            first_seq: i64::MAX,
            last_seq: i64::MIN,
        })
    }

    pub fn push(&mut self, row: &LogRow) -> Result<(), parquet::errors::ParquetError> {
        self.columns.push(row);
        self.rows += 1;
        self.first_seq = self.first_seq.min(row.seq);
        self.last_seq = self.last_seq.max(row.seq);
        if self.columns.len() >= BUFFER_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), parquet::errors::ParquetError> {
        if !self.columns.is_empty() {
            let batch = self.columns.finish()?;
            self.writer.write(&batch)?;
        }
        Ok(())
    }

    /// The whole file.
    pub fn finish(mut self) -> Result<Vec<u8>, parquet::errors::ParquetError> {
        self.flush()?;
        self.writer.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn row(seq: i64, body: &str) -> LogRow {
        LogRow {
            seq,
            event_id: format!("e{seq}"),
            customer_id: "c1".into(),
            session_id: (seq % 2 == 0).then(|| "s1".to_owned()),
            event_type: "purchase".into(),
            event_time: DateTime::from_timestamp(1_764_806_400 + seq, 0).unwrap(),
            received_at: DateTime::from_timestamp(1_764_806_500, 0).unwrap(),
            body: body.into(),
        }
    }

    #[test]
    fn every_kind_round_trips_with_its_typed_columns() {
        let rows = [
            row(
                1,
                r#"{"type":"page_view","page_kind":"product","duration_s":12.5,"bounce_rate":0.1,"exit_rate":0.2,"page_value":3.0,"special_day":0.0,"os":2,"browser":3,"region":4,"traffic_type":5,"visitor_type":"new"}"#,
            ),
            row(2, r#"{"type":"add_to_cart","sku":"A","quantity":2,"unit_price":4.5}"#),
            row(
                3,
                r#"{"type":"purchase","invoice":"I1","lines":[{"sku":"A","quantity":2,"unit_price":4.5},{"sku":"B","quantity":1,"unit_price":1.0,"description":"bee"}],"country":"UK","cancellation":false}"#,
            ),
            row(
                4,
                r#"{"type":"purchase","invoice":"C1","lines":[{"sku":"A","quantity":1,"unit_price":4.5}],"cancellation":true}"#,
            ),
            row(5, r#"{"type":"session_end"}"#),
            row(6, r#"not json"#),
        ];
        let mut w = FileWriter::new(4).unwrap();
        for r in &rows {
            w.push(r).unwrap();
        }
        assert_eq!((w.rows, w.first_seq, w.last_seq), (6, 1, 6));
        let bytes = w.finish().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 2, "row groups of 4 rows");
        let batches: Vec<RecordBatch> = reader.build().unwrap().collect::<Result<_, _>>().unwrap();
        assert!(batches.iter().all(|b| b.schema() == schema()));
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Float64Type, Int64Type};
        let col = |name: &str| batches.iter().map(|b| b.column_by_name(name).unwrap().clone()).collect::<Vec<_>>();
        let kinds: Vec<String> = col("kind")
            .iter()
            .flat_map(|a| a.as_string::<i32>().iter().flatten().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        assert_eq!(kinds, ["page_view", "add_to_cart", "purchase", "purchase", "session_end", "purchase"]);
        let revenue: Vec<Option<f64>> =
            col("revenue").iter().flat_map(|a| a.as_primitive::<Float64Type>().iter().collect::<Vec<_>>()).collect();
        assert_eq!(revenue, [None, None, Some(10.0), Some(-4.5), None, None]);
        let qty: Vec<Option<i64>> =
            col("quantity").iter().flat_map(|a| a.as_primitive::<Int64Type>().iter().collect::<Vec<_>>()).collect();
        assert_eq!(qty, [None, Some(2), None, None, None, None]);
        let lines: Vec<Option<usize>> = col("lines")
            .iter()
            .flat_map(|a| a.as_list::<i32>().iter().map(|l| l.map(|v| v.len())).collect::<Vec<_>>())
            .collect();
        assert_eq!(lines, [None, None, Some(2), Some(1), None, None]);
        let payload: Vec<String> = col("payload")
            .iter()
            .flat_map(|a| a.as_string::<i32>().iter().flatten().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        assert_eq!(payload[5], "not json", "an unreadable payload is kept as it was");
    }

    /// [`parse_body`] answers exactly what `serde_json::from_str::<EventKind>`
    /// does: on bodies as the log holds them (synthetic traffic) and on odd
    /// ones (fields out of order, escapes, nulls, a second `type`, …).
    #[test]
    fn bodies_parse_as_event_kind_does() {
        let odd = [
            r#"{"type":"page_view","page_kind":"product","bounce_rate":0.1,"exit_rate":0.2,"page_value":3}"#,
            r#"{"page_kind":"other","type":"page_view","bounce_rate":0.1,"exit_rate":0.2,"page_value":3.5,"os":1}"#,
            r#"{"type":"page_view","page_kind":"other","bounce_rate":0.1,"exit_rate":0.2,"page_value":3.5,"special_day":null}"#,
            r#"{"type":"page_view","page_kind":"other","bounce_rate":1e-3,"exit_rate":0.2,"page_value":3.5,"duration_s":null,"extra":[1,{"a":2}]}"#,
            r#"{"type":"page_view","page_kind":"other","bounce_rate":0.1,"exit_rate":0.2,"page_value":3.5,"os":70000}"#,
            r#"{"type":"page_view","page_kind":"nope","bounce_rate":0.1,"exit_rate":0.2,"page_value":3.5}"#,
            r#"{"type":"page_view","page_kind":"other","bounce_rate":0.1,"exit_rate":0.2}"#,
            r#"{"type":"add_to_cart","sku":"A\"1\u00e9","quantity":2}"#,
            r#"{"type":"add_to_cart","sku":"A","quantity":2,"unit_price":null}"#,
            r#"{"type":"remove_from_cart","sku":"A","quantity":-1}"#,
            r#"{"type":"remove_from_cart","sku":"A","quantity":1.5}"#,
            r#"{"type":"add_to_cart","sku":"A","quantity":2,"type":"purchase"}"#,
            r#"{"type":"add_to_cart","sku":"A","quantity":2,"type":null}"#,
            r#"{"type":"session_end","type":"session_end"}"#,
            r#"{"type":"session_end","x":1}"#,
            r#"{"type":"purchase","invoice":"I","lines":[],"country":null}"#,
            r#"{"type":"purchase","invoice":"I","lines":[{"sku":"A","quantity":1,"unit_price":2,"description":null}],"cancellation":true}"#,
            r#"{"type":"purchase","invoice":"I","lines":[{"sku":"A","quantity":1,"unit_price":2,"sku":"B"}]}"#,
            r#"{"type":"purchase","invoice":"I","invoice":"J","lines":[]}"#,
            r#"{"type":"purchase","lines":[]}"#,
            r#"{"type":"refund"}"#,
            r#"{"type":1}"#,
            r#"{"type":"p\u0061ge_view","page_kind":"other","bounce_rate":0.1,"exit_rate":0.2,"page_value":3.5}"#,
            r#"["session_end"]"#,
            r#"{"type":"session_end"} x"#,
            r#" {"type":"session_end"} "#,
            r#"{"type":"session_end""#,
            "",
            "null",
            "{}",
            "not json",
        ];
        let config = crate::jobs::replay::synthetic::SyntheticConfig::new(0, 7);
        let synthetic: Vec<String> = crate::jobs::replay::synthetic::generate_events(&config, 20_000)
            .into_iter()
            .flat_map(|s| s.events)
            .map(|e| serde_json::to_string(&e.kind).unwrap())
            .collect();
        let kinds: std::collections::BTreeSet<&str> =
            synthetic.iter().filter_map(|b| parse_body(b)).map(|b| b.name()).collect();
        assert_eq!(kinds.len(), 5, "the synthetic traffic has every kind: {kinds:?}");
        for body in odd.iter().copied().chain(synthetic.iter().map(String::as_str)) {
            let slow = serde_json::from_str::<EventKind>(body).ok().map(Body::from);
            assert_eq!(parse_body(body), slow, "{body}");
        }
        for body in &synthetic {
            let mut de = serde_json::Deserializer::from_str(body);
            assert!(serde::Deserializer::deserialize_map(&mut de, TagFirst).is_ok(), "the fast path reads {body}");
        }
    }
}
