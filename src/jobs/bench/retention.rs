//! `cartpulse bench retention`: what retention costs (docs/data-lake.md,
//! "Retention"). Two measurements:
//!
//! - **A day deleted under load** (default). A day of `--day-events`
//!   synthetic events, received 40 days ago, is written into a fresh
//!   database (SQLite, or `--database-url` Postgres, where it gets its day
//!   partition), checkpointed and archived. Then `serve` runs over it with a
//!   scheduled archive (`--steady-s`), while producers send live events at
//!   `--rate`. The archive run finds nothing new; the retention after it
//!   deletes the day. Printed: how long the delete took (from the end of
//!   the archive run to the end of retention, polled every 50 ms on
//!   `/metrics`), the acknowledgement p99 before it (steady state) and
//!   while it ran, and their ratio against the floor of 2.
//! - **`--simulate-days N`**: N days of `--day-events` events each, compressed
//!   in time: each simulated day's events are written straight into the log
//!   (stamped with that day, received at its end), checkpointed, archived,
//!   and retention runs with the clock at the day's end
//!   (`--events-days` 7 and `--dedup-days` 14 by default, so the bounds
//!   show within the run). Printed per day: events, retired ids and bytes
//!   in the database; at the end whether the database stayed bounded (never
//!   more than `events-days + 1` days of events nor `dedup-days + 1` days of
//!   retired ids, and from the day after both bounds are reached its bytes
//!   grow by at most [`STEADY_BYTES_GROWTH`]), whether the lake holds every
//!   event, and whether every day's count in the lake equals the events sent
//!   for that day. A simulated day lasts seconds: on Postgres each ends with a
//!   `VACUUM` of `event_ids`, the reclaiming of expired ids that autovacuum
//!   does in the hours of a real day.

use super::servers::Server;
use crate::config::Settings;
use crate::jobs::replay::synthetic::{generate_events, SyntheticConfig};
use crate::lake::manifest::{Manifest, MANIFEST_KEY};
use crate::lake::LakeStore;
use anyhow::Context;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use secrecy::ExposeSecret;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct RetentionArgs {
    /// Events per day.
    #[arg(long, default_value_t = 1_000_000)]
    pub day_events: u64,
    /// Live events per second sent while the day is deleted.
    #[arg(long, default_value_t = 4_000)]
    pub rate: u64,
    /// Events per live request.
    #[arg(long, default_value_t = 20)]
    pub batch_size: u64,
    /// Seconds of steady live load before the scheduled archive and retention run.
    #[arg(long, default_value_t = 20)]
    pub steady_s: u64,
    /// Simulate this many days instead (compressed in time; no server).
    #[arg(long)]
    pub simulate_days: Option<u32>,
    /// `retention.events_days` of the simulation.
    #[arg(long, default_value_t = 7)]
    pub events_days: u32,
    /// `retention.dedup_days` of the simulation.
    #[arg(long, default_value_t = 14)]
    pub dedup_days: u32,
    /// Seed of the synthetic traffic.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The product's floor: ingest p99 while a day is deleted, against steady state.
pub const FLOOR_P99_RATIO: f64 = 2.0;

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RetentionBenchReport {
    Load(LoadReport),
    Simulation(SimulationReport),
}

#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub database: &'static str,
    pub day_events: u64,
    pub deleted_events: u64,
    pub delete_s: f64,
    pub steady_requests: u64,
    pub steady_p50_ms: f64,
    pub steady_p99_ms: f64,
    pub during_requests: u64,
    pub during_p50_ms: f64,
    pub during_p99_ms: f64,
    pub during_max_ms: f64,
    pub p99_ratio: f64,
    pub floor_p99_ratio: f64,
    pub failed_requests: u64,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct SimulatedDay {
    pub day: NaiveDate,
    pub sent: u64,
    pub deleted: u64,
    pub rows_in_database: i64,
    /// Ids kept for de-duplication: every id on Postgres (`event_ids`),
    /// the deleted events' on SQLite (`retired_event_ids`).
    pub retired_ids: i64,
    pub database_bytes: i64,
    pub archived_through: i64,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct SimulationReport {
    pub database: &'static str,
    pub days: Vec<SimulatedDay>,
    pub events_days: u32,
    pub sent: u64,
    pub max_rows_in_database: i64,
    pub max_retired_ids: i64,
    pub max_database_bytes: i64,
    /// The last day's bytes over those of the first steady day
    /// (`dedup-days + 2`, the first to refill the space retention freed the
    /// day before); `None` when the run is too short to tell.
    pub steady_bytes_growth: Option<f64>,
    pub bounded: bool,
    pub archive_complete: bool,
    pub days_equal: bool,
    pub ok: bool,
}

pub async fn run(args: RetentionArgs, mut settings: Settings) -> anyhow::Result<RetentionBenchReport> {
    anyhow::ensure!(args.day_events > 0, "--day-events must be > 0");
    let tmp = tempfile::Builder::new().prefix("cartpulse-bench-retention-").tempdir()?;
    let postgres = settings.database_url.expose_secret().starts_with("postgres");
    if !postgres {
        let path = tmp.path().join("bench.db");
        settings.database_url = format!("sqlite://{}?mode=rwc", path.display()).into();
    }
    settings.lake.store = tmp.path().join("lake").display().to_string();
    settings.lake.endpoint = None;
    settings.redis.partitions = 1;
    let db = crate::db::connect(&settings).await?;
    crate::db::migrate(&db).await?;
    let n: i64 = count(&db, "SELECT count(*) FROM events").await?;
    anyhow::ensure!(n == 0, "the database of --database-url holds {n} events; give the bench an empty one");
    let database = if postgres { "postgres" } else { "sqlite" };
    match args.simulate_days {
        Some(days) => simulate(&args, days, settings, &db, database).await.map(RetentionBenchReport::Simulation),
        None => under_load(&args, settings, &db, database, tmp.path()).await.map(RetentionBenchReport::Load),
    }
}

async fn count(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row =
        db.query_one(Statement::from_string(db.get_database_backend(), sql.to_owned())).await?.context("no answer")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// Writes `n` synthetic events stamped within `day` (sessions start over
/// its first 22 hours), received at `received`; returns the count sent per
/// UTC day of event time.
async fn fill_day(
    db: &DatabaseConnection,
    day: NaiveDate,
    n: u64,
    seed: u64,
    received: DateTime<Utc>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<BTreeMap<NaiveDate, u64>> {
    let start = day.and_hms_opt(0, 0, 0).context("midnight")?.and_utc();
    let mut cfg = SyntheticConfig::new(0, seed);
    cfg.prefix = format!("d{}", day.format("%Y%m%d"));
    cfg.span = TimeDelta::hours(22);
    cfg.end = start + TimeDelta::hours(22);
    let sessions = tokio::task::spawn_blocking(move || generate_events(&cfg, n))
        .await
        .context("the synthetic generator panicked")?;
    let backend = db.get_database_backend();
    let received_text = received.to_rfc3339();
    let mut per_day = BTreeMap::new();
    let txn = db.begin().await?;
    let events: Vec<_> = sessions.into_iter().flat_map(|s| s.events).collect();
    for chunk in events.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO events (event_id, customer_id, session_id, event_type, event_time, received_at, body) VALUES ",
        );
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 7);
        for (k, e) in chunk.iter().enumerate() {
            *per_day.entry(e.time.date_naive()).or_insert(0) += 1;
            if k > 0 {
                sql.push(',');
            }
            match backend {
                DbBackend::Postgres => {
                    let b = k * 7;
                    sql.push_str(&format!(
                        "(${},${},${},${},${}::timestamptz,${}::timestamptz,${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 7
                    ));
                }
                _ => sql.push_str("(?,?,?,?,?,?,?)"),
            }
            values.push(e.event_id.as_str().into());
            values.push(e.customer_id.as_str().into());
            values.push(e.session_id.as_ref().map(|s| s.as_str().to_owned()).into());
            values.push(e.kind.name().into());
            values.push(e.time.to_rfc3339().into());
            values.push(received_text.as_str().into());
            values.push(serde_json::to_string(&e.kind)?.into());
        }
        txn.execute(Statement::from_sql_and_values(backend, sql, values)).await.context("writing the log")?;
        bar.inc(chunk.len() as u64);
    }
    if backend == DbBackend::Postgres {
        // The group commit would have registered the ids (every row of this
        // fill shares its receive time).
        txn.execute(Statement::from_sql_and_values(
            backend,
            "INSERT INTO event_ids (event_id, received_at) SELECT event_id, received_at FROM events \
             WHERE received_at = $1::timestamptz ON CONFLICT DO NOTHING",
            [received_text.as_str().into()],
        ))
        .await?;
    }
    txn.commit().await?;
    Ok(per_day)
}

/// The database's size: SQLite's used pages, Postgres' tables and indexes
/// of the event log and its ids.
async fn database_bytes(db: &DatabaseConnection) -> anyhow::Result<i64> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            count(
                db,
                "SELECT ((SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('events')) \
                      + pg_total_relation_size('event_ids'))::bigint",
            )
            .await
        }
        _ => {
            let pages = count(db, "SELECT page_count FROM pragma_page_count()").await?;
            let free = count(db, "SELECT freelist_count FROM pragma_freelist_count()").await?;
            let size = count(db, "SELECT page_size FROM pragma_page_size()").await?;
            Ok((pages - free) * size)
        }
    }
}

/// How much the database may grow from the first steady day to the last
/// (free space reused, not returned, moves a little).
const STEADY_BYTES_GROWTH: f64 = 1.10;

async fn simulate(
    args: &RetentionArgs,
    days: u32,
    mut settings: Settings,
    db: &DatabaseConnection,
    database: &'static str,
) -> anyhow::Result<SimulationReport> {
    anyhow::ensure!(days > 0, "--simulate-days must be > 0");
    anyhow::ensure!(args.events_days > 0, "--events-days must be > 0");
    settings.retention.events_days = args.events_days;
    anyhow::ensure!(args.dedup_days >= args.events_days, "--dedup-days must be at least --events-days");
    settings.retention.dedup_days = args.dedup_days;
    settings.retention.batch_rows = settings.retention.batch_rows.max(10_000);
    settings.lake.block_events = args.day_events;
    let store = LakeStore::from_settings(&settings).await?;
    let first = Utc::now().date_naive() - TimeDelta::days(i64::from(days) + 2);
    let gate = actors::WriteGate::open();
    // Where the ids retention keeps are: every id on Postgres, the deleted
    // events' on SQLite.
    let ids_sql = match database {
        "postgres" => "SELECT count(*) FROM event_ids",
        _ => "SELECT count(*) FROM retired_event_ids",
    };
    let mut sent_per_day: BTreeMap<NaiveDate, u64> = BTreeMap::new();
    let mut out = Vec::new();
    let mut sent = 0u64;
    let bar = indicatif::ProgressBar::new(u64::from(days) * args.day_events);
    eprintln!(
        "simulating {days} days of {} events on {database}, retention.events_days = {}",
        args.day_events, args.events_days
    );
    for d in 0..days {
        let started = Instant::now();
        let day = first + TimeDelta::days(i64::from(d));
        let end = (day + TimeDelta::days(1)).and_hms_opt(0, 0, 0).context("midnight")?.and_utc();
        if database == "postgres" {
            // As the maintenance would have, ahead of the day.
            crate::retention::partitions::make(db, "events", day).await?;
        }
        let received = day.and_hms_opt(23, 0, 0).context("time")?.and_utc();
        let per_day = fill_day(db, day, args.day_events, args.seed + u64::from(d), received, &bar).await?;
        for (k, v) in per_day {
            *sent_per_day.entry(k).or_insert(0) += v;
        }
        sent += args.day_events;
        // Seqs of a fresh log run from 1 without gaps: everything sent is checkpointed.
        actors::store::write_checkpoint(db, actors::store::RUNTIME_CHECKPOINT, sent as i64).await?;
        let a = crate::lake::archive::archive_with(db, &store, &settings, false).await?;
        let r = crate::retention::retain(db, &gate, &settings, a.archived_through, end + TimeDelta::seconds(1)).await?;
        if database == "postgres" {
            db.execute_unprepared("VACUUM event_ids").await.context("vacuuming event_ids")?;
        }
        let day_report = SimulatedDay {
            day,
            sent: args.day_events,
            deleted: r.deleted_events,
            rows_in_database: count(db, "SELECT count(*) FROM events").await?,
            retired_ids: count(db, ids_sql).await?,
            database_bytes: database_bytes(db).await?,
            archived_through: a.archived_through,
            seconds: started.elapsed().as_secs_f64(),
        };
        bar.suspend(|| {
            eprintln!(
                "day {:>2} {}: {:>9} events and {:>9} retired ids, {:>7.1} MB in the database; lake through seq {}; \
                 deleted {} ({:.1} s)",
                d + 1,
                day,
                day_report.rows_in_database,
                day_report.retired_ids,
                day_report.database_bytes as f64 / 1e6,
                day_report.archived_through,
                day_report.deleted,
                day_report.seconds
            )
        });
        out.push(day_report);
    }
    bar.finish_and_clear();
    let manifest = Manifest::parse(&store.get(MANIFEST_KEY).await?.context("the lake has no manifest")?)?;
    let mut lake_per_day: BTreeMap<NaiveDate, u64> = BTreeMap::new();
    for f in manifest.files() {
        *lake_per_day.entry(f.date).or_insert(0) += f.rows;
    }
    let max_rows = out.iter().map(|d| d.rows_in_database).max().unwrap_or(0);
    let max_retired = out.iter().map(|d| d.retired_ids).max().unwrap_or(0);
    let max_bytes = out.iter().map(|d| d.database_bytes).max().unwrap_or(0);
    let bound = (i64::from(args.events_days) + 1) * args.day_events as i64;
    let ids_bound = (i64::from(args.dedup_days) + 1) * args.day_events as i64;
    // Day `dedup-days + 1` is the first to delete a day of events and expire
    // a day of ids, and the next day is the first to refill the space they
    // freed: from then on every day adds as much as it removes.
    let steady = args.dedup_days as usize + 1;
    let steady_bytes_growth = match (out.get(steady), out.last()) {
        (Some(first), Some(last)) if out.len() > steady + 1 && first.database_bytes > 0 => {
            Some(last.database_bytes as f64 / first.database_bytes as f64)
        }
        _ => None,
    };
    let bytes_bounded = steady_bytes_growth.is_none_or(|g| g <= STEADY_BYTES_GROWTH);
    let report = SimulationReport {
        database,
        events_days: args.events_days,
        sent,
        max_rows_in_database: max_rows,
        max_retired_ids: max_retired,
        max_database_bytes: max_bytes,
        steady_bytes_growth,
        bounded: max_rows <= bound && max_retired <= ids_bound && bytes_bounded,
        archive_complete: manifest.archived_through == sent as i64 && manifest.rows() == sent,
        days_equal: lake_per_day == sent_per_day,
        ok: false,
        days: out,
    };
    let ok = report.bounded && report.archive_complete && report.days_equal;
    eprintln!(
        "{} events over {days} days: at most {max_rows} events (bound {bound}) and {max_retired} retired ids \
         (bound {ids_bound}), {:.1} MB ({}), in the database: {}; \
         the lake holds {} events ({}); every day's count in the lake equals the events sent: {}",
        sent,
        max_bytes as f64 / 1e6,
        match steady_bytes_growth {
            Some(g) => format!("{g:.3}x from day {} to the last, bound {STEADY_BYTES_GROWTH}x", steady + 1),
            None => format!("growth not judged: fewer than {} days", steady + 2),
        },
        if report.bounded { "bounded" } else { "NOT bounded" },
        manifest.rows(),
        if report.archive_complete { "complete" } else { "INCOMPLETE" },
        report.days_equal
    );
    Ok(SimulationReport { ok, ..report })
}

async fn under_load(
    args: &RetentionArgs,
    mut settings: Settings,
    db: &DatabaseConnection,
    database: &'static str,
    dir: &std::path::Path,
) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(args.rate > 0 && args.batch_size > 0, "--rate and --batch-size must be > 0");
    settings.lake.block_events = args.day_events;
    let day = Utc::now().date_naive() - TimeDelta::days(40);
    if database == "postgres" {
        crate::retention::partitions::make(db, "events", day).await?;
    }
    eprintln!("writing a day of {} events received 40 days ago ({day}) …", args.day_events);
    let bar = indicatif::ProgressBar::new(args.day_events);
    let received = day.and_hms_opt(23, 0, 0).context("time")?.and_utc();
    fill_day(db, day, args.day_events, args.seed, received, &bar).await?;
    bar.finish_and_clear();
    actors::store::write_checkpoint(db, actors::store::RUNTIME_CHECKPOINT, args.day_events as i64).await?;
    let store = LakeStore::from_settings(&settings).await?;
    let a = crate::lake::archive::archive_with(db, &store, &settings, false).await?;
    anyhow::ensure!(a.archived_through == args.day_events as i64, "the day was not archived whole: {a:?}");

    let every = args.steady_s.to_string();
    let lake = dir.join("lake").display().to_string();
    let block = args.day_events.to_string();
    let batch_rows = settings.retention.batch_rows.to_string();
    let env = [
        ("CARTPULSE_LAKE__STORE", lake.as_str()),
        ("CARTPULSE_LAKE__BLOCK_EVENTS", block.as_str()),
        ("CARTPULSE_LAKE__ARCHIVE_EVERY_S", every.as_str()),
        ("CARTPULSE_RETENTION__BATCH_ROWS", batch_rows.as_str()),
        ("CARTPULSE_REDIS__PARTITIONS", "1"),
    ];
    eprintln!(
        "serving over it; live load of {} events/s; the scheduled archive runs after {} s …",
        args.rate, args.steady_s
    );
    let server = Server::start_with(settings.database_url.expose_secret(), None, &[], &env).await?;
    let load = super::retention_load::Load::start(&server, args.rate, args.batch_size);
    let began = Instant::now();
    let metric = |text: &str, name: &str| crate::telemetry::scrape::sum(text, name).unwrap_or(0.0);
    let (mut archived_at, mut retained_at, mut deleted) = (None, None, 0.0);
    while retained_at.is_none() {
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(args.steady_s + 600),
            "retention did not finish within 10 minutes of the scheduled archive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = server.metrics().await?;
        if archived_at.is_none() && metric(&text, "cartpulse_lake_archive_runs_total") > 0.0 {
            archived_at = Some(began.elapsed());
        }
        if metric(&text, "cartpulse_retention_runs_total") > 0.0 {
            retained_at = Some(began.elapsed());
            deleted = metric(&text, "cartpulse_retention_deleted_events_total");
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = load.stop().await;
    server.stop().await;
    let (archived_at, retained_at) = (archived_at.unwrap_or_default(), retained_at.unwrap_or_default());
    let warm = Duration::from_secs(3);
    let steady: Vec<f64> =
        samples.ok.iter().filter(|(t, _)| *t >= warm && *t < archived_at).map(|(_, ms)| *ms).collect();
    let during: Vec<f64> = samples
        .ok
        .iter()
        .filter(|(t, ms)| *t + Duration::from_secs_f64(ms / 1e3) >= archived_at && *t <= retained_at)
        .map(|(_, ms)| *ms)
        .collect();
    let q = |v: &[f64], p: f64| super::retention_load::quantile(v, p);
    let (s99, d99) = (q(&steady, 0.99), q(&during, 0.99));
    let ratio = if s99 > 0.0 { d99 / s99 } else { f64::INFINITY };
    let report = LoadReport {
        database,
        day_events: args.day_events,
        deleted_events: deleted as u64,
        delete_s: (retained_at.saturating_sub(archived_at)).as_secs_f64(),
        steady_requests: steady.len() as u64,
        steady_p50_ms: q(&steady, 0.5),
        steady_p99_ms: s99,
        during_requests: during.len() as u64,
        during_p50_ms: q(&during, 0.5),
        during_p99_ms: d99,
        during_max_ms: q(&during, 1.0),
        p99_ratio: ratio,
        floor_p99_ratio: FLOOR_P99_RATIO,
        failed_requests: samples.failed,
        ok: ratio <= FLOOR_P99_RATIO && deleted as u64 == args.day_events && samples.failed == 0,
    };
    eprintln!(
        "deleted {} of {} events in {:.2} s under {} events/s; ack p99 {:.2} ms steady ({} requests), {:.2} ms while \
         deleting ({} requests, max {:.2}): {:.2}× (floor {FLOOR_P99_RATIO}×); {} failed requests",
        report.deleted_events,
        args.day_events,
        report.delete_s,
        args.rate,
        s99,
        report.steady_requests,
        d99,
        report.during_requests,
        report.during_max_ms,
        ratio,
        report.failed_requests
    );
    Ok(report)
}
