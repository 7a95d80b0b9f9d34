//! Commands that drive the service from outside: replay, benchmarks, demo.

use crate::cli::{BenchIngestArgs, GlobalArgs, ReplayArgs};
use crate::config::Settings;

pub async fn replay(_args: ReplayArgs) -> anyhow::Result<()> {
    anyhow::bail!("replay: not wired yet")
}

pub async fn bench_ingest(_global: GlobalArgs, _args: BenchIngestArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench: not wired yet")
}

pub async fn demo(_settings: Settings, _file: std::path::PathBuf, _synthetic: u64) -> anyhow::Result<()> {
    anyhow::bail!("demo: not wired yet")
}
