//! The database side of partition leases (`partition_leases`): the fencing
//! token of each partition and its checkpoint. Redis decides who should own
//! a partition (a lease that expires); the database, which every write goes
//! through anyway, decides whose writes still count. A takeover raises the
//! token in a transaction of its own; every commit of the partition's events
//! checks its token in the commit's transaction (on Postgres with `FOR
//! SHARE`, so a takeover waits for commits in flight and every commit after
//! it sees the new token). Hence an owner that lost its lease while paused
//! cannot commit once the next owner has replayed the partition's log.

use actors::WriteGate;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};

/// How long a take-over waits for the previous owner's commit to let go of
/// the partition's row before giving up for this round.
const TAKE_OVER_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// A partition and the fencing token its owner holds.
pub type Fence = (usize, i64);

fn stmt(backend: DbBackend, pg: &str, values: Vec<sea_orm::Value>) -> Statement {
    // Our statements are written with $n; SQLite takes ?n for the same thing.
    let sql = match backend {
        DbBackend::Postgres => pg.to_owned(),
        _ => pg.replace('$', "?"),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// Takes `partition` over for `owner`: raises its token and returns the new
/// token and the partition's checkpoint. A partition never leased before
/// starts from `initial_checkpoint`.
pub async fn take_over(
    db: &DatabaseConnection,
    gate: &WriteGate,
    partition: usize,
    owner: &str,
    initial_checkpoint: i64,
) -> Result<(i64, i64), DbErr> {
    let b = db.get_database_backend();
    // SQLite: one writer at a time, or a group commit that read the fence
    // could not upgrade its transaction (SQLITE_BUSY_SNAPSHOT).
    let _turn = gate.enter().await;
    let txn = db.begin().await?;
    if b == DbBackend::Postgres {
        // A commit of the previous owner holds these rows (FOR SHARE) until
        // it ends; wait a moment, not forever, so the caller's lease loop
        // keeps renewing what it holds and tries again at its next round.
        txn.execute_unprepared(&format!("SET LOCAL lock_timeout = {}", TAKE_OVER_LOCK_WAIT.as_millis())).await?;
    }
    let row = txn
        .query_one(stmt(
            b,
            "INSERT INTO partition_leases (partition, token, owner, checkpoint, updated_at) VALUES ($1, 1, $2, $3, $4) \
             ON CONFLICT (partition) DO UPDATE SET token = partition_leases.token + 1, owner = excluded.owner, \
             updated_at = excluded.updated_at RETURNING token, checkpoint",
            vec![(partition as i32).into(), owner.into(), initial_checkpoint.into(), chrono::Utc::now().into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("taking a partition over returned no row".into()))?;
    let taken = (row.try_get("", "token")?, row.try_get("", "checkpoint")?);
    txn.commit().await?;
    Ok(taken)
}

/// The partitions of `fences` whose token is no longer the current one
/// (another owner took them over). Run inside the commit's transaction.
pub async fn stale<C: ConnectionTrait>(c: &C, fences: &[Fence]) -> Result<Vec<usize>, DbErr> {
    if fences.is_empty() {
        return Ok(Vec::new());
    }
    let b = c.get_database_backend();
    let list: Vec<String> = fences.iter().map(|(p, _)| p.to_string()).collect();
    // Partition numbers are ours (usize), so the list is safe to inline.
    let lock = if b == DbBackend::Postgres { " FOR SHARE" } else { "" };
    let sql = format!("SELECT partition, token FROM partition_leases WHERE partition IN ({}){lock}", list.join(","));
    let rows = c.query_all(Statement::from_string(b, sql)).await?;
    let mut current = std::collections::HashMap::new();
    for r in rows {
        let p: i32 = r.try_get("", "partition")?;
        let t: i64 = r.try_get("", "token")?;
        current.insert(p as usize, t);
    }
    Ok(fences.iter().filter(|(p, t)| current.get(p) != Some(t)).map(|(p, _)| *p).collect())
}

/// Raises the checkpoint of each partition still held with its token.
pub async fn write_checkpoints(
    db: &DatabaseConnection,
    gate: &WriteGate,
    held: &[Fence],
    upto: i64,
) -> Result<(), DbErr> {
    let b = db.get_database_backend();
    let _turn = gate.enter().await;
    for (p, token) in held {
        db.execute(stmt(
            b,
            "UPDATE partition_leases SET checkpoint = $1, updated_at = $2 \
             WHERE partition = $3 AND token = $4 AND checkpoint < $1",
            vec![upto.into(), chrono::Utc::now().into(), (*p as i32).into(), (*token).into()],
        ))
        .await?;
    }
    Ok(())
}

/// Where each of `partitions`, if never leased before, starts: the best
/// checkpoint an earlier deployment left for its customers (a static
/// processor's `runtime:a-b/P` whose range holds it, or the one-process
/// `runtime`), else the start of the log. In the order of `partitions`.
pub async fn initial_checkpoints(db: &DatabaseConnection, partitions: &[usize], of: usize) -> Result<Vec<i64>, DbErr> {
    use entities::checkpoint;
    use sea_orm::EntityTrait;
    let rows = checkpoint::Entity::find().all(db).await?;
    Ok(partitions
        .iter()
        .map(|&p| rows.iter().filter(|r| covers(&r.name, p, of)).map(|r| r.seq).max().unwrap_or(0))
        .collect())
}

/// True when the checkpoint named `name` covers `partition` of `of`.
pub fn covers(name: &str, partition: usize, of: usize) -> bool {
    let base = actors::store::RUNTIME_CHECKPOINT;
    if name == base {
        return true;
    }
    let Some(rest) = name.strip_prefix(base).and_then(|r| r.strip_prefix(':')) else { return false };
    let Some((range, n)) = rest.split_once('/') else { return false };
    let Some((a, z)) = range.split_once('-') else { return false };
    match (a.parse::<usize>(), z.parse::<usize>(), n.parse::<usize>()) {
        (Ok(a), Ok(z), Ok(n)) => n == of && a <= partition && partition <= z,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn static_checkpoints_cover_their_range_only() {
        assert!(covers("runtime", 5, 16));
        assert!(covers("runtime:0-7/16", 7, 16));
        assert!(!covers("runtime:0-7/16", 8, 16));
        assert!(!covers("runtime:0-7/8", 3, 16), "another partition count hashes differently");
        assert!(!covers("runtimex", 0, 16));
        assert!(!covers("runtime:garbage", 0, 16));
    }
}
