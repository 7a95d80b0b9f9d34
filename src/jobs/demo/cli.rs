//! `cartpulse demo`: serve, and feed the service its own traffic.

use crate::cli::GlobalArgs;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// UCI Online Shoppers CSV to replay (synthetic traffic if absent).
    #[arg(long, default_value = "../shared/data/online_shoppers_intention.csv")]
    pub file: PathBuf,
    /// Synthetic sessions to send when the file is absent.
    #[arg(long, default_value_t = 5_000)]
    pub synthetic: u64,
    /// UCI Online Retail CSV to replay as orders (skipped if absent).
    #[arg(long, default_value = "../shared/data/online_retail.csv")]
    pub retail: PathBuf,
    /// Seconds the retail file's year of orders is replayed in.
    #[arg(long, default_value_t = 60.0, value_parser = positive_seconds)]
    pub retail_seconds: f64,
    /// Live events per second once the history is in (0: stop feeding).
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
}

fn positive_seconds(s: &str) -> anyhow::Result<f64> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => anyhow::bail!("must be a positive number of seconds, got {s:?}"),
    }
}

pub fn demo(global: &GlobalArgs, args: DemoArgs) -> anyhow::Result<()> {
    let settings = global.settings(Some(args.listen))?;
    crate::telemetry::init_logging(&settings.log.level, settings.log.format == crate::config::LogFormat::Json);
    let opts = super::DemoOptions {
        file: args.file,
        synthetic: args.synthetic,
        retail: Some(args.retail),
        retail_seconds: args.retail_seconds,
        rate: args.rate,
    };
    actix_web::rt::System::new().block_on(super::run(settings, opts))
}
