//! The data lake: the event log kept as Parquet in a directory or on S3
//! (`lake.*` settings; docs/data-lake.md). [`store`] is the object store,
//! [`events`] the table's schema and file writer, [`manifest`] the record of
//! what is archived, [`horizon`] how far the log may be archived, and
//! [`archive`] one archive run, which `cartpulse archive`
//! (`crate::jobs::archive`) and the service's scheduled task start.

pub mod archive;
pub mod cli;
pub mod events;
pub mod manifest;
pub mod read;
pub mod store;

pub use store::LakeStore;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement};

/// How far the log may be archived: the lowest checkpoint over every
/// partition. Below a partition's checkpoint each of its events is
/// committed and in the actors' snapshots; below the lowest one every
/// event of every partition is, so no event can still appear there (a
/// commit in flight on another processor holds a higher position than the
/// checkpoint of its partition).
///
/// A partition's checkpoint is the higher of its row in `partition_leases`
/// (processors that lease partitions) and the `checkpoints` rows that cover
/// it (`runtime` of a one-process deployment, `runtime:a-b/P` of processors
/// with fixed ranges); a partition with neither holds the horizon at 0.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Horizon {
    /// Every event with `seq` at or below this is committed and checkpointed.
    pub seq: i64,
    /// The partition whose checkpoint is the lowest (the one holding the
    /// horizon back).
    pub lowest_partition: usize,
    pub partitions: usize,
}

/// The archive horizon for a deployment of `partitions` partitions
/// (`redis.partitions`; a one-process deployment's `runtime` checkpoint
/// covers all of them).
pub async fn horizon(db: &DatabaseConnection, partitions: usize) -> Result<Horizon, DbErr> {
    let b = db.get_database_backend();
    let rows = db
        .query_all(Statement::from_string(b, "SELECT partition, checkpoint FROM partition_leases".to_owned()))
        .await?;
    let mut leased = vec![None::<i64>; partitions];
    for r in rows {
        let p: i32 = r.try_get("", "partition")?;
        let c: i64 = r.try_get("", "checkpoint")?;
        match leased.get_mut(p as usize) {
            Some(slot) => *slot = Some(slot.map_or(c, |s: i64| s.max(c))),
            None => {
                return Err(DbErr::Custom(format!(
                    "partition_leases holds partition {p}, but redis.partitions is {partitions}: \
                     run the archive with the deployment's partition count"
                )))
            }
        }
    }
    use sea_orm::EntityTrait;
    let named = entities::checkpoint::Entity::find().all(db).await?;
    let mut lowest = (i64::MAX, 0);
    for (p, lease) in leased.iter().enumerate() {
        let covering = named.iter().filter(|r| crate::serving::ingest::fences::covers(&r.name, p, partitions));
        let c = lease.unwrap_or(0).max(covering.map(|r| r.seq).max().unwrap_or(0));
        if c < lowest.0 {
            lowest = (c, p);
        }
    }
    Ok(Horizon { seq: lowest.0.max(0), lowest_partition: lowest.1, partitions })
}
