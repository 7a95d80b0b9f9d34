//! The command-line flags that name a lake, shared by `archive` and the
//! jobs that read the lake back (`replay`, `segment`, `train --from-lake`),
//! and the `--from-lake` window of `replay` and `segment`.

use super::LakeStore;
use crate::config::Settings;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct LakeArgs {
    /// The lake: a directory or s3://bucket/prefix [default: lake.store, ./lake]
    #[arg(long)]
    pub lake: Option<String>,
    /// S3-compatible endpoint of an s3:// lake [default: lake.endpoint]
    #[arg(long)]
    pub lake_endpoint: Option<String>,
}

impl LakeArgs {
    /// Puts the flags given over `settings.lake`.
    pub fn apply(&self, settings: &mut Settings) {
        if let Some(lake) = &self.lake {
            settings.lake.store = lake.clone();
        }
        if let Some(endpoint) = &self.lake_endpoint {
            settings.lake.endpoint = Some(endpoint.clone());
        }
    }

    /// The lake these flags and `settings` name.
    pub async fn store(&self, settings: &Settings) -> anyhow::Result<LakeStore> {
        let mut settings = settings.clone();
        self.apply(&mut settings);
        Ok(LakeStore::from_settings(&settings).await?)
    }
}

/// `--from-lake [--since --until]` and the lake's flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FromLakeArgs {
    /// Read the events archived in the data lake (lake.store, or --lake), in log order.
    #[arg(long)]
    pub from_lake: bool,
    /// With --from-lake: only events at or after this event time (RFC 3339).
    #[arg(long, requires = "from_lake")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// With --from-lake: only events before this event time (RFC 3339).
    #[arg(long, requires = "from_lake")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    pub lake: LakeArgs,
}

impl FromLakeArgs {
    /// The lake and the window, when `--from-lake` was given.
    pub fn chosen(self) -> anyhow::Result<Option<(LakeArgs, super::read::Window)>> {
        let window = super::read::Window::new(self.since, self.until)?;
        Ok(self.from_lake.then_some((self.lake, window)))
    }
}
