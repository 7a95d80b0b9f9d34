//! Commands that drive the service from outside: replay and benchmarks.

use crate::cli::{BenchIngestArgs, GlobalArgs, ReplayArgs, ReplayFormatArg};
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
