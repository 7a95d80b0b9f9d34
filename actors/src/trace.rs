//! Trace context carried with an event through the runtime, so the spans of
//! its commit, fold and snapshot join the trace of the request that sent it.
//!
//! The runtime core stays free of OpenTelemetry: it knows a trace only as a
//! W3C `traceparent` ([`TraceParent`]) and records spans through the
//! [`SpanRecorder`] the application supplies in its hooks. Only sampled
//! contexts are ever carried, so with tracing off (or a request not sampled)
//! every `Option<TraceParent>` is `None` and costs nothing further.

use std::time::SystemTime;

/// A W3C trace context (`traceparent` version 00): which trace, which span
/// is the parent, and the trace flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// The `sampled` trace flag.
    pub const SAMPLED: u8 = 0x01;

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`. Per the W3C rules an all-zero
    /// trace or span id is invalid, and an unknown version is read as 00
    /// only if the value has at least the version-00 fields.
    pub fn parse(s: &str) -> Option<TraceParent> {
        let s = s.trim();
        let mut parts = s.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") || u8::from_str_radix(version, 16).is_err() {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?;
        let span_id: [u8; 8] = decode_hex(span)?;
        let [flags]: [u8; 1] = decode_hex(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, span_id, flags })
    }

    pub fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The trace id as 32 lowercase hex digits (what frames and logs show).
    pub fn trace_id_hex(&self) -> String {
        encode_hex(&self.trace_id)
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00-{}-{}-{:02x}", encode_hex(&self.trace_id), encode_hex(&self.span_id), self.flags)
    }
}

impl std::fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// A span that already happened, as the runtime reports it.
pub struct FinishedSpan<'a> {
    pub name: &'static str,
    pub parent: &'a TraceParent,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Low-cardinality attributes (counts, names).
    pub attributes: Vec<(&'static str, i64)>,
}

/// Records finished spans; implemented by the application's exporter. The
/// returned context is the new span's, so later steps can be its children.
pub trait SpanRecorder: Send + Sync + 'static {
    fn record(&self, span: FinishedSpan<'_>) -> TraceParent;
}

/// The earliest-seen context of a set of events (they usually share one
/// request), so a step done once for many events is recorded once per trace
/// rather than once per event.
pub fn distinct<'a>(contexts: impl IntoIterator<Item = &'a TraceParent>) -> Vec<TraceParent> {
    let mut out: Vec<TraceParent> = Vec::new();
    for c in contexts {
        if !out.iter().any(|o| o == c) {
            out.push(*c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(s).unwrap();
        assert!(t.sampled());
        assert_eq!(t.to_string(), s);
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad:?} was accepted");
        }
        // A later version with extra fields is read as version 00.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x").is_some());
    }

    #[test]
    fn distinct_keeps_first_occurrences_in_order() {
        let a = TraceParent { trace_id: [1; 16], span_id: [1; 8], flags: 1 };
        let b = TraceParent { trace_id: [2; 16], span_id: [2; 8], flags: 1 };
        assert_eq!(distinct([&a, &b, &a, &b]), vec![a, b]);
    }
}
