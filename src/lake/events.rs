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
        let kind = serde_json::from_str::<EventKind>(&row.body).ok();
        self.kind.append_value(kind.as_ref().map(EventKind::name).unwrap_or(&row.event_type));
        let page = match &kind {
            Some(EventKind::PageView(p)) => Some(p),
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
            Some(EventKind::AddToCart(c) | EventKind::RemoveFromCart(c)) => Some(c),
            _ => None,
        };
        self.sku.append_option(cart.map(|c| c.sku.as_str()));
        self.quantity.append_option(cart.map(|c| i64::from(c.quantity)));
        self.unit_price.append_option(cart.and_then(|c| c.unit_price));
        let order = match &kind {
            Some(EventKind::Purchase(p)) => Some(p),
            _ => None,
        };
        self.invoice.append_option(order.map(|o| o.invoice.as_str()));
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
}
