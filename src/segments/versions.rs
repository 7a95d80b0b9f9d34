//! Segmentation versions as users see them (`cartpulse segments list`,
//! `GET /v1/segments`): each stored version with its figures (k, inertia,
//! silhouette), which one is active, and per segment its name, batch size,
//! live size (customers the actors currently have in it, active version
//! only), defining features and its centroid both in scaled units and back
//! in the features' own units.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use entities::segmentation::{Column, Entity, Model};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;

use super::transform::Scaler;

/// One segmentation version (`GET /v1/segments`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub version: i32,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub k: i32,
    pub n_customers: i32,
    pub inertia: f64,
    pub silhouette: Option<f64>,
    pub segments: Vec<SegmentProfile>,
    /// Why the segments could not be shown (unreadable JSON columns); the
    /// version is still listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One segment of a version.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SegmentProfile {
    pub segment: usize,
    pub name: String,
    /// Customers in it when the version was made.
    pub size: i64,
    /// Customers the actors have assigned to it and persisted (active version only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_size: Option<i64>,
    /// The four features farthest from the median customer, scaled.
    pub defining: Vec<Defining>,
    /// Centroid per feature in scaled units (robust z; money and counts logged).
    pub centroid: serde_json::Map<String, serde_json::Value>,
    /// The same centroid in the features' own units (days, money, counts).
    pub centroid_units: serde_json::Map<String, serde_json::Value>,
}

/// A feature that sets a segment apart, and by how much (scaled units).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Defining {
    pub feature: String,
    pub z: f64,
}

/// Every version, newest first.
pub async fn list(db: &DatabaseConnection) -> anyhow::Result<Vec<VersionInfo>> {
    let rows = Entity::find().order_by_desc(Column::Version).all(db).await.context("reading segmentations")?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let live = if row.active { Some(live_sizes(db, row.version).await?) } else { None };
        out.push(info(&row, live.as_ref()));
    }
    Ok(out)
}

/// Customers per segment of `version` as the actors last persisted them.
pub async fn live_sizes(db: &DatabaseConnection, version: i32) -> anyhow::Result<HashMap<i32, i64>> {
    use entities::customer::{Column as C, Entity as Customer};
    let rows: Vec<(Option<i32>, i64)> = Customer::find()
        .select_only()
        .column(C::Segment)
        .column_as(C::CustomerId.count(), "n")
        .filter(C::SegmentVersion.eq(version))
        .group_by(C::Segment)
        .into_tuple()
        .all(db)
        .await
        .context("counting customers per live segment")?;
    Ok(rows.into_iter().filter_map(|(s, n)| s.map(|s| (s, n))).collect())
}

fn info(row: &Model, live: Option<&HashMap<i32, i64>>) -> VersionInfo {
    let (segments, problem) = match segments(row, live) {
        Ok(s) => (s, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    VersionInfo {
        version: row.version,
        active: row.active,
        created_at: row.created_at,
        activated_at: row.activated_at,
        k: row.k,
        n_customers: row.n_customers,
        inertia: row.inertia,
        silhouette: row.silhouette,
        segments,
        problem,
    }
}

fn segments(row: &Model, live: Option<&HashMap<i32, i64>>) -> anyhow::Result<Vec<SegmentProfile>> {
    let features: Vec<String> = serde_json::from_str(&row.feature_names).context("unreadable feature_names")?;
    let scaler: Scaler = serde_json::from_str(&row.scaler).context("unreadable scaler")?;
    let centroids: Vec<Vec<f64>> = serde_json::from_str(&row.centroids).context("unreadable centroids")?;
    let sizes: Vec<i64> = serde_json::from_str(&row.sizes).context("unreadable sizes")?;
    let names: Vec<String> = serde_json::from_str(&row.names).context("unreadable names")?;
    let refs: Vec<&str> = features.iter().map(String::as_str).collect();
    let map = |values: &[f64]| {
        features.iter().zip(values).map(|(f, v)| (f.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>()
    };
    Ok(centroids
        .iter()
        .enumerate()
        .map(|(i, c)| SegmentProfile {
            segment: i,
            name: names.get(i).cloned().unwrap_or_default(),
            size: sizes.get(i).copied().unwrap_or(0),
            live_size: live.map(|l| l.get(&(i as i32)).copied().unwrap_or(0)),
            defining: super::naming::defining_features(&refs, c, 4)
                .into_iter()
                .map(|(feature, z)| Defining { feature, z })
                .collect(),
            centroid: map(c),
            centroid_units: map(&scaler.inverse(c)),
        })
        .collect())
}

/// The `segments list` table.
pub fn table(rows: &[VersionInfo]) -> String {
    if rows.is_empty() {
        return "no segmentation yet (cartpulse segment)\n".into();
    }
    let mut s = String::new();
    for r in rows {
        s += &format!(
            "v{}{}  k = {}, {} customers, inertia {:.1}, silhouette {}, created {}{}\n",
            r.version,
            if r.active { " (active)" } else { "" },
            r.k,
            r.n_customers,
            r.inertia,
            r.silhouette.map_or("-".into(), |v| format!("{v:.3}")),
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.activated_at.map_or(String::new(), |t| format!(", activated {}", t.format("%Y-%m-%d %H:%M:%S"))),
        );
        if let Some(p) = &r.problem {
            s += &format!("    unreadable: {p}\n");
        }
        for g in &r.segments {
            let live = g.live_size.map_or(String::new(), |n| format!(" (live {n})"));
            let feats: Vec<String> = g.defining.iter().map(|d| format!("{} {:+.2}", d.feature, d.z)).collect();
            s += &format!("    {:>2}  {:>6}{live}  {}  [{}]\n", g.segment, g.size, g.name, feats.join(", "));
        }
    }
    s
}
