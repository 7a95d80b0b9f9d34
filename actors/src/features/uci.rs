//! The UCI Online Shoppers file's form of [`ShoppersFeatures`]: column
//! names, parsing a record (with errors naming the column), and the JSON
//! object under the file's column names.

use super::session::ShoppersFeatures;
use super::FeatureError;
use crate::event::VisitorType;

/// Month spellings of the UCI file (`June` is spelled out there; Jan and Apr do
/// not occur in the file, so their short forms are our choice).
pub(crate) const MONTH_NAMES: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "June", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

pub(crate) const REVENUE_COLUMN: &str = "Revenue";

impl ShoppersFeatures {
    /// The UCI file's feature column names, in file order (without `Revenue`).
    pub const UCI_COLUMNS: [&'static str; 17] = [
        "Administrative",
        "Administrative_Duration",
        "Informational",
        "Informational_Duration",
        "ProductRelated",
        "ProductRelated_Duration",
        "BounceRates",
        "ExitRates",
        "PageValues",
        "SpecialDay",
        "Month",
        "OperatingSystems",
        "Browser",
        "Region",
        "TrafficType",
        "VisitorType",
        "Weekend",
    ];

    /// The month as the UCI file spells it (`"Feb"`, `"June"`, …); `""` for a
    /// month outside 1..=12.
    pub fn month_name(month: u8) -> &'static str {
        match month {
            1..=12 => MONTH_NAMES[usize::from(month - 1)],
            _ => "",
        }
    }

    /// The features as a JSON object keyed by the UCI column names: counts and
    /// the categorical codes as integers, `Month` and `VisitorType` as the file
    /// spells them, `Weekend` as a bool, everything else as a float.
    pub fn to_uci_json(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let values: [Value; 17] = [
            Value::from(self.administrative),
            Value::from(self.administrative_duration),
            Value::from(self.informational),
            Value::from(self.informational_duration),
            Value::from(self.product_related),
            Value::from(self.product_related_duration),
            Value::from(self.bounce_rates),
            Value::from(self.exit_rates),
            Value::from(self.page_values),
            Value::from(self.special_day),
            Value::from(Self::month_name(self.month)),
            Value::from(self.operating_systems),
            Value::from(self.browser),
            Value::from(self.region),
            Value::from(self.traffic_type),
            Value::from(self.visitor_type.uci_name()),
            Value::from(self.weekend),
        ];
        Self::UCI_COLUMNS.iter().zip(values).map(|(k, v)| ((*k).to_owned(), v)).collect()
    }

    /// Parses one data row of the UCI CSV: 18 fields in header order (the 17
    /// features, then `Revenue`). Fields are trimmed, so a stray `\r` from the
    /// file's CRLF endings is harmless. Durations must be `>= 0` or exactly `-1`.
    pub fn from_uci_record(record: &[&str]) -> Result<(Self, bool), FeatureError> {
        if record.len() != Self::UCI_COLUMNS.len() + 1 {
            return Err(FeatureError::FieldCount { expected: Self::UCI_COLUMNS.len() + 1, got: record.len() });
        }
        let field = |i: usize| (Self::UCI_COLUMNS.get(i).copied().unwrap_or(REVENUE_COLUMN), record[i].trim());
        let features = Self {
            administrative: parse_count(field(0))?,
            administrative_duration: parse_duration(field(1))?,
            informational: parse_count(field(2))?,
            informational_duration: parse_duration(field(3))?,
            product_related: parse_count(field(4))?,
            product_related_duration: parse_duration(field(5))?,
            bounce_rates: parse_float(field(6), Some(1.0))?,
            exit_rates: parse_float(field(7), Some(1.0))?,
            page_values: parse_float(field(8), None)?,
            special_day: parse_float(field(9), Some(1.0))?,
            month: parse_month(field(10))?,
            operating_systems: parse_code(field(11))?,
            browser: parse_code(field(12))?,
            region: parse_code(field(13))?,
            traffic_type: parse_code(field(14))?,
            visitor_type: parse_visitor_type(field(15))?,
            weekend: parse_bool(field(16))?,
        };
        let revenue = parse_bool(field(17))?;
        Ok((features, revenue))
    }
}

fn invalid(column: &'static str, value: &str, reason: impl Into<String>) -> FeatureError {
    FeatureError::InvalidValue { column, value: value.to_owned(), reason: reason.into() }
}

fn parse_count((column, s): (&'static str, &str)) -> Result<u32, FeatureError> {
    s.parse::<u32>().map_err(|e| invalid(column, s, format!("not a non-negative integer ({e})")))
}

fn parse_code((column, s): (&'static str, &str)) -> Result<u16, FeatureError> {
    s.parse::<u16>().map_err(|e| invalid(column, s, format!("not an integer code 0..=65535 ({e})")))
}

fn parse_finite(column: &'static str, s: &str) -> Result<f64, FeatureError> {
    let x = s.parse::<f64>().map_err(|e| invalid(column, s, format!("not a number ({e})")))?;
    if !x.is_finite() {
        return Err(invalid(column, s, "not a finite number"));
    }
    Ok(x)
}

fn parse_duration((column, s): (&'static str, &str)) -> Result<f64, FeatureError> {
    let x = parse_finite(column, s)?;
    if x < 0.0 && x != -1.0 {
        return Err(invalid(column, s, "a duration is >= 0, or -1 for unknown"));
    }
    Ok(x)
}

fn parse_float((column, s): (&'static str, &str), max: Option<f64>) -> Result<f64, FeatureError> {
    let x = parse_finite(column, s)?;
    if x < 0.0 {
        return Err(invalid(column, s, "must be >= 0"));
    }
    if let Some(max) = max.filter(|m| x > *m) {
        return Err(invalid(column, s, format!("must be <= {max}")));
    }
    Ok(x)
}

fn parse_month((column, s): (&'static str, &str)) -> Result<u8, FeatureError> {
    // "Jun" is accepted too because other copies of the data set use it.
    let pos = MONTH_NAMES
        .iter()
        .position(|m| m.eq_ignore_ascii_case(s))
        .or_else(|| s.eq_ignore_ascii_case("Jun").then_some(5));
    match pos {
        // pos < 12, so the narrowing is lossless.
        Some(i) => Ok(i as u8 + 1),
        None => Err(invalid(column, s, "not a month name (Jan, Feb, …, June, Jul, …, Dec)")),
    }
}

fn parse_visitor_type((column, s): (&'static str, &str)) -> Result<VisitorType, FeatureError> {
    [VisitorType::Returning, VisitorType::New, VisitorType::Other]
        .into_iter()
        .find(|v| v.uci_name() == s)
        .ok_or_else(|| invalid(column, s, "expected Returning_Visitor, New_Visitor or Other"))
}

fn parse_bool((column, s): (&'static str, &str)) -> Result<bool, FeatureError> {
    if s.eq_ignore_ascii_case("TRUE") {
        Ok(true)
    } else if s.eq_ignore_ascii_case("FALSE") {
        Ok(false)
    } else {
        Err(invalid(column, s, "expected TRUE or FALSE"))
    }
}
