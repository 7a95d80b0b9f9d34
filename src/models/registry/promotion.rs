//! Changing what serves: promote (alone or as an A/B split), shadow,
//! unshadow and rollback, each in one locked transaction that also records
//! the change in `model_promotions`, which rollback walks back through.

use super::*;

/// An active version and its share of customers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Share {
    pub version: String,
    pub traffic_share: f64,
}

/// The outcome of `promote` or `rollback`: the active set before and after.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Change {
    /// The version promoted, or the one whose promotion was rolled back.
    pub version: String,
    pub before: Vec<Share>,
    pub active: Vec<Share>,
    /// Versions that stopped being active.
    pub retired: Vec<String>,
    /// False when the promotion changed nothing (the version was already the only active one).
    pub changed: bool,
}

/// The outcome of `shadow` or `unshadow`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ShadowChange {
    /// The shadow version after the change (`None` once cleared).
    pub shadow: Option<String>,
    /// The shadow version before it.
    pub before: Option<String>,
    /// The version that stopped being the shadow, and the status it went back to.
    pub released: Option<Released>,
    /// False when nothing changed (the version was already the shadow, or nothing was in shadow).
    pub changed: bool,
}

/// A version sent back from shadow.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Released {
    pub version: String,
    pub status: String,
}

pub const KIND_PROMOTE: &str = "promote";
const KIND_ROLLBACK: &str = "rollback";
pub const KIND_SHADOW: &str = "shadow";
pub const KIND_UNSHADOW: &str = "unshadow";
impl ModelRegistry {
    /// Makes `version` active. Without `traffic` it becomes the only active
    /// version (share 1) and the others are retired; with `traffic` P
    /// (0 < P < 1) it serves P of the customers next to the one other active
    /// version, which keeps 1 − P. The version's objects are fetched and
    /// verified first; a corrupt or missing one refuses the promotion.
    pub async fn promote(&self, version: &str, traffic: Option<f64>) -> Result<Change, RegistryError> {
        if let Some(p) = traffic {
            if !(p.is_finite() && p > 0.0 && p < 1.0) {
                return Err(RegistryError::TrafficOutOfRange(p));
            }
        }
        let row = self.row(&self.inner.db, version).await?;
        self.loaded(&row).await?;

        let txn = self.begin_locked().await?;
        let row = self.row(&txn, version).await?;
        let before = active_shares(&txn).await?;
        let after = match traffic {
            None => vec![Share { version: row.version.clone(), traffic_share: 1.0 }],
            Some(p) => {
                let others: Vec<&Share> = before.iter().filter(|s| s.version != row.version).collect();
                match others.as_slice() {
                    [] => {
                        return Err(RegistryError::Refused(format!(
                        "no other version is active to share traffic with; promote {version} without --traffic first"
                    )))
                    }
                    [other] => vec![
                        Share { version: other.version.clone(), traffic_share: 1.0 - p },
                        Share { version: row.version.clone(), traffic_share: p },
                    ],
                    [a, b, ..] => {
                        return Err(RegistryError::Refused(format!(
                            "two versions are already active ({} and {}); promote one of them without --traffic, \
                             or roll back, before starting another A/B split",
                            a.version, b.version
                        )))
                    }
                }
            }
        };
        if same_set(&before, &after) {
            txn.commit().await?;
            return Ok(Change { version: version.to_owned(), active: after, before, retired: vec![], changed: false });
        }
        let now = Utc::now();
        let retired = apply(&txn, &before, &after, now).await?;
        record(&txn, KIND_PROMOTE, version, &before, &after, now).await?;
        txn.commit().await?;
        tracing::info!(%version, ?traffic, "model promoted");
        self.bump();
        Ok(Change { version: version.to_owned(), before, active: after, retired, changed: true })
    }

    /// Puts `version` in shadow: every serving process scores each batch with
    /// it as well, after the replies are sent, and only counts how it
    /// compares. Any published version that is not active may be shadowed
    /// (its objects are fetched and verified first, like a promotion); the
    /// previous shadow, if any, goes back to `candidate` (`retired` if it had
    /// been active). Recorded in `model_promotions` (kind `shadow`); rollback
    /// ignores it.
    pub async fn shadow(&self, version: &str) -> Result<ShadowChange, RegistryError> {
        let row = self.row(&self.inner.db, version).await?;
        if row.status == Status::Active.as_str() {
            return Err(not_shadowable(version));
        }
        self.loaded(&row).await?;

        let txn = self.begin_locked().await?;
        let row = self.row(&txn, version).await?;
        if row.status == Status::Active.as_str() {
            return Err(not_shadowable(version));
        }
        let current = shadow_row(&txn).await?;
        let before = current.as_ref().map(|r| r.version.clone());
        if before.as_deref() == Some(version) {
            txn.commit().await?;
            return Ok(ShadowChange { shadow: before.clone(), before, released: None, changed: false });
        }
        let released = match current {
            Some(old) => Some(release(&txn, old).await?),
            None => None,
        };
        let mut m: model_version::ActiveModel = row.into();
        m.status = Set(Status::Shadow.as_str().to_owned());
        m.traffic_share = Set(0.0);
        m.update(&txn).await?;
        let now = Utc::now();
        let shares = |v: Option<&str>| v.map(|v| vec![Share { version: v.to_owned(), traffic_share: 0.0 }]);
        let (b, a) = (shares(before.as_deref()).unwrap_or_default(), shares(Some(version)).unwrap_or_default());
        record(&txn, KIND_SHADOW, version, &b, &a, now).await?;
        txn.commit().await?;
        tracing::info!(%version, previous = ?before, "model version in shadow");
        self.bump();
        Ok(ShadowChange { shadow: Some(version.to_owned()), before, released, changed: true })
    }

    /// Ends the shadow deployment: the shadow version goes back to
    /// `candidate` (`retired` if it had been active). Nothing in shadow is
    /// not an error (`changed: false`). Recorded in `model_promotions` (kind
    /// `unshadow`).
    pub async fn unshadow(&self) -> Result<ShadowChange, RegistryError> {
        let txn = self.begin_locked().await?;
        let Some(current) = shadow_row(&txn).await? else {
            txn.commit().await?;
            return Ok(ShadowChange { shadow: None, before: None, released: None, changed: false });
        };
        let version = current.version.clone();
        let released = release(&txn, current).await?;
        let b = vec![Share { version: version.clone(), traffic_share: 0.0 }];
        record(&txn, KIND_UNSHADOW, &version, &b, &[], Utc::now()).await?;
        txn.commit().await?;
        tracing::info!(%version, "model shadow cleared");
        self.bump();
        Ok(ShadowChange { shadow: None, before: Some(version), released: Some(released), changed: true })
    }

    /// Restores the active versions (and shares) from before the newest
    /// promotion that has not been rolled back, and retires the others. The
    /// restored versions are fetched and verified first.
    pub async fn rollback(&self) -> Result<Change, RegistryError> {
        let last = self.last_promotion(&self.inner.db).await?.ok_or_else(|| {
            RegistryError::NothingToRollBack("no promotion has been made (or all were rolled back)".into())
        })?;
        let target: Vec<Share> = serde_json::from_str(&last.before)
            .map_err(|e| RegistryError::Refused(format!("promotion #{} has an unreadable history: {e}", last.id)))?;
        if target.is_empty() {
            return Err(RegistryError::NothingToRollBack(format!(
                "no version was active before {} was promoted",
                last.version
            )));
        }
        for s in &target {
            let row = self.row(&self.inner.db, &s.version).await?;
            self.loaded(&row).await?;
        }

        let txn = self.begin_locked().await?;
        match self.last_promotion(&txn).await? {
            Some(l) if l.id == last.id => {}
            _ => return Err(RegistryError::Refused("the registry changed while rolling back; try again".into())),
        }
        let before = active_shares(&txn).await?;
        let now = Utc::now();
        let retired = apply(&txn, &before, &target, now).await?;
        let mut undone: model_promotion::ActiveModel = last.clone().into();
        undone.undone_at = Set(Some(now));
        undone.update(&txn).await?;
        record(&txn, KIND_ROLLBACK, &last.version, &before, &target, now).await?;
        txn.commit().await?;
        tracing::info!(version = %last.version, "model promotion rolled back");
        self.bump();
        Ok(Change { version: last.version, before, active: target, retired, changed: true })
    }

    /// Records why the newest `kind` change of `version` was made (a JSON
    /// object; `cartpulse retrain` writes its decision and figures).
    pub async fn record_reason(
        &self,
        kind: &str,
        version: &str,
        reason: &serde_json::Value,
    ) -> Result<(), RegistryError> {
        let row = model_promotion::Entity::find()
            .filter(model_promotion::Column::Kind.eq(kind))
            .filter(model_promotion::Column::Version.eq(version))
            .order_by_desc(model_promotion::Column::Id)
            .one(&self.inner.db)
            .await?
            .ok_or_else(|| RegistryError::UnknownVersion(version.to_owned()))?;
        let mut m: model_promotion::ActiveModel = row.into();
        m.reason = Set(Some(reason.to_string()));
        m.update(&self.inner.db).await?;
        Ok(())
    }

    async fn last_promotion(&self, db: &impl ConnectionTrait) -> Result<Option<model_promotion::Model>, DbErr> {
        model_promotion::Entity::find()
            .filter(model_promotion::Column::Kind.eq(KIND_PROMOTE))
            .filter(model_promotion::Column::UndoneAt.is_null())
            .order_by_desc(model_promotion::Column::Id)
            .one(db)
            .await
    }
}

fn not_shadowable(version: &str) -> RegistryError {
    RegistryError::WrongState(format!(
        "{version} is active; only a version that is not serving can be put in shadow (promote another version, \
         or roll back, first)"
    ))
}

/// The shadow version's row, if any (the newest, should there ever be more).
async fn shadow_row(db: &impl ConnectionTrait) -> Result<Option<model_version::Model>, DbErr> {
    model_version::Entity::find()
        .filter(model_version::Column::Status.eq(Status::Shadow.as_str()))
        .order_by_desc(model_version::Column::PublishedAt)
        .one(db)
        .await
}

/// Sends a shadow version back to `candidate`, or `retired` if it had been active.
async fn release(txn: &DatabaseTransaction, row: model_version::Model) -> Result<Released, DbErr> {
    let status = if row.promoted_at.is_some() { Status::Retired } else { Status::Candidate };
    let version = row.version.clone();
    let mut m: model_version::ActiveModel = row.into();
    m.status = Set(status.as_str().to_owned());
    m.traffic_share = Set(0.0);
    m.update(txn).await?;
    Ok(Released { version, status: status.as_str().to_owned() })
}

async fn active_shares(db: &impl ConnectionTrait) -> Result<Vec<Share>, DbErr> {
    Ok(model_version::Entity::find()
        .filter(model_version::Column::Status.eq(Status::Active.as_str()))
        .order_by_desc(model_version::Column::TrafficShare)
        .order_by_asc(model_version::Column::Version)
        .all(db)
        .await?
        .into_iter()
        .map(|r| Share { version: r.version, traffic_share: r.traffic_share })
        .collect())
}

fn same_set(a: &[Share], b: &[Share]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| y.version == x.version && (y.traffic_share - x.traffic_share).abs() < 1e-12))
}

/// Moves the registry from `before` to `after`: versions only in `before` are
/// retired; those in `after` are active with their shares. Returns the retired.
async fn apply(
    txn: &DatabaseTransaction,
    before: &[Share],
    after: &[Share],
    now: DateTime<Utc>,
) -> Result<Vec<String>, RegistryError> {
    let mut retired = Vec::new();
    for s in before.iter().filter(|s| !after.iter().any(|a| a.version == s.version)) {
        model_version::Entity::update_many()
            .col_expr(model_version::Column::Status, sea_orm::sea_query::Expr::value(Status::Retired.as_str()))
            .col_expr(model_version::Column::TrafficShare, sea_orm::sea_query::Expr::value(0.0))
            .col_expr(model_version::Column::RetiredAt, sea_orm::sea_query::Expr::value(now))
            .filter(model_version::Column::Version.eq(s.version.as_str()))
            .exec(txn)
            .await?;
        retired.push(s.version.clone());
    }
    for s in after {
        let row = model_version::Entity::find_by_id(s.version.clone())
            .one(txn)
            .await?
            .ok_or_else(|| RegistryError::UnknownVersion(s.version.clone()))?;
        let was_active = row.status == Status::Active.as_str();
        let mut m: model_version::ActiveModel = row.into();
        m.status = Set(Status::Active.as_str().to_owned());
        m.traffic_share = Set(s.traffic_share);
        if !was_active {
            m.promoted_at = Set(Some(now));
            m.retired_at = Set(None);
        }
        m.update(txn).await?;
    }
    Ok(retired)
}

async fn record(
    txn: &DatabaseTransaction,
    kind: &str,
    version: &str,
    before: &[Share],
    after: &[Share],
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    let to_json = |s: &[Share]| serde_json::to_string(s).unwrap_or_else(|_| "[]".into());
    model_promotion::ActiveModel {
        kind: Set(kind.to_owned()),
        version: Set(version.to_owned()),
        before: Set(to_json(before)),
        after: Set(to_json(after)),
        created_at: Set(now),
        undone_at: Set(None),
        reason: Set(None),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(())
}
