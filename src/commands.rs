//! Commands that drive the service from outside: replay, benchmarks, demo.

use crate::cli::{BenchIngestArgs, GlobalArgs, ReplayArgs, ReplayFormatArg};
use crate::config::Settings;
use secrecy::SecretString;

/// `cartpulse replay`: prints the summary as JSON on the last stdout line.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let opts = crate::replay::ReplayOptions {
        format: match args.format {
            ReplayFormatArg::Shoppers => crate::replay::ReplayFormat::Shoppers,
            ReplayFormatArg::Retail => crate::replay::ReplayFormat::Retail,
        },
        file: args.file,
        synthetic: args.synthetic,
        target: args.target,
        api_key: SecretString::from(args.api_key),
        rate: args.rate,
        speedup: args.speedup,
        batch_size: args.batch_size,
        concurrency: args.concurrency,
        seed: args.seed,
        progress: !args.quiet,
    };
    println!("{}", serde_json::to_string(&crate::replay::run(opts).await?)?);
    Ok(())
}

/// `cartpulse bench ingest`: the bench prints its own JSON line.
pub async fn bench_ingest(global: GlobalArgs, args: BenchIngestArgs) -> anyhow::Result<()> {
    crate::bench::ingest::run(crate::bench::ingest::IngestBenchOptions {
        database_url: global.database_url.map(SecretString::from),
        events: args.events,
        producers: args.producers,
        batch_size: args.batch_size,
        target: args.target,
        api_key: args.api_key.map(SecretString::from),
        scale: args.scale,
        redis_url: global.redis_url,
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// `cartpulse demo`: serves, creates keys, replays the UCI file (or
/// synthetic traffic) into itself on a separate thread, keeps serving.
/// The demo scores sessions from the first event: without an active model
/// it trains a small one (2-fold CV, one network instead of the ensemble) on
/// the file it is about to replay, or on synthetic UCI-shaped rows, with the
/// report images, then publishes and promotes it. About half a minute on 2 cores.
async fn ensure_demo_model(
    settings: &Settings,
    db: &sea_orm::DatabaseConnection,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let registry = crate::models::ModelRegistry::from_settings(db.clone(), settings).await?;
    if registry.list().await?.iter().any(|m| m.status == "active") {
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let data = if file.exists() {
        file.to_owned()
    } else {
        let p = work.path().join("synthetic-shoppers.csv");
        std::fs::write(&p, crate::train::synthetic_shoppers_csv(4_000, 42))?;
        p
    };
    let out = work.path().join("purchase-intent");
    eprintln!("demo: no model is active; training a small one on {} …", data.display());
    let opts = crate::train::TrainOptions {
        data,
        folds: 2,
        seed: 42,
        out: out.clone(),
        report: Some(out.join("report")),
        config: crate::train::ModelConfig { members: 1, ..Default::default() },
        progress: true,
    };
    let report = tokio::task::spawn_blocking(move || crate::train::run(opts)).await??;
    let published = registry.publish(&out).await?;
    registry.promote(&published.version, None).await?;
    eprintln!(
        "demo: model {} active (2-fold CV accuracy {:.3}, ROC AUC {:.3}; `cartpulse train` builds the full ensemble)",
        published.version, report.accuracy, report.auc
    );
    Ok(())
}

pub async fn demo(settings: Settings, file: std::path::PathBuf, synthetic: u64) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let db = crate::db::connect(&settings).await?;
    crate::db::migrate(&db).await?;
    let ingest = crate::keys::create(&db, "demo-ingest", crate::keys::Scope::Ingest).await?;
    let read = crate::keys::create(&db, "demo-read", crate::keys::Scope::Read).await?;
    // A console admin with a fresh random password, printed below.
    let console_password = SecretString::from(hex::encode(rand::random::<[u8; 9]>()));
    crate::console::users::ensure_admin(&db, "admin", &console_password).await?;
    if settings.inference.model_dir.is_none() {
        ensure_demo_model(&settings, &db, &file).await?;
    }
    drop(db);
    let app = crate::startup::Application::build(settings).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let use_file = file.exists();
    let read_key = read.key.expose_secret().to_owned();
    eprintln!();
    eprintln!("cartpulse demo is serving on {base}");
    eprintln!("  read key:  {read_key}");
    eprintln!(
        "  try:       curl -H 'Authorization: Bearer {read_key}' {base}/v1/sessions/{}",
        if use_file { "osi-s1" } else { "syn-s1" }
    );
    eprintln!(
        "             curl -H 'Authorization: Bearer {read_key}' {base}/v1/customers/{}",
        if use_file { "osi-c1" } else { "syn-c1" }
    );
    eprintln!("             curl {base}/metrics");
    eprintln!("  console:   {base}/  (user admin, password {})", console_password.expose_secret());
    if use_file {
        eprintln!("  feeding:   {} (every row becomes a session)", file.display());
    } else {
        eprintln!("  feeding:   {synthetic} synthetic sessions ({} not found)", file.display());
    }
    eprintln!("  stop:      Ctrl-C");
    eprintln!();
    println!("{read_key}");
    let target: url::Url = base.parse()?;
    let opts = crate::replay::ReplayOptions {
        format: crate::replay::ReplayFormat::Shoppers,
        file: use_file.then_some(file),
        synthetic: (!use_file).then_some(synthetic),
        target,
        api_key: SecretString::from(ingest.key.expose_secret().to_owned()),
        rate: None,
        speedup: None,
        batch_size: 500,
        concurrency: 4,
        seed: 42,
        progress: true,
    };
    // The feeder gets its own runtime so it never competes with the server's
    // arbiters for a thread.
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("demo feeder could not start: {e}");
                return;
            }
        };
        match rt.block_on(crate::replay::run(opts)) {
            Ok(s) => eprintln!(
                "demo feed done: {} sessions, {} events accepted, {} duplicates ({:.0} events/s); still serving, Ctrl-C to stop",
                s.sessions, s.accepted, s.duplicates, s.events_per_s
            ),
            Err(e) => eprintln!("demo feed failed: {e:#}"),
        }
    });
    app.run_until_stopped().await
}
