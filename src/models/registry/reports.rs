//! The report images (ROC, calibration, confusion) published with a version:
//! which names are allowed, where they are stored, and reading them from a
//! training run's report directory.

use super::*;

/// The report subdirectory `publish` looks in when none is named:
/// `cartpulse train --out X --report X/report` puts the images there.
pub const REPORT_DIR: &str = "report";
/// Most report images stored with one version.
pub const MAX_REPORT_IMAGES: usize = 16;
/// Largest report image accepted (the training figures are ~50 kB).
pub const MAX_REPORT_IMAGE_BYTES: usize = 8 * 1024 * 1024;
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Whether `name` may be a report image: `[a-z0-9][a-z0-9_-]{0,63}.png`.
/// Checked before a name becomes part of a store key or a URL.
pub fn valid_report_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".png") else { return false };
    !stem.is_empty()
        && stem.len() <= 64
        && stem.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && stem.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// The store object of report image `name` (a flat name next to the manifest).
pub fn report_object(name: &str) -> String {
    format!("report-{name}")
}

/// One report image stored with a version (as kept in `model_versions.report`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportImage {
    /// `roc.png`, `calibration.png`, `confusion.png`, …
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A report image as listed by `models list --json` / `GET /v1/models`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReportImageInfo {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
    /// Where the API serves it: `/v1/models/{version}/report/{name}` (read scope).
    pub url: String,
}

impl ModelRegistry {
    /// The bytes of report image `name` of `version`, read from the store and
    /// checked against the sha256 registered at publication.
    pub async fn report_image(&self, version: &str, name: &str) -> Result<Vec<u8>, RegistryError> {
        let row = self.row(&self.inner.db, version).await?;
        let images = report_images(&row);
        let unknown = || RegistryError::UnknownReportImage {
            version: version.to_owned(),
            name: name.to_owned(),
            available: if images.is_empty() {
                "no report images".into()
            } else {
                images.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
            },
        };
        if !valid_report_name(name) {
            return Err(unknown());
        }
        let image = images.iter().find(|r| r.name == name).ok_or_else(unknown)?;
        Ok(self.inner.store.get_verified(version, &report_object(name), &image.sha256).await?)
    }
}

/// The report images of a registry row (none when the column is unreadable).
pub(super) fn report_images(row: &model_version::Model) -> Vec<ReportImage> {
    serde_json::from_str(&row.report).unwrap_or_default()
}

/// Why a report directory cannot be published with a model.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reading the report directory {dir}")]
    ReadDir { dir: String, source: std::io::Error },
    #[error("reading {path}")]
    ReadFile { path: String, source: std::io::Error },
    #[error("{dir} has {n} PNG files; at most {MAX_REPORT_IMAGES} report images are stored with a version")]
    TooMany { dir: String, n: usize },
    #[error(
        "report image {name:?} in {dir}: names are 1-64 characters of a-z 0-9 _ - (starting with a letter or digit) \
         and .png"
    )]
    BadName { dir: String, name: String },
    #[error("{path} is {bytes} bytes; report images are at most {MAX_REPORT_IMAGE_BYTES}")]
    TooLarge { path: String, bytes: usize },
    #[error("{path} is not a PNG image")]
    NotPng { path: String },
}

/// Reads the report images to publish: every `*.png` in `report`, or in
/// `<dir>/report` when no directory is named (nothing when it does not
/// exist). Other files (the figures' CSV data) are left out. Sorted by name.
pub(super) async fn read_report(dir: &Path, report: Option<&Path>) -> Result<Vec<(ReportImage, Vec<u8>)>, ReportError> {
    let (rdir, named): (PathBuf, bool) = match report {
        Some(r) => (r.to_owned(), true),
        None => (dir.join(REPORT_DIR), false),
    };
    let mut entries = match tokio::fs::read_dir(&rdir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(vec![]),
        Err(e) => return Err(ReportError::ReadDir { dir: rdir.display().to_string(), source: e }),
    };
    let mut names = Vec::new();
    loop {
        match entries.next_entry().await {
            Ok(Some(entry)) => {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.to_ascii_lowercase().ends_with(".png") {
                    names.push(name);
                }
            }
            Ok(None) => break,
            Err(e) => return Err(ReportError::ReadDir { dir: rdir.display().to_string(), source: e }),
        }
    }
    names.sort();
    if names.len() > MAX_REPORT_IMAGES {
        return Err(ReportError::TooMany { dir: rdir.display().to_string(), n: names.len() });
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if !valid_report_name(&name) {
            return Err(ReportError::BadName { dir: rdir.display().to_string(), name });
        }
        let path = rdir.join(&name);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|source| ReportError::ReadFile { path: path.display().to_string(), source })?;
        if bytes.len() > MAX_REPORT_IMAGE_BYTES {
            return Err(ReportError::TooLarge { path: path.display().to_string(), bytes: bytes.len() });
        }
        if !bytes.starts_with(PNG_SIGNATURE) {
            return Err(ReportError::NotPng { path: path.display().to_string() });
        }
        let image = ReportImage { name, sha256: sha256_hex(&bytes), bytes: bytes.len() as u64 };
        out.push((image, bytes));
    }
    Ok(out)
}
