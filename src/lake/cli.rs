//! The command-line flags that name a lake, shared by `archive` and the
//! jobs that read the lake back (`replay`, `segment`, `train --from-lake`).

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
