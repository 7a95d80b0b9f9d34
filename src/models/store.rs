//! The model store: where the objects of published model versions live. A
//! local directory by default; S3 (or an S3-compatible server) when the
//! `model_store` setting is `s3://bucket/prefix`.
//!
//! Objects are immutable and keyed by version: `<root>/<version>/manifest.json`
//! and `<root>/<version>/model.safetensors`. Putting an object that already
//! exists with the same bytes is a no-op (a retried publish); with different
//! bytes it is [`StoreError::Conflict`]. Reading a missing object is
//! [`StoreError::Missing`]; every error names the version and the object.
//!
//! S3 credentials and region come from the usual AWS chain (environment,
//! profile, web identity, ECS, instance metadata); the region defaults to
//! `us-east-1` when the chain has none. `model_store_endpoint` (env
//! `CARTPULSE_MODEL_STORE_ENDPOINT`) points the client at an S3-compatible
//! server, with path-style addressing. TLS is rustls with ring.

use crate::config::Settings;
use aws_sdk_s3::primitives::ByteStream;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("model store {0}")]
    Location(String),
    #[error("invalid model version {0:?}: 1-128 characters of A-Z a-z 0-9 . _ -, not starting with a dot")]
    InvalidVersion(String),
    #[error("model {version}: object {object} is missing from the model store ({location})")]
    Missing { version: String, object: String, location: String },
    #[error(
        "model {version}: object {object} already exists in the model store ({location}) with different bytes; \
         published objects are immutable"
    )]
    Conflict { version: String, object: String, location: String },
    #[error("model {version}: object {object} is corrupt: sha256 {actual}, the registry expects {expected}")]
    Corrupt { version: String, object: String, expected: String, actual: String },
    #[error("model {version}: {action} object {object} at {location} failed: {cause}")]
    Backend { version: String, object: String, action: &'static str, location: String, cause: String },
    /// The health check could not reach the store.
    #[error("model store {location} is unreachable: {cause}")]
    Unreachable { location: String, cause: String },
}

/// A local directory or an S3 bucket + prefix.
#[derive(Clone, Debug)]
pub enum ModelStore {
    Local(LocalStore),
    S3(S3Store),
}

#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    prefix: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("bucket", &self.bucket).field("prefix", &self.prefix).finish()
    }
}

/// Checks a version before it becomes part of a path or key.
pub fn validate_version(version: &str) -> Result<(), StoreError> {
    let ok = !version.is_empty()
        && version.len() <= 128
        && !version.starts_with('.')
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidVersion(version.to_owned()))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ModelStore {
    /// Whether the store can be reached, for the System page: a local
    /// directory exists (or is still to be created by the first publish);
    /// S3 answers a HEAD request. Any answer from S3, even 403 or 404 (a task
    /// role may read objects without listing the bucket), counts as reachable.
    pub async fn check(&self) -> Result<&'static str, StoreError> {
        let unreachable = |cause: String| StoreError::Unreachable { location: self.describe(), cause };
        match self {
            ModelStore::Local(l) => match tokio::fs::metadata(&l.root).await {
                Ok(m) if m.is_dir() => Ok("ok"),
                Ok(_) => Err(unreachable("not a directory".into())),
                Err(_) => Ok("empty (created by the first publish)"),
            },
            ModelStore::S3(s) => {
                let key = if s.prefix.is_empty() { ".health".to_owned() } else { format!("{}/.health", s.prefix) };
                let head = s.client.head_object().bucket(&s.bucket).key(key);
                match tokio::time::timeout(std::time::Duration::from_secs(3), head.send()).await {
                    Err(_) => Err(unreachable("no answer within 3 s".into())),
                    Ok(Ok(_)) => Ok("ok"),
                    Ok(Err(aws_sdk_s3::error::SdkError::ServiceError(_))) => Ok("ok"),
                    Ok(Err(e)) => Err(unreachable(aws_sdk_s3::error::DisplayErrorContext(&e).to_string())),
                }
            }
        }
    }

    /// The store the settings name: `s3://bucket[/prefix]` or a directory.
    pub async fn from_settings(settings: &Settings) -> Result<ModelStore, StoreError> {
        let loc = settings.model_store.trim();
        if let Some(rest) = loc.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::Location(format!("{loc:?}: no bucket (expected s3://bucket/prefix)")));
            }
            let store = S3Store::connect(bucket, prefix, settings.model_store_endpoint.as_deref()).await?;
            Ok(ModelStore::S3(store))
        } else if loc.contains("://") {
            Err(StoreError::Location(format!("{loc:?}: expected a directory or s3://bucket/prefix")))
        } else if loc.is_empty() {
            Err(StoreError::Location("is empty: set model_store to a directory or s3://bucket/prefix".into()))
        } else {
            Ok(ModelStore::Local(LocalStore { root: PathBuf::from(loc) }))
        }
    }

    /// A local store at `root` (created on the first put).
    pub fn local(root: impl Into<PathBuf>) -> ModelStore {
        ModelStore::Local(LocalStore { root: root.into() })
    }

    /// The store itself: its directory or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match self {
            ModelStore::Local(l) => l.root.display().to_string(),
            ModelStore::S3(s) => format!("s3://{}/{}", s.bucket, s.prefix).trim_end_matches('/').to_owned(),
        }
    }

    /// Where a version's objects are: `<dir>/<version>` or `s3://bucket/prefix/<version>`.
    pub fn version_location(&self, version: &str) -> String {
        match self {
            ModelStore::Local(l) => l.root.join(version).display().to_string(),
            ModelStore::S3(s) => format!("s3://{}/{}", s.bucket, s.key(version, "")).trim_end_matches('/').to_owned(),
        }
    }

    /// Where one object is (for messages).
    pub fn object_location(&self, version: &str, object: &str) -> String {
        match self {
            ModelStore::Local(l) => l.path(version, object).display().to_string(),
            ModelStore::S3(s) => format!("s3://{}/{}", s.bucket, s.key(version, object)),
        }
    }

    /// Stores `bytes` as `object` of `version` unless the very same bytes are
    /// already there; different bytes are [`StoreError::Conflict`].
    pub async fn put(&self, version: &str, object: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        validate_version(version)?;
        match self {
            ModelStore::Local(l) => l.put(version, object, bytes).await,
            ModelStore::S3(s) => s.put(version, object, bytes).await,
        }
    }

    /// Reads `object` of `version`; [`StoreError::Missing`] when absent.
    pub async fn get(&self, version: &str, object: &str) -> Result<Vec<u8>, StoreError> {
        validate_version(version)?;
        match self {
            ModelStore::Local(l) => l.get(version, object).await,
            ModelStore::S3(s) => s.get(version, object).await,
        }
    }

    /// Reads `object` of `version` and checks its sha256 against `expected`.
    pub async fn get_verified(&self, version: &str, object: &str, expected: &str) -> Result<Vec<u8>, StoreError> {
        let bytes = self.get(version, object).await?;
        let actual = sha256_hex(&bytes);
        if actual != expected {
            return Err(StoreError::Corrupt {
                version: version.to_owned(),
                object: object.to_owned(),
                expected: expected.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }
}

impl LocalStore {
    fn path(&self, version: &str, object: &str) -> PathBuf {
        self.root.join(version).join(object)
    }

    async fn put(&self, version: &str, object: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(version, object);
        let fail = |action: &'static str, e: std::io::Error| StoreError::Backend {
            version: version.to_owned(),
            object: object.to_owned(),
            action,
            location: path.display().to_string(),
            cause: e.to_string(),
        };
        if let Some(existing) = read_if_exists(&path).await.map_err(|e| fail("reading", e))? {
            return same_or_conflict(&existing, &bytes, version, object, &path.display().to_string());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir).await.map_err(|e| fail("creating the directory of", e))?;
        // Written whole under a temporary name, then linked into place: a
        // reader never sees half an object, and a concurrent put of the same
        // object cannot overwrite the first one (hard_link fails if it exists).
        let tmp = dir.join(format!(".{object}.{}.tmp", hex::encode(rand::random::<[u8; 6]>())));
        let result = async {
            tokio::fs::write(&tmp, &bytes).await.map_err(|e| fail("writing", e))?;
            let f = tokio::fs::File::open(&tmp).await.map_err(|e| fail("opening", e))?;
            f.sync_all().await.map_err(|e| fail("syncing", e))?;
            match tokio::fs::hard_link(&tmp, &path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let existing = tokio::fs::read(&path).await.map_err(|e| fail("reading", e))?;
                    same_or_conflict(&existing, &bytes, version, object, &path.display().to_string())
                }
                Err(e) => Err(fail("linking", e)),
            }
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        result
    }

    async fn get(&self, version: &str, object: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(version, object);
        let location = path.display().to_string();
        match read_if_exists(&path).await {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(StoreError::Missing { version: version.to_owned(), object: object.to_owned(), location }),
            Err(e) => Err(StoreError::Backend {
                version: version.to_owned(),
                object: object.to_owned(),
                action: "reading",
                location,
                cause: e.to_string(),
            }),
        }
    }
}

async fn read_if_exists(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn same_or_conflict(
    existing: &[u8],
    new: &[u8],
    version: &str,
    object: &str,
    location: &str,
) -> Result<(), StoreError> {
    if existing == new {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            version: version.to_owned(),
            object: object.to_owned(),
            location: location.to_owned(),
        })
    }
}

impl S3Store {
    /// A client from the usual AWS chain; `endpoint` switches to an
    /// S3-compatible server with path-style addressing.
    pub async fn connect(bucket: &str, prefix: &str, endpoint: Option<&str>) -> Result<S3Store, StoreError> {
        use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
        // The loader's own region and credential chains use this client (a
        // chain built outside the loader would not, and this build has no
        // default client on purpose).
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if shared.region().is_none() {
            conf = conf.region(aws_sdk_s3::config::Region::new("us-east-1"));
        }
        if let Some(ep) = endpoint.map(str::trim).filter(|e| !e.is_empty()) {
            url::Url::parse(ep).map_err(|e| StoreError::Location(format!("endpoint {ep:?} is not a URL: {e}")))?;
            // S3-compatible servers rarely speak virtual-hosted buckets or the
            // newer flexible checksums; plain path-style requests work everywhere.
            conf = conf
                .endpoint_url(ep)
                .force_path_style(true)
                .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired);
        }
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    /// The client, for tools and tests that manage buckets.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    fn key(&self, version: &str, object: &str) -> String {
        if self.prefix.is_empty() {
            format!("{version}/{object}")
        } else {
            format!("{}/{version}/{object}", self.prefix)
        }
    }

    fn backend(&self, version: &str, object: &str, action: &'static str, cause: String) -> StoreError {
        StoreError::Backend {
            version: version.to_owned(),
            object: object.to_owned(),
            action,
            location: format!("s3://{}/{}", self.bucket, self.key(version, object)),
            cause,
        }
    }

    async fn read(&self, version: &str, object: &str) -> Result<Option<Vec<u8>>, StoreError> {
        use aws_sdk_s3::operation::get_object::GetObjectError;
        let r = self.client.get_object().bucket(&self.bucket).key(self.key(version, object)).send().await;
        match r {
            Ok(out) => {
                let body =
                    out.body.collect().await.map_err(|e| self.backend(version, object, "reading", e.to_string()))?;
                Ok(Some(body.into_bytes().to_vec()))
            }
            Err(e) => {
                if matches!(e.as_service_error(), Some(GetObjectError::NoSuchKey(_))) {
                    return Ok(None);
                }
                Err(self.backend(version, object, "reading", sdk_error_text(&e)))
            }
        }
    }

    async fn get(&self, version: &str, object: &str) -> Result<Vec<u8>, StoreError> {
        self.read(version, object).await?.ok_or_else(|| StoreError::Missing {
            version: version.to_owned(),
            object: object.to_owned(),
            location: format!("s3://{}/{}", self.bucket, self.key(version, object)),
        })
    }

    async fn put(&self, version: &str, object: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let location = format!("s3://{}/{}", self.bucket, self.key(version, object));
        if let Some(existing) = self.read(version, object).await? {
            return same_or_conflict(&existing, &bytes, version, object, &location);
        }
        let r = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(version, object))
            // Conditional write: S3 refuses (412) when another writer got
            // there first, so an object is never overwritten.
            .if_none_match("*")
            .body(ByteStream::from(bytes.clone()))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                if status == Some(412) {
                    let existing = self.get(version, object).await?;
                    return same_or_conflict(&existing, &bytes, version, object, &location);
                }
                Err(self.backend(version, object, "writing", sdk_error_text(&e)))
            }
        }
    }
}

/// An SDK error as one line: code and message when the service sent them.
pub(crate) fn sdk_error_text<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_owned(),
                _ => format!("{}", aws_sdk_s3::error::DisplayErrorContext(err)),
            }
        }
        other => format!("{}", aws_sdk_s3::error::DisplayErrorContext(other)),
    }
}
