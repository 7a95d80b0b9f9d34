//! `cartpulse demo`: one process that shows the whole product on a laptop.
//! It creates an ingest key, a read key and a console user, trains and
//! promotes a small model when none is active, serves, and feeds itself
//! ([`feed`]): the shoppers and retail data sets as history, a segmentation
//! fitted on the customers that makes, then live traffic shaped like the
//! data until Ctrl-C.

pub mod cli;
pub mod feed;

use crate::config::Settings;
use secrecy::SecretString;
use std::path::PathBuf;

/// What `cartpulse demo` is told.
pub struct DemoOptions {
    /// UCI Online Shoppers CSV (synthetic sessions when absent).
    pub file: PathBuf,
    pub synthetic: u64,
    /// UCI Online Retail CSV (skipped when absent).
    pub retail: Option<PathBuf>,
    /// Seconds the retail year is replayed in.
    pub retail_seconds: f64,
    /// Live events per second after the history (0: none).
    pub rate: u32,
}

/// Without an active model the demo could not score sessions from the first
/// event: it trains a small one (2-fold CV, one network instead of the
/// ensemble) on the shoppers file it is about to replay, or on synthetic
/// UCI-shaped rows, with the report images, then publishes and promotes it.
/// About half a minute on 2 cores.
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
        std::fs::write(&p, crate::jobs::train::synthetic_shoppers_csv(4_000, 42))?;
        p
    };
    let out = work.path().join("purchase-intent");
    eprintln!("demo: no model is active; training a small one on {} …", data.display());
    let opts = crate::jobs::train::TrainOptions {
        data: data.into(),
        folds: 2,
        seed: 42,
        out: out.clone(),
        report: Some(out.join("report")),
        config: crate::jobs::train::ModelConfig { members: 1, ..Default::default() },
        progress: true,
    };
    let report = tokio::task::spawn_blocking(move || crate::jobs::train::run(opts)).await??;
    let published = registry.publish(&out).await?;
    registry.promote(&published.version, None).await?;
    eprintln!(
        "demo: model {} active (2-fold CV accuracy {:.3}, ROC AUC {:.3}; `cartpulse train` builds the full ensemble)",
        published.version, report.accuracy, report.auc
    );
    Ok(())
}

/// `cartpulse demo` (the module doc says what it does); returns when the
/// server has stopped.
pub async fn run(settings: Settings, opts: DemoOptions) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let DemoOptions { file, synthetic, retail, retail_seconds, rate } = opts;
    let db = crate::db::connect(&settings).await?;
    crate::db::migrate(&db).await?;
    let ingest = crate::keys::create(&db, "demo-ingest", crate::keys::Scope::Ingest).await?;
    let read = crate::keys::create(&db, "demo-read", crate::keys::Scope::Read).await?;
    // A console admin with a fresh random password, printed below.
    let console_password = SecretString::from(hex::encode(rand::random::<[u8; 9]>()));
    crate::serving::console::users::ensure_admin(&db, "admin", &console_password).await?;
    if settings.inference.model_dir.is_none() {
        ensure_demo_model(&settings, &db, &file).await?;
    }
    drop(db);
    let settings_for_feed = settings.clone();
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
    if !use_file {
        eprintln!("  ({} not found: synthetic sessions instead)", file.display());
    }
    eprintln!("  stop:      Ctrl-C");
    eprintln!();
    println!("{read_key}");
    let feed = feed::FeedOptions {
        settings: settings_for_feed,
        target: base.parse()?,
        ingest_key: SecretString::from(ingest.key.expose_secret().to_owned()),
        shoppers: use_file.then_some(file),
        synthetic,
        retail: retail.filter(|r| r.exists()),
        retail_seconds,
        rate,
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
        if let Err(e) = rt.block_on(feed::run(feed)) {
            eprintln!("demo feed stopped: {e:#}");
        }
    });
    app.run_until_stopped().await
}
