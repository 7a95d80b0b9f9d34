//! Where training rows come from: a UCI Online Shoppers CSV, or the
//! sessions the platform itself recorded (`cartpulse train --from-db`, or
//! `--from-lake` from the archived log: [`super::lake`]).
//!
//! Both go through the same feature code as the live session actors
//! ([`ShoppersFeatures::from_uci_record`]): a recorded session's features are
//! stored with the UCI column names, and are read back the way a CSV row is.
//! Training never depends on the order rows arrive in: [`Dataset::canonical`]
//! puts them in an order of their own content, so the UCI file and the same
//! sessions replayed and read back from the database give the same folds and
//! the same figures at the same seed.

use actors::features::ShoppersFeatures;
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A session's prefix examples: `(pages seen, features then)`, youngest first.
pub type Prefixes = Vec<(u32, ShoppersFeatures)>;

/// Rows with their labels (whether the session ended in a purchase).
pub struct Dataset {
    pub features: Vec<ShoppersFeatures>,
    pub labels: Vec<bool>,
    /// Per row, its session's prefix examples `(pages seen, features then)`
    /// for the open-session calibration (`models::open_calibration`): from
    /// the event log for recorded sessions, from the replay of the row (what
    /// `cartpulse replay` sends) for a CSV. Empty when not built.
    pub prefixes: Vec<Prefixes>,
    /// The file's sha256, or the canonical rows' for the database.
    pub sha256: String,
}

/// Where `cartpulse train` reads its rows.
#[derive(Clone, Debug)]
pub enum DataSource {
    /// A UCI Online Shoppers CSV with its `Revenue` column.
    Csv(PathBuf),
    /// Closed sessions in the database.
    Database(Box<SessionQuery>),
    /// The sessions of the event log archived in the data lake.
    Lake(Box<super::lake::LakeQuery>),
}

impl From<PathBuf> for DataSource {
    fn from(p: PathBuf) -> Self {
        DataSource::Csv(p)
    }
}

impl DataSource {
    /// What the manifest records as the training data's origin.
    pub fn describe(&self) -> String {
        match self {
            DataSource::Csv(p) => p.display().to_string(),
            DataSource::Database(q) => q.describe(),
            DataSource::Lake(q) => q.describe(),
        }
    }

    pub fn load(&self) -> anyhow::Result<Dataset> {
        match self {
            DataSource::Csv(p) => {
                let mut data = load_csv(p, true)?;
                data.prefixes = data.features.iter().enumerate().map(|(i, f)| replay_prefixes(f, i + 1)).collect();
                Ok(data)
            }
            DataSource::Database(q) => q.load(),
            DataSource::Lake(q) => q.load(),
        }
    }
}

/// Which recorded sessions train a model: closed ones whose outcome is
/// settled (they ended at least `label_delay` ago: a purchase can follow the
/// last page by a while), ended within `[since, until)` when given.
#[derive(Clone, Debug)]
pub struct SessionQuery {
    pub settings: crate::config::Settings,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub label_delay: Duration,
}

impl SessionQuery {
    fn describe(&self) -> String {
        let at = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
        format!(
            "database: closed sessions ended in [{}, {}), settled for {} s",
            at(self.since),
            at(self.until),
            self.label_delay.as_secs()
        )
    }

    /// Reads the sessions (on a thread of its own with its own runtime, so
    /// it works from synchronous and asynchronous callers alike).
    fn load(&self) -> anyhow::Result<Dataset> {
        let query = self.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(query.read())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("reading the sessions panicked"))?
    }

    async fn read(&self) -> anyhow::Result<Dataset> {
        use entities::session::{Column, Entity};
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let db = crate::db::connect(&self.settings).await.context("connecting to the database")?;
        let settled_before = Utc::now() - crate::config::chrono_span(self.label_delay);
        let until = self.until.map_or(settled_before, |u| u.min(settled_before));
        let mut q = Entity::find().filter(Column::EndedAt.lt(until));
        if let Some(since) = self.since {
            q = q.filter(Column::EndedAt.gte(since));
        }
        let (ids, features, labels) = closed_sessions_with_ids(&db, q).await?;
        if features.is_empty() {
            bail!("{}: no session qualifies (is the database the one the service writes to?)", self.describe());
        }
        let prefixes = log_prefixes(&db, &ids, self.settings.features.timezone).await?;
        let mut data = Dataset { features, labels, prefixes, sha256: String::new() };
        data.sha256 = data.canonical().0.fingerprint();
        Ok(data)
    }
}

/// The stored final features and outcomes (`purchased`) of the closed
/// sessions `query` selects, in session id order: what training and the
/// retraining's judgement read.
pub(crate) async fn closed_sessions(
    db: &sea_orm::DatabaseConnection,
    query: sea_orm::Select<entities::session::Entity>,
) -> anyhow::Result<(Vec<ShoppersFeatures>, Vec<bool>)> {
    let (_, features, labels) = closed_sessions_with_ids(db, query).await?;
    Ok((features, labels))
}

/// [`closed_sessions`] with the session ids.
async fn closed_sessions_with_ids(
    db: &sea_orm::DatabaseConnection,
    query: sea_orm::Select<entities::session::Entity>,
) -> anyhow::Result<(Vec<String>, Vec<ShoppersFeatures>, Vec<bool>)> {
    use entities::session::Column;
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
    let rows: Vec<(String, Option<String>, bool)> = query
        .select_only()
        .columns([Column::SessionId, Column::Features, Column::Purchased])
        .filter(Column::Status.eq("closed"))
        .filter(Column::Features.is_not_null())
        .order_by_asc(Column::SessionId)
        .into_tuple()
        .all(db)
        .await
        .context("reading the closed sessions")?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut features = Vec::with_capacity(rows.len());
    let mut labels = Vec::with_capacity(rows.len());
    for (id, json, purchased) in rows {
        let Some(json) = json else { continue };
        features.push(crate::serving::inference::request::features_from_stored(&id, &json)?);
        labels.push(purchased);
        ids.push(id);
    }
    Ok((ids, features, labels))
}

/// The prefix examples of the sessions `ids`, from the event log: each
/// session's events replayed in log order through the live feature code (in
/// the shop's time zone), as the session actors saw them.
async fn log_prefixes(
    db: &sea_orm::DatabaseConnection,
    ids: &[String],
    timezone: chrono_tz::Tz,
) -> anyhow::Result<Vec<Prefixes>> {
    use crate::models::open_calibration::{key_of, PrefixSampler};
    let index: std::collections::HashMap<&str, usize> =
        ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let sessions = crate::models::open_sessions::replay_log_sessions(
        db,
        timezone,
        |sid| index.get(sid).map(|&i| (i, PrefixSampler::new(key_of(sid)))),
        |(_, sampler), acc| sampler.offer(acc.page_views(), || acc.features()),
    )
    .await?;
    let mut out = vec![Vec::new(); ids.len()];
    for (_, (_, (i, sampler))) in sessions {
        out[i] = sampler.finish();
    }
    Ok(out)
}

/// Reads a UCI Online Shoppers CSV through the live feature code. With
/// `require_label` false a file without the `Revenue` column is accepted (its
/// labels are then all `false`). No prefixes: training adds them
/// ([`DataSource::load`]).
pub fn load_csv(path: &Path, require_label: bool) -> anyhow::Result<Dataset> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
    let header: Vec<String> = reader.headers()?.iter().map(|h| h.trim().to_owned()).collect();
    let with_label = header.len() == ShoppersFeatures::UCI_COLUMNS.len() + 1;
    if !header.iter().zip(ShoppersFeatures::UCI_COLUMNS).all(|(h, c)| h == c)
        || header.len() < ShoppersFeatures::UCI_COLUMNS.len()
        || (with_label && header[17] != "Revenue")
        || (require_label && !with_label)
    {
        bail!(
            "{}: header must be the UCI Online Shoppers columns ({}{}), got {}",
            path.display(),
            ShoppersFeatures::UCI_COLUMNS.join(","),
            if require_label { ",Revenue" } else { "[,Revenue]" },
            header.join(",")
        );
    }
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: data row {}", path.display(), i + 1))?;
        let mut fields: Vec<&str> = record.iter().collect();
        if !with_label {
            fields.push("FALSE");
        }
        let (f, y) = ShoppersFeatures::from_uci_record(&fields)
            .with_context(|| format!("{}: data row {}", path.display(), i + 1))?;
        features.push(f);
        labels.push(y);
    }
    Ok(Dataset { features, labels, prefixes: Vec::new(), sha256 })
}

/// The prefix examples of data row `row` (from 1) as the replay tool sends
/// it. The file has no page order: the replay's (administrative pages, then
/// informational, then product, each carrying the row's mean page value) is
/// what an open session of a replayed row shows, and nothing more.
fn replay_prefixes(features: &ShoppersFeatures, row: usize) -> Prefixes {
    use crate::models::open_calibration::PrefixSampler;
    let mut sampler = PrefixSampler::new(row as u64);
    actors::features::replay_row_pages(features, row, |acc| sampler.offer(acc.page_views(), || acc.features()));
    sampler.finish()
}

/// `x` to 12 significant digits: a recorded session sums its pages'
/// durations, which can differ from the file's value in the last bit; no
/// value of the file has more digits, so the file's values stay as they are.
fn round12(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    format!("{x:.11e}").parse().unwrap_or(x)
}

impl Dataset {
    /// The rows (rounded as [`round12`] says) in an order of their content,
    /// and for each canonical row the index it had here. Equal rows are
    /// interchangeable, so any two sources of the same rows give the same
    /// dataset.
    pub fn canonical(&self) -> (Dataset, Vec<usize>) {
        let rows: Vec<ShoppersFeatures> = self
            .features
            .iter()
            .map(|f| {
                let mut f = f.clone();
                for x in [
                    &mut f.administrative_duration,
                    &mut f.informational_duration,
                    &mut f.product_related_duration,
                    &mut f.bounce_rates,
                    &mut f.exit_rates,
                    &mut f.page_values,
                    &mut f.special_day,
                ] {
                    *x = round12(*x);
                }
                f
            })
            .collect();
        let keys: Vec<String> = rows
            .iter()
            .zip(&self.labels)
            .map(|(f, y)| format!("{}|{y}", serde_json::Value::Object(f.to_uci_json())))
            .collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| keys[a].cmp(&keys[b]).then(a.cmp(&b)));
        let data = Dataset {
            features: order.iter().map(|&i| rows[i].clone()).collect(),
            labels: order.iter().map(|&i| self.labels[i]).collect(),
            prefixes: if self.prefixes.len() == self.labels.len() {
                order.iter().map(|&i| self.prefixes[i].clone()).collect()
            } else {
                Vec::new()
            },
            sha256: self.sha256.clone(),
        };
        (data, order)
    }

    /// sha256 of the rows as they are (for a dataset without a file).
    pub(super) fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (f, y) in self.features.iter().zip(&self.labels) {
            h.update(serde_json::Value::Object(f.to_uci_json()).to_string());
            h.update(if *y { b"|1\n" } else { b"|0\n" });
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_keeps_file_values_and_removes_summation_noise() {
        for x in [0.0, 627.5, 0.028571429, 1933.333333, 12.5, -1.0] {
            assert_eq!(round12(x), x);
        }
        let summed = (0..3).map(|_| 64.5 / 3.0).sum::<f64>() + 1e-13;
        assert_eq!(round12(summed), 64.5);
        assert_eq!(round12(0.1 + 0.2), 0.3);
    }

    #[test]
    fn the_canonical_order_does_not_depend_on_the_input_order() {
        let csv = super::super::synthetic_shoppers_csv(300, 7);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        std::fs::write(&path, &csv).unwrap();
        let a = load_csv(&path, true).unwrap();
        let mut b = Dataset {
            features: a.features.clone(),
            labels: a.labels.clone(),
            prefixes: Vec::new(),
            sha256: String::new(),
        };
        b.features.reverse();
        b.labels.reverse();
        let (ca, order_a) = a.canonical();
        let (cb, order_b) = b.canonical();
        assert_eq!(ca.features, cb.features);
        assert_eq!(ca.labels, cb.labels);
        // The orders map canonical rows back to where each input had them.
        for (i, &j) in order_a.iter().enumerate() {
            assert_eq!(a.features[j], ca.features[i]);
        }
        for (&ia, &ib) in order_a.iter().zip(&order_b) {
            assert_eq!((&a.features[ia], a.labels[ia]), (&b.features[ib], b.labels[ib]));
        }
    }
}
