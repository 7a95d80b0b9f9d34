//! `cartpulse segments list | activate VERSION`: the segmentation versions
//! from the command line, over the database of the global flags. Activation
//! is stored in the database; running servers pick it up within their
//! watcher's poll interval ([`super::assign::WATCH_EVERY`]).

use crate::config::Settings;

/// What `cartpulse segments` can do.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SegmentsCommand {
    /// Every version: k, inertia, silhouette, segment names and sizes (live sizes for the active one).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make VERSION the active segmentation: every session actor then assigns its customer to its nearest segment.
    Activate { version: i32 },
}

/// Runs one `segments` command; results go to stdout, errors are returned.
pub async fn run(settings: &Settings, command: SegmentsCommand) -> anyhow::Result<()> {
    let db = crate::db::connect(settings).await?;
    crate::db::migrate(&db).await?;
    match command {
        SegmentsCommand::List { json } => {
            let rows = super::versions::list(&db).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print!("{}", super::versions::table(&rows));
            }
        }
        SegmentsCommand::Activate { version } => {
            super::assign::activate(&db, version).await?;
            eprintln!(
                "segmentation v{version} is active; running servers switch within {} s",
                super::assign::WATCH_EVERY.as_secs()
            );
            println!("{}", serde_json::json!({ "active": version }));
        }
    }
    Ok(())
}
