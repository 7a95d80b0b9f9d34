//! The lake's object store: a local directory (default, `./lake`) or S3 (or
//! an S3-compatible server) when `lake.store` is `s3://bucket/prefix`.
//!
//! Unlike the model store, whose objects are written once per version, the
//! lake rewrites objects on purpose: a data file of an interrupted archive
//! run is written again whole (with the same rows), and the manifest is
//! replaced after every block. A put therefore replaces the object
//! atomically: readers see the old object or the new one, never a part (a
//! temporary file renamed into place locally; a single PUT on S3).
//!
//! Keys are `/`-separated paths relative to the store's root
//! (`events/date=2026-12-04/part-1-1000.parquet`). The S3 client is the model
//! store's ([`crate::models::store::S3Store::connect`]): the usual AWS chain,
//! rustls with ring, path-style addressing when `lake.endpoint` is set.

use crate::config::Settings;
use crate::models::store::sdk_error_text;
use aws_sdk_s3::primitives::ByteStream;
use std::path::{Path, PathBuf};

/// Everything the lake's store can fail with; each names the place.
#[derive(Debug, thiserror::Error)]
pub enum LakeStoreError {
    #[error("lake store {0}")]
    Location(String),
    #[error("lake: {action} {location} failed: {cause}")]
    Backend { action: &'static str, location: String, cause: String },
}

/// A local directory or an S3 bucket + prefix.
#[derive(Clone, Debug)]
pub enum LakeStore {
    Local { root: PathBuf },
    S3(S3Lake),
}

#[derive(Clone)]
pub struct S3Lake {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    prefix: String,
}

impl std::fmt::Debug for S3Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Lake").field("bucket", &self.bucket).field("prefix", &self.prefix).finish()
    }
}

/// One object found by [`LakeStore::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub bytes: u64,
}

impl LakeStore {
    /// The store `lake.store` names: `s3://bucket[/prefix]` or a directory.
    pub async fn from_settings(settings: &Settings) -> Result<LakeStore, LakeStoreError> {
        Self::open(&settings.lake.store, settings.lake.endpoint.as_deref()).await
    }

    /// The store at `location` (`s3://bucket[/prefix]` or a directory).
    pub async fn open(location: &str, endpoint: Option<&str>) -> Result<LakeStore, LakeStoreError> {
        let loc = location.trim();
        if let Some(rest) = loc.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(LakeStoreError::Location(format!("{loc:?}: no bucket (expected s3://bucket/prefix)")));
            }
            let s3 = crate::models::store::S3Store::connect(bucket, prefix, endpoint)
                .await
                .map_err(|e| LakeStoreError::Location(format!("{loc:?}: {e}")))?;
            Ok(LakeStore::S3(S3Lake {
                client: s3.client().clone(),
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            }))
        } else if loc.contains("://") {
            Err(LakeStoreError::Location(format!("{loc:?}: expected a directory or s3://bucket/prefix")))
        } else if loc.is_empty() {
            Err(LakeStoreError::Location("is empty: set lake.store to a directory or s3://bucket/prefix".into()))
        } else {
            Ok(LakeStore::Local { root: PathBuf::from(loc) })
        }
    }

    /// The store itself: its directory or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match self {
            LakeStore::Local { root } => root.display().to_string(),
            LakeStore::S3(s) => format!("s3://{}/{}", s.bucket, s.prefix).trim_end_matches('/').to_owned(),
        }
    }

    /// Where the object `key` is, for messages and reports.
    pub fn location(&self, key: &str) -> String {
        match self {
            LakeStore::Local { root } => root.join(key).display().to_string(),
            LakeStore::S3(s) => format!("s3://{}/{}", s.bucket, s.key(key)),
        }
    }

    /// The object's bytes, `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, LakeStoreError> {
        check_key(key)?;
        match self {
            LakeStore::Local { root } => {
                let path = root.join(key);
                match tokio::fs::read(&path).await {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(backend("reading", &path.display().to_string(), e)),
                }
            }
            LakeStore::S3(s) => s.get(key).await,
        }
    }

    /// Writes `bytes` as `key`, replacing what was there atomically.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), LakeStoreError> {
        check_key(key)?;
        match self {
            LakeStore::Local { root } => put_local(&root.join(key), &bytes).await,
            LakeStore::S3(s) => s.put(key, bytes).await,
        }
    }

    /// Deletes `key`; deleting what is not there is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), LakeStoreError> {
        check_key(key)?;
        match self {
            LakeStore::Local { root } => {
                let path = root.join(key);
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(backend("deleting", &path.display().to_string(), e)),
                }
            }
            LakeStore::S3(s) => s.delete(key).await,
        }
    }

    /// Every object under the folder `dir` (recursively), keys relative to
    /// the store's root, sorted; temporary files of interrupted local writes
    /// (names starting with `.`) are left out.
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>, LakeStoreError> {
        let dir = dir.trim_matches('/');
        check_key(dir)?;
        let mut out = match self {
            LakeStore::Local { root } => {
                let root = root.clone();
                let dir = dir.to_owned();
                tokio::task::spawn_blocking(move || list_local(&root, &dir)).await.map_err(|e| {
                    LakeStoreError::Backend { action: "listing", location: "the lake".into(), cause: e.to_string() }
                })??
            }
            LakeStore::S3(s) => s.list(dir).await?,
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// Keys are relative, `/`-separated, without `..` or empty parts.
fn check_key(key: &str) -> Result<(), LakeStoreError> {
    let ok = !key.starts_with('/') && key.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    if ok {
        Ok(())
    } else {
        Err(LakeStoreError::Location(format!("key {key:?} is not a relative path")))
    }
}

fn backend(action: &'static str, location: &str, e: impl std::fmt::Display) -> LakeStoreError {
    LakeStoreError::Backend { action, location: location.to_owned(), cause: e.to_string() }
}

/// Written whole under a temporary name beside the target, synced, then
/// renamed over it (and the directory synced), so a crash leaves the old
/// object or the new one.
async fn put_local(path: &Path, bytes: &[u8]) -> Result<(), LakeStoreError> {
    let location = path.display().to_string();
    let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
    tokio::fs::create_dir_all(&dir).await.map_err(|e| backend("creating the directory of", &location, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(rand::random::<[u8; 6]>())));
    let result = async {
        tokio::fs::write(&tmp, bytes).await.map_err(|e| backend("writing", &location, e))?;
        let f = tokio::fs::File::open(&tmp).await.map_err(|e| backend("opening", &location, e))?;
        f.sync_all().await.map_err(|e| backend("syncing", &location, e))?;
        tokio::fs::rename(&tmp, path).await.map_err(|e| backend("renaming into place", &location, e))?;
        if let Ok(d) = tokio::fs::File::open(&dir).await {
            let _ = d.sync_all().await;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

fn list_local(root: &Path, dir: &str) -> Result<Vec<Listed>, LakeStoreError> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir)];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(backend("listing", &d.display().to_string(), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| backend("listing", &d.display().to_string(), e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| backend("reading", &path.display().to_string(), e))?;
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                let key = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                out.push(Listed { key, bytes: meta.len() });
            }
        }
    }
    Ok(out)
}

impl S3Lake {
    /// The client, for tools and tests that manage buckets.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn fail(&self, action: &'static str, key: &str, cause: String) -> LakeStoreError {
        LakeStoreError::Backend { action, location: format!("s3://{}/{}", self.bucket, self.key(key)), cause }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, LakeStoreError> {
        use aws_sdk_s3::operation::get_object::GetObjectError;
        match self.client.get_object().bucket(&self.bucket).key(self.key(key)).send().await {
            Ok(out) => {
                let body = out.body.collect().await.map_err(|e| self.fail("reading", key, e.to_string()))?;
                Ok(Some(body.into_bytes().to_vec()))
            }
            Err(e) if matches!(e.as_service_error(), Some(GetObjectError::NoSuchKey(_))) => Ok(None),
            Err(e) => Err(self.fail("reading", key, sdk_error_text(&e))),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), LakeStoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.fail("writing", key, sdk_error_text(&e)))
    }

    async fn delete(&self, key: &str) -> Result<(), LakeStoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.fail("deleting", key, sdk_error_text(&e)))
    }

    async fn list(&self, dir: &str) -> Result<Vec<Listed>, LakeStoreError> {
        let prefix = format!("{}/", self.key(dir));
        let strip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_objects_v2().bucket(&self.bucket).prefix(&prefix);
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = req.send().await.map_err(|e| self.fail("listing", dir, sdk_error_text(&e)))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(Listed { key: k[strip.min(k.len())..].to_owned(), bytes: o.size().unwrap_or(0) as u64 });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_put_replaces_lists_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = LakeStore::open(&dir.path().display().to_string(), None).await.unwrap();
        assert_eq!(store.get("events/a.parquet").await.unwrap(), None);
        store.put("events/date=2026-01-01/a.parquet", b"one".to_vec()).await.unwrap();
        store.put("events/date=2026-01-01/a.parquet", b"two!".to_vec()).await.unwrap();
        store.put("events/_manifest.json", b"{}".to_vec()).await.unwrap();
        assert_eq!(store.get("events/date=2026-01-01/a.parquet").await.unwrap().as_deref(), Some(&b"two!"[..]));
        let listed = store.list("events").await.unwrap();
        assert_eq!(
            listed,
            vec![
                Listed { key: "events/_manifest.json".into(), bytes: 2 },
                Listed { key: "events/date=2026-01-01/a.parquet".into(), bytes: 4 },
            ]
        );
        store.delete("events/date=2026-01-01/a.parquet").await.unwrap();
        store.delete("events/date=2026-01-01/a.parquet").await.unwrap();
        assert_eq!(store.list("events").await.unwrap().len(), 1);
        assert!(store.get("../x").await.is_err(), "keys cannot leave the root");
        assert!(LakeStore::open("s3://", None).await.is_err());
        assert!(LakeStore::open("gs://bucket", None).await.is_err());
    }
}
