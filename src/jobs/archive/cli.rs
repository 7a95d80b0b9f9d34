//! `cartpulse archive`: one archive run over the database of the global
//! flags into the lake of `lake.store` (or `--lake`); the last stdout line
//! is the run's report as JSON. Safe to run on a schedule and to re-run
//! after a failure: it resumes after the last archived block.

#[derive(clap::Args, Debug)]
pub struct ArchiveArgs {
    #[command(flatten)]
    pub lake: crate::lake::cli::LakeArgs,
    /// Redis Streams partitions of the deployment, whose checkpoints bound what is archived
    /// [default: redis.partitions]
    #[arg(long)]
    pub partitions: Option<usize>,
    /// No progress bar on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Archive only: leave every event in the database (retention otherwise
    /// deletes archived, checkpointed events received more than
    /// `retention.events_days` ago).
    #[arg(long)]
    pub no_retention: bool,
}

pub fn archive(global: &crate::cli::GlobalArgs, args: ArchiveArgs) -> anyhow::Result<()> {
    let mut settings = global.settings(None)?;
    crate::telemetry::init_logging("warn", settings.log.format == crate::config::LogFormat::Json);
    args.lake.apply(&mut settings);
    if let Some(p) = args.partitions {
        anyhow::ensure!((1..=1024).contains(&p), "--partitions must be in 1..=1024, not {p}");
        settings.redis.partitions = p;
    }
    let report = super::run_and_retain(&settings, !args.quiet, !args.no_retention)?;
    eprintln!(
        "archived {} events in {} blocks ({} files, {} bytes of Parquet for {} bytes of log) in {:.1} s; \
         the lake {} holds every event up to seq {}; {} log positions wait for their block to fill",
        report.events,
        report.blocks,
        report.files,
        report.parquet_bytes,
        report.log_bytes,
        report.seconds,
        report.store,
        report.archived_through,
        report.waiting
    );
    if let Some(r) = &report.retention {
        match r.events_days {
            0 => eprintln!("retention is off (retention.events_days = 0): every event stays in the database"),
            days => eprintln!(
                "retention: deleted {} events received more than {days} days ago and archived \
                 ({} day partitions dropped); forgot {} ids of deleted events{}",
                r.deleted_events,
                r.dropped_partitions.len(),
                r.expired_ids,
                if r.kept.is_empty() { String::new() } else { format!("; kept back: {}", r.kept.join("; ")) }
            ),
        }
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
