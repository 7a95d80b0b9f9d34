//! Replay of the UCI "Online Retail" transactions CSV (header `InvoiceNo,
//! StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country`,
//! ISO `YYYY-MM-DD HH:MM:SS` dates read as UTC): every invoice becomes ONE
//! `purchase` event carrying all its lines, at the invoice's own time.
//!
//! # Ids
//!
//! - Event `rt-<InvoiceNo>`; an invoice with more lines than the server takes
//!   in one purchase (1,000; only invoice 573585 with 1,114 lines in the real
//!   file) is split into `rt-<InvoiceNo>-1`, `rt-<InvoiceNo>-2`, … with the
//!   same `invoice` field, sent one after the other. Fixed ids make a second
//!   replay harmless: the server counts it as duplicates.
//! - Customer `rc-<CustomerID>` with the `.0` the export appends removed
//!   (`17850.0` → `rc-17850`).
//! - Guest checkouts (no CustomerID) are still sent, so that the shop's KPIs
//!   (orders, revenue) count them, under the customer `guest-<InvoiceNo>`: one
//!   throw-away id per invoice, never shared, so no guest profile ever spans
//!   two orders. Anything that profiles or segments customers should leave out
//!   the `guest-` prefix.
//! - No `session_id`: the file has no sessions, and purchases do not need one.
//!
//! # Time and order
//!
//! An invoice's time is the earliest `InvoiceDate` of its rows (43 invoices
//! straddle a minute boundary). Rows are grouped by `InvoiceNo` over the whole
//! file (one invoice, 542806, is interrupted by another), and invoices are sent
//! in order of first appearance, which is time order in this file, so every
//! customer's orders reach the server in the order they happened.
//!
//! # The dirt, and what we do with it
//!
//! Every choice below keeps each event valid for `POST /v1/events`, so the
//! server rejects nothing; whatever we do not send is counted per
//! [`SkipReason`] and printed.
//!
//! - Cancellations (`InvoiceNo` starting with `C`, negative quantities) are sent
//!   as `cancellation: true` with the quantities' magnitudes (what the server
//!   would make of negative ones anyway). Their `D` (discount) and `M`
//!   (manual) lines are kept: they are what the invoice takes back.
//! - Exact duplicate rows (5,268) are kept as separate lines. Nothing tells a
//!   doubled export apart from the same item keyed in twice, and the source
//!   system's invoice total includes both; dropping them would make the
//!   replayed revenue disagree with the file, merging them would make the
//!   line counts disagree. Basket size and revenue therefore match the file.
//! - Negative quantities on a non-`C` invoice (1,336 rows, all without
//!   customer, all at price 0, descriptions such as "damaged", "check",
//!   "thrown away") are stock write-offs, not sales, and a purchase cannot
//!   carry them: skipped as [`SkipReason::StockWriteOff`].
//! - Guest invoices whose every line is priced 0 (762 invoices, "found",
//!   "check", "adjustment" or no description at all) are stock corrections, not
//!   orders; sending them would add zero-value orders to the shop's order
//!   count: skipped as [`SkipReason::ZeroValueGuestInvoice`]. A zero-priced
//!   line on a priced invoice, or on a customer's invoice, is kept: the
//!   customer did get the item (free samples, manual lines).
//! - `A` invoices (stock code `B`, "Adjust bad debt", ±11,062.06, no customer)
//!   are accounting entries, not orders, and two carry a negative price the
//!   server refuses: skipped as [`SkipReason::BadDebtAdjustment`]. Any other
//!   negative price would be skipped per line ([`SkipReason::NegativePrice`]).
//! - Non-product stock codes (`POST`, `DOT`, `C2`, `M`, `BANK CHARGES`,
//!   `AMAZONFEE`, `CRUK`, `S`, `PADS`) are sent as lines: they are part of what
//!   the invoice charged.
//! - An empty description is sent as no description (all 1,454 belong to rows
//!   skipped above anyway); a description the server would refuse (over 256
//!   bytes, control characters) is dropped, the line kept.
//! - An unusable country is dropped, the invoice kept.
//! - Rows the server could never take (unparsable numbers or dates, zero or
//!   out-of-range quantities and prices, unusable stock codes or ids) are
//!   skipped with a reason of their own; none occur in the real file.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use actors::event::{validate_id, CustomerId, Event, EventId, EventKind, OrderLine, Purchase, SessionId};
use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use super::SessionEvents;

/// The columns the file must have, in this order.
pub const COLUMNS: [&str; 8] =
    ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"];

// The server's limits (src/serving/ingest/parse.rs); a line beyond them would be
// rejected, so we skip it here and say why instead.
/// Most lines the server takes in one purchase.
pub const MAX_LINES: usize = 1_000;
const MAX_QUANTITY: u64 = 1_000_000;
const MAX_PRICE: f64 = 1.0e7;
const MAX_TEXT_LEN: usize = 256;

const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Why rows were not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Negative quantity on an invoice that is not a cancellation.
    StockWriteOff,
    /// A guest invoice whose every line is priced 0.
    ZeroValueGuestInvoice,
    /// An `A` invoice (adjust bad debt).
    BadDebtAdjustment,
    /// A negative unit price outside an `A` invoice.
    NegativePrice,
    /// Quantity 0.
    ZeroQuantity,
    /// Quantity or price beyond what the server takes.
    OutOfRange,
    /// A field that does not parse (number, date) or a malformed CSV record.
    Unreadable,
    /// Empty or over-long stock code, or one with control characters.
    BadStockCode,
    /// An invoice number or customer id that cannot become a valid id.
    BadId,
    /// A time before 1970 or in the future.
    BadTime,
}

impl SkipReason {
    /// A phrase for the printed summary.
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::StockWriteOff => "stock write-offs (negative quantity on a non-cancellation invoice)",
            SkipReason::ZeroValueGuestInvoice => "stock corrections (guest invoices priced 0 throughout)",
            SkipReason::BadDebtAdjustment => "bad-debt adjustments (A invoices)",
            SkipReason::NegativePrice => "negative unit price",
            SkipReason::ZeroQuantity => "zero quantity",
            SkipReason::OutOfRange => "quantity above 1,000,000 or price above 1e7",
            SkipReason::Unreadable => "unreadable rows (bad number, date or CSV record)",
            SkipReason::BadStockCode => "unusable stock code",
            SkipReason::BadId => "invoice or customer id unusable as an id",
            SkipReason::BadTime => "time before 1970 or in the future",
        }
    }
}

/// Rows (and whole invoices) left out for one reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SkipCount {
    pub rows: u64,
    /// Invoices that sent nothing at all; each is counted under the reason of
    /// its first skipped row.
    pub invoices: u64,
}

/// What the reader made of the file.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RetailStats {
    /// Data rows read (header excluded).
    pub rows: u64,
    /// Distinct invoice numbers seen.
    pub invoices: u64,
    /// Invoices that became at least one event.
    pub invoices_sent: u64,
    /// Purchase events produced (more than `invoices_sent` when one is split).
    pub events: u64,
    /// Of those, cancellations.
    pub cancellations: u64,
    /// Of those, under a `guest-` customer.
    pub guest_events: u64,
    /// Invoices split because they had more than [`MAX_LINES`] lines.
    pub split_invoices: u64,
    /// Lines sent (rows sent, as duplicates are kept).
    pub lines_sent: u64,
    /// Descriptions dropped (empty or unusable); their lines were sent.
    pub descriptions_dropped: u64,
    pub skipped_rows: u64,
    pub skipped: BTreeMap<SkipReason, SkipCount>,
}

impl fmt::Display for RetailStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retail: {} rows, {} invoices → {} purchase events ({} cancellations, {} guest, {} split invoices), {} lines",
            thousands(self.rows),
            thousands(self.invoices),
            thousands(self.events),
            thousands(self.cancellations),
            thousands(self.guest_events),
            thousands(self.split_invoices),
            thousands(self.lines_sent),
        )?;
        if self.skipped.is_empty() {
            return write!(f, "; skipped: nothing");
        }
        write!(f, "\nskipped {} rows:", thousands(self.skipped_rows))?;
        for (reason, c) in &self.skipped {
            write!(
                f,
                "\n  {} rows ({} whole invoices): {}",
                thousands(c.rows),
                thousands(c.invoices),
                reason.describe()
            )?;
        }
        Ok(())
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// One usable row, already typed.
#[derive(Debug)]
struct Row {
    sku: String,
    description: String,
    quantity: i64,
    unit_price: f64,
    time: DateTime<Utc>,
    customer: Option<String>,
    country: String,
}

/// The rows of one invoice, gathered over the whole file.
#[derive(Debug)]
struct Invoice {
    number: String,
    rows: Vec<Row>,
    /// Rows of this invoice skipped before grouping (unreadable fields).
    early_skips: Vec<SkipReason>,
}

/// Reads the file and builds the events. Errors name the path; dirt in rows
/// is skipped and counted, never an error.
pub fn expand_file(path: &Path) -> anyhow::Result<(Vec<SessionEvents>, RetailStats)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    expand_reader(BufReader::new(file), &path.display().to_string(), Utc::now())
}

/// As [`expand_file`], from any reader; `source` names it in errors, and
/// times after `now` are skipped as the server would refuse them.
pub fn expand_reader<R: Read>(
    reader: R,
    source: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<(Vec<SessionEvents>, RetailStats)> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        // A record with a missing or extra field is counted as unreadable
        // rather than ending the run.
        .flexible(true)
        .from_reader(reader);
    check_header(csv.headers().with_context(|| format!("{source}: cannot read the header"))?)
        .with_context(|| format!("{source}: not an Online Retail CSV"))?;

    let mut stats = RetailStats::default();
    let mut invoices: Vec<Invoice> = Vec::new();
    let mut by_number: HashMap<String, usize> = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(e).with_context(|| format!("{source}: read error"));
                }
                // Bad UTF-8 or the like: we cannot even tell its invoice.
                stats.rows += 1;
                skip_rows(&mut stats, SkipReason::Unreadable, 1);
                continue;
            }
        }
        stats.rows += 1;
        let number = record.get(0).unwrap_or("").trim();
        if number.is_empty() {
            skip_rows(&mut stats, SkipReason::Unreadable, 1);
            continue;
        }
        let k = match by_number.get(number) {
            Some(&k) => k,
            None => {
                invoices.push(Invoice { number: number.to_owned(), rows: Vec::new(), early_skips: Vec::new() });
                by_number.insert(number.to_owned(), invoices.len() - 1);
                invoices.len() - 1
            }
        };
        match parse_row(&record, now) {
            Ok(row) => invoices[k].rows.push(row),
            Err(reason) => invoices[k].early_skips.push(reason),
        }
    }
    stats.invoices = invoices.len() as u64;

    let mut sessions = Vec::new();
    for invoice in invoices {
        if let Some(s) = invoice_events(invoice, &mut stats) {
            sessions.push(s);
        }
    }
    Ok((sessions, stats))
}

fn check_header(header: &csv::StringRecord) -> anyhow::Result<()> {
    let got: Vec<&str> = header.iter().map(str::trim).collect();
    if got != COLUMNS {
        bail!("expected the columns {}, found {}", COLUMNS.join(","), got.join(","));
    }
    Ok(())
}

fn skip_rows(stats: &mut RetailStats, reason: SkipReason, rows: u64) {
    stats.skipped_rows += rows;
    stats.skipped.entry(reason).or_default().rows += rows;
}

/// Types one record; a field that cannot be read skips the row.
fn parse_row(r: &csv::StringRecord, now: DateTime<Utc>) -> Result<Row, SkipReason> {
    if r.len() != COLUMNS.len() {
        return Err(SkipReason::Unreadable);
    }
    let field = |i: usize| r.get(i).unwrap_or("");
    let quantity: i64 = field(3).trim().parse().map_err(|_| SkipReason::Unreadable)?;
    let unit_price: f64 = field(5).trim().parse().map_err(|_| SkipReason::Unreadable)?;
    if !unit_price.is_finite() {
        return Err(SkipReason::Unreadable);
    }
    let time =
        NaiveDateTime::parse_from_str(field(4).trim(), DATE_FORMAT).map_err(|_| SkipReason::Unreadable)?.and_utc();
    if time.timestamp() < 0 || time > now {
        return Err(SkipReason::BadTime);
    }
    let customer = field(6).trim();
    let customer = if customer.is_empty() {
        None
    } else {
        // The export writes the numeric id as a float.
        Some(customer.strip_suffix(".0").unwrap_or(customer).to_owned())
    };
    Ok(Row {
        sku: field(1).trim().to_owned(),
        description: field(2).trim().to_owned(),
        quantity,
        unit_price,
        time,
        customer,
        country: field(7).trim().to_owned(),
    })
}

/// The server's rule for text fields.
fn text_ok(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= MAX_TEXT_LEN && !s.chars().any(char::is_control)
}

/// Turns one invoice into its event(s), or `None` when nothing of it can be
/// sent; updates the counts either way.
fn invoice_events(invoice: Invoice, stats: &mut RetailStats) -> Option<SessionEvents> {
    let Invoice { number, rows, early_skips } = invoice;
    let mut first_skip = early_skips.first().copied();
    for &reason in &early_skips {
        skip_rows(stats, reason, 1);
    }
    // Leaves out the invoice's remaining `n` rows for `reason`; the invoice
    // counts under its first skipped row's reason.
    fn skip_all(
        stats: &mut RetailStats,
        first_skip: &mut Option<SkipReason>,
        reason: SkipReason,
        n: usize,
    ) -> Option<SessionEvents> {
        skip_rows(stats, reason, n as u64);
        let first = *first_skip.get_or_insert(reason);
        stats.skipped.entry(first).or_default().invoices += 1;
        None
    }

    if rows.is_empty() {
        return skip_all(stats, &mut first_skip, SkipReason::Unreadable, 0);
    }
    // Bad-debt entries are bookkeeping, whatever their lines look like.
    if number.starts_with('A') {
        return skip_all(stats, &mut first_skip, SkipReason::BadDebtAdjustment, rows.len());
    }
    let cancellation = number.starts_with('C');
    let base_id = format!("rt-{number}");
    // Room for a split suffix keeps every part's id valid too.
    if validate_id(&format!("{base_id}-99")).is_err() || !text_ok(&number) {
        return skip_all(stats, &mut first_skip, SkipReason::BadId, rows.len());
    }
    // The first row decides the customer and country; in the real file every
    // row of an invoice agrees on both.
    let customer = match rows[0].customer.as_deref() {
        Some(c) => {
            let id = format!("rc-{c}");
            if validate_id(&id).is_err() {
                return skip_all(stats, &mut first_skip, SkipReason::BadId, rows.len());
            }
            Some(id)
        }
        None => None,
    };
    let country = Some(rows[0].country.clone()).filter(|c| text_ok(c));
    let time = rows.iter().map(|r| r.time).min()?;

    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        let reason = if !cancellation && row.quantity < 0 {
            Some(SkipReason::StockWriteOff)
        } else if row.quantity == 0 {
            Some(SkipReason::ZeroQuantity)
        } else if row.unit_price < 0.0 {
            Some(SkipReason::NegativePrice)
        } else if row.quantity.unsigned_abs() > MAX_QUANTITY || row.unit_price > MAX_PRICE {
            Some(SkipReason::OutOfRange)
        } else if !text_ok(&row.sku) {
            Some(SkipReason::BadStockCode)
        } else {
            None
        };
        if let Some(reason) = reason {
            skip_rows(stats, reason, 1);
            first_skip.get_or_insert(reason);
            continue;
        }
        let description = Some(row.description).filter(|d| text_ok(d));
        lines.push(OrderLine {
            sku: row.sku,
            // Checked against MAX_QUANTITY above, so it fits.
            quantity: u32::try_from(row.quantity.unsigned_abs()).unwrap_or(u32::MAX),
            unit_price: row.unit_price,
            description,
        });
    }
    if lines.is_empty() {
        let reason = first_skip.unwrap_or(SkipReason::Unreadable);
        stats.skipped.entry(reason).or_default().invoices += 1;
        return None;
    }
    if customer.is_none() && lines.iter().all(|l| l.unit_price == 0.0) {
        return skip_all(stats, &mut first_skip, SkipReason::ZeroValueGuestInvoice, lines.len());
    }

    stats.descriptions_dropped += lines.iter().filter(|l| l.description.is_none()).count() as u64;
    let guest = customer.is_none();
    let customer = CustomerId::new_unchecked(customer.unwrap_or_else(|| format!("guest-{number}")));
    let parts = lines.len().div_ceil(MAX_LINES);
    let mut events = Vec::with_capacity(parts);
    let mut rest = lines.into_iter().peekable();
    let mut part = 0;
    while rest.peek().is_some() {
        part += 1;
        let chunk: Vec<OrderLine> = rest.by_ref().take(MAX_LINES).collect();
        stats.lines_sent += chunk.len() as u64;
        let event_id = if parts == 1 { base_id.clone() } else { format!("{base_id}-{part}") };
        events.push(Event {
            event_id: EventId::new_unchecked(event_id),
            customer_id: customer.clone(),
            session_id: None,
            time,
            kind: EventKind::Purchase(Purchase {
                invoice: number.clone(),
                lines: chunk,
                country: country.clone(),
                cancellation,
            }),
        });
    }
    stats.invoices_sent += 1;
    stats.events += events.len() as u64;
    if cancellation {
        stats.cancellations += events.len() as u64;
    }
    if guest {
        stats.guest_events += events.len() as u64;
    }
    if parts > 1 {
        stats.split_invoices += 1;
    }
    Some(SessionEvents {
        customer,
        // Only a grouping label for the batch planner (the parts of a split
        // invoice travel together, in order); the events carry no session.
        session: SessionId::new_unchecked(base_id),
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const HEADER: &str = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn run(rows: &[&str]) -> (Vec<SessionEvents>, RetailStats) {
        let mut text = String::from(HEADER);
        for r in rows {
            text.push('\n');
            text.push_str(r);
        }
        text.push('\n');
        expand_reader(text.as_bytes(), "inline", now()).unwrap()
    }

    fn purchase(e: &Event) -> &Purchase {
        match &e.kind {
            EventKind::Purchase(p) => p,
            k => panic!("not a purchase: {k:?}"),
        }
    }

    fn skipped(stats: &RetailStats, reason: SkipReason) -> (u64, u64) {
        stats.skipped.get(&reason).map(|c| (c.rows, c.invoices)).unwrap_or((0, 0))
    }

    /// One row of every kind of dirt in the real file, in file order.
    const DIRTY: &[&str] = &[
        // An order of two lines, one an exact duplicate, one free; the second
        // minute of the invoice must not move its time.
        "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
        "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
        "536365,22633,HAND WARMER UNION JACK,2,2010-12-01 08:27:00,0.0,17850.0,United Kingdom",
        // A guest order with a quoted description and a postage line.
        "536544,21773,\"DECORATIVE ROSE BATHROOM BOTTLE, TALL\",1,2010-12-01 14:32:00,2.51,,United Kingdom",
        "536544,POST,POSTAGE,1,2010-12-01 14:32:00,18.0,,United Kingdom",
        // A cancellation with a discount line.
        "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom",
        "C536383,35004C,SET OF 3 COLOURED  FLYING DUCKS,-2,2010-12-01 09:49:00,4.65,17850.0,United Kingdom",
        // A stock write-off: negative, no customer, price 0, no description.
        "536589,21777,,-10,2010-12-01 16:50:00,0.0,,United Kingdom",
        // A stock correction: a guest invoice priced 0 throughout.
        "536414,22139,,56,2010-12-01 11:52:00,0.0,,United Kingdom",
        // Bad-debt adjustments.
        "A563185,B,Adjust bad debt,1,2011-08-12 14:50:00,11062.06,,United Kingdom",
        "A563186,B,Adjust bad debt,1,2011-08-12 14:51:00,-11062.06,,United Kingdom",
        // A customer's line without description, and an unreadable row of
        // the same invoice.
        "536999,22100,,3,2010-12-02 10:00:00,1.25,12583.0,France",
        "536999,22101,X,three,2010-12-02 10:00:00,1.25,12583.0,France",
        // A quantity the server would refuse.
        "537000,22102,BIG,2000000,2010-12-02 11:00:00,1.0,12583.0,France",
        // The rest of the first invoice, interrupted by the others.
        "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",
    ];

    #[test]
    fn every_kind_of_dirt_is_handled() {
        let (sessions, stats) = run(DIRTY);
        let events: Vec<&Event> = sessions.iter().flat_map(|s| &s.events).collect();
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["rt-536365", "rt-536544", "rt-C536379", "rt-C536383", "rt-536999"]);

        // Grouped over the file, duplicates kept, free line kept, earliest time.
        let e = events[0];
        assert_eq!(e.customer_id.as_str(), "rc-17850");
        assert_eq!(e.session_id, None);
        assert_eq!(e.time, Utc.with_ymd_and_hms(2010, 12, 1, 8, 26, 0).unwrap());
        let p = purchase(e);
        assert_eq!(p.invoice, "536365");
        assert!(!p.cancellation);
        assert_eq!(p.country.as_deref(), Some("United Kingdom"));
        let skus: Vec<&str> = p.lines.iter().map(|l| l.sku.as_str()).collect();
        assert_eq!(skus, ["85123A", "85123A", "22633", "71053"]);
        assert_eq!(p.lines[2].unit_price, 0.0);
        assert!((p.value() - (2.0 * 6.0 * 2.55 + 6.0 * 3.39)).abs() < 1e-9);

        // Guest: sent under a per-invoice id.
        let g = events[1];
        assert_eq!(g.customer_id.as_str(), "guest-536544");
        let gp = purchase(g);
        assert_eq!(gp.lines.len(), 2);
        assert_eq!(gp.lines[0].description.as_deref(), Some("DECORATIVE ROSE BATHROOM BOTTLE, TALL"));

        // Cancellations: flag set, magnitudes.
        let c = purchase(events[2]);
        assert!(c.cancellation);
        assert_eq!(c.invoice, "C536379");
        assert_eq!((c.lines[0].sku.as_str(), c.lines[0].quantity), ("D", 1));
        assert_eq!(purchase(events[3]).lines[0].quantity, 2);
        assert_eq!(events[3].customer_id.as_str(), "rc-17850");

        // Empty description: no description; the unreadable row is skipped.
        let d = purchase(events[4]);
        assert_eq!(d.lines.len(), 1);
        assert_eq!(d.lines[0].description, None);
        assert_eq!(d.country.as_deref(), Some("France"));

        assert_eq!(skipped(&stats, SkipReason::StockWriteOff), (1, 1));
        assert_eq!(skipped(&stats, SkipReason::ZeroValueGuestInvoice), (1, 1));
        assert_eq!(skipped(&stats, SkipReason::BadDebtAdjustment), (2, 2));
        assert_eq!(skipped(&stats, SkipReason::Unreadable), (1, 0));
        assert_eq!(skipped(&stats, SkipReason::OutOfRange), (1, 1));
        assert_eq!(stats.rows, DIRTY.len() as u64);
        assert_eq!(stats.invoices, 10);
        assert_eq!(stats.invoices_sent, 5);
        assert_eq!(stats.events, 5);
        assert_eq!(stats.cancellations, 2);
        assert_eq!(stats.guest_events, 1);
        assert_eq!(stats.lines_sent, 9);
        assert_eq!(stats.descriptions_dropped, 1);
        assert_eq!(stats.skipped_rows, 6);
        // Every row is either sent or counted as skipped.
        assert_eq!(stats.lines_sent + stats.skipped_rows, stats.rows);
        let printed = stats.to_string();
        assert!(printed.contains("2 rows (2 whole invoices): bad-debt adjustments"), "{printed}");
    }

    #[test]
    fn events_pass_the_servers_validation() {
        use crate::serving::ingest::parse::{parse_body, BodyFormat, ParseLimits};
        let (sessions, _) = run(DIRTY);
        let events: Vec<Event> = sessions.into_iter().flat_map(|s| s.events).collect();
        let body = serde_json::to_vec(&events).unwrap();
        let limits = ParseLimits { max_events: 100, latest_time: now() };
        let parsed = parse_body(&body, BodyFormat::JsonArray, limits).unwrap();
        assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
        let back: Vec<Event> = parsed.events.into_iter().map(|(_, e)| e).collect();
        assert_eq!(back, events);
    }

    #[test]
    fn oversized_invoices_are_split_in_order() {
        let rows: Vec<String> = (0..MAX_LINES + 5)
            .map(|i| format!("573585,S{i},ITEM {i},1,2011-10-31 14:41:00,1.5,,United Kingdom"))
            .collect();
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let (sessions, stats) = run(&refs);
        assert_eq!(sessions.len(), 1);
        let ids: Vec<&str> = sessions[0].events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["rt-573585-1", "rt-573585-2"]);
        assert_eq!(purchase(&sessions[0].events[0]).lines.len(), MAX_LINES);
        assert_eq!(purchase(&sessions[0].events[1]).lines[0].sku, format!("S{MAX_LINES}"));
        assert_eq!(purchase(&sessions[0].events[1]).invoice, "573585");
        assert_eq!((stats.events, stats.split_invoices, stats.invoices_sent), (2, 1, 1));
    }

    #[test]
    fn bad_header_and_odd_records() {
        let err = expand_reader("a,b\n1,2\n".as_bytes(), "inline", now()).unwrap_err();
        assert!(format!("{err:#}").contains("not an Online Retail CSV"));
        let (sessions, stats) = run(&[
            "536365,85123A,X,1,2010-12-01 08:26:00,2.55,17850.0",
            "536366,85123A,X,1,1969-12-31 23:59:59,2.55,17850.0,United Kingdom",
            "536367,85123A,X,1,2030-01-01 00:00:00,2.55,17850.0,United Kingdom",
            "536368,85123A,X,1,2010-12-01T08:26:00,2.55,17850.0,United Kingdom",
            "536369,,X,1,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
            "536370,85123A,X,0,2010-12-01 08:26:00,2.55,bad id,United Kingdom",
            "536371,85123A,X,1,2010-12-01 08:26:00,2.55,12 34,United Kingdom",
            "536372,85123A,X,1,2010-12-01 08:26:00,-1,17850.0,",
            "536373,85123A,X,1,2010-12-01 08:26:00,2.55,17850.0,",
        ]);
        assert_eq!(sessions.len(), 1);
        assert_eq!(purchase(&sessions[0].events[0]).country, None);
        assert_eq!(skipped(&stats, SkipReason::Unreadable), (2, 2));
        assert_eq!(skipped(&stats, SkipReason::BadTime), (2, 2));
        assert_eq!(skipped(&stats, SkipReason::BadStockCode), (1, 1));
        assert_eq!(skipped(&stats, SkipReason::BadId), (2, 2));
        assert_eq!(skipped(&stats, SkipReason::NegativePrice), (1, 1));
        assert_eq!(stats.lines_sent + stats.skipped_rows, stats.rows);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_336), "1,336");
        assert_eq!(thousands(541_909), "541,909");
    }
}
