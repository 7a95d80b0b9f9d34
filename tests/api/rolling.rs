//! A rolling restart users do not notice: `cartpulse bench roll` (the
//! scenario scripts/rolling-restart.sh runs at full size) at a rate a debug
//! build keeps up with. Two gateways and two leased processors, each real
//! processes over the real Redis and a fresh Postgres database, are replaced
//! one at a time with SIGTERM under steady producers and WebSocket viewers;
//! then nothing may have failed, been lost, counted twice or missed.

use crate::crash::BIN;
use crate::helpers::pg_admin_url;
use serde_json::Value;
use std::process::{Command, Stdio};

#[test]
fn a_rolling_restart_fails_no_request_loses_nothing_and_every_viewer_sees_every_frame() {
    let out = Command::new(BIN)
        .args(["bench", "roll", "--redis-url", "redis://127.0.0.1:6379", "--pg-admin-url", &pg_admin_url()])
        .args(["--rate", "300", "--viewers", "60", "--customers", "60", "--steady", "3", "--drain-s", "1"])
        .args(["--settle", "1", "--lease-ms", "1000"])
        .stdin(Stdio::null())
        .stderr(if std::env::var("TEST_LOG").is_ok() { Stdio::inherit() } else { Stdio::piped() })
        .output()
        .expect("cartpulse bench roll");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no report ({}): {stderr}", out.status));
    eprintln!("{report}");
    assert_eq!(report["replicas_restarted"], 4, "{stderr}");
    assert_eq!(report["clean_exits"], 4, "every replica exits 0 after SIGTERM: {stderr}");
    assert_eq!(report["requests_failed"], 0, "{stderr}");
    assert!(report["events_acked"].as_u64().unwrap() > 1_000, "too little traffic to mean anything: {report}");
    assert_eq!(report["events_lost"], 0);
    assert_eq!(report["events_counted_twice"], 0);
    assert_eq!(report["events_not_applied"], 0);
    assert_eq!(report["customers_checked"], 60);
    assert_eq!(report["frames_missed"], 0);
    assert_eq!(report["gap_notices"], 0);
    // Both gateways were replaced: every viewer was closed at least once,
    // with 1001 ("going away", docs/stream.md), and came back with `since`.
    assert!(report["reconnects"].as_u64().unwrap() >= 60, "{report}");
    let closes = report["close_codes"].as_object().unwrap();
    assert_eq!(closes.keys().collect::<Vec<_>>(), vec!["1001"], "only 1001 closes: {report}");
    assert_eq!(report["ok"], true);
    assert!(out.status.success(), "{stderr}");
}
