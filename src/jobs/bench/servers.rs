//! The `serve` children the benches start: this same executable
//! (`std::env::current_exe()`, so run the release build), one process per
//! server, killed when the bench ends (on error and Ctrl-C too: `kill_on_drop`).
//!
//! - [`Server`]: one `serve` over a database, with an admin key from
//!   `keys create`; reads its `/metrics` (with the key, so that a server that
//!   is not on loopback answers too) and its memory.
//! - [`Replicas`]: M processors (`serve --role processor`, each owning a
//!   disjoint `--owns` range of the partitions when M > 1, or sharing them
//!   through leases when `leased`) and N gateways
//!   (`serve --role gateway`) over a fresh Postgres database (created on an
//!   admin URL, dropped at the end) and a fresh Redis key prefix (deleted at
//!   the end). Every child gets the same `CARTPULSE_STREAM__TOKEN_SECRET`
//!   (32 random bytes, hex): the service refuses to start with Redis without
//!   one of at least 32 bytes.

use super::serve_process::{create_key, ServeCommand, ServeProcess};
use crate::telemetry::scrape;
use anyhow::{anyhow, bail, Context};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// A `serve` child with an admin key of its database; killed when dropped.
pub struct Server {
    process: ServeProcess,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// An admin key of its database.
    pub key: SecretString,
    client: reqwest::Client,
    /// Holds a SQLite file; declared after `process` so that it is removed
    /// only once the server is gone.
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// One process does everything, over a fresh SQLite file.
    pub async fn start(env: &[(&str, &str)]) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new().prefix("cartpulse-bench-").tempdir()?;
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
        let mut s = Self::start_with(&db, None, &[], env).await?;
        s._dir = Some(dir);
        Ok(s)
    }

    /// `serve EXTRA…` of this executable (`std::env::current_exe()`) over
    /// `db` on a free loopback port, ready when it answers `/readyz`;
    /// creates an admin key first unless given one.
    pub async fn start_with(
        db: &str,
        key: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("locating the cartpulse executable")?;
        let key = match key {
            Some(k) => k.to_owned(),
            None => {
                let (exe, db) = (exe.clone(), db.to_owned());
                tokio::task::spawn_blocking(move || create_key(&exe, &db, "bench", "admin")).await??
            }
        };
        let process = ServeCommand::new(&exe)?
            .args(["--database-url", db])
            .args(extra)
            .envs(env.iter().copied())
            .log(true)
            .start(Duration::from_secs(120))
            .await?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Server { base: process.base.clone(), process, key: SecretString::from(key), client, _dir: None })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Resident memory of the process.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS"))
    }

    /// The `/metrics` text (sent with the key).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let url = format!("{}/metrics", self.base);
        let r = self.client.get(&url).bearer_auth(self.key.expose_secret()).send().await?;
        if !r.status().is_success() {
            bail!("GET {url} answered {}", r.status());
        }
        Ok(r.text().await?)
    }

    /// An unlabelled sample, 0 when absent.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        Ok(scrape::sample(&self.metrics().await?, name).unwrap_or(0.0))
    }

    /// The server's own ack → broadcast p99 from its histogram (bucket bound).
    pub async fn latency_p99_ms(&self) -> anyhow::Result<Option<f64>> {
        let text = self.metrics().await?;
        Ok(scrape::histogram_quantile(&text, "cartpulse_stream_latency_seconds", 0.99).map(|s| round(s * 1000.0, 2)))
    }

    /// SIGTERM (what ECS sends), then waits up to `within` for the process
    /// to exit; answers its exit status (SIGKILL and an error past `within`).
    pub async fn terminate(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        self.process.terminate(within).await
    }

    pub async fn stop(mut self) {
        self.process.kill();
    }
}

/// What to start for a many-replica run.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// Names the database and the prefix (`cp_bench_{bench}_…`, `cpbench{bench}…`).
    pub bench: &'static str,
    pub gateways: usize,
    pub processors: usize,
    pub partitions: usize,
    pub redis_url: String,
    /// A Postgres URL whose database may be used to create and drop another.
    pub pg_admin_url: String,
    /// Processors share every partition through leases (no `--owns`), as
    /// one autoscaled ECS service does.
    pub leased: bool,
    /// Extra environment for every child.
    pub env: Vec<(String, String)>,
}

/// Processors and gateways over a fresh Postgres database and Redis prefix.
pub struct Replicas {
    pub processors: Vec<Server>,
    pub gateways: Vec<Server>,
    /// The fresh database's URL (no password beyond what the admin URL holds).
    pub database_url: String,
    /// The fresh key prefix.
    pub prefix: String,
    admin_url: String,
    database: String,
    redis_url: String,
    /// What every child gets: the options' and the shared stream secret.
    child_env: Vec<(String, String)>,
}

impl Replicas {
    /// Creates the database, then starts the processors (the first creates
    /// the admin key and runs the migrations), then the gateways. On any
    /// failure what was started is stopped and cleaned up.
    pub async fn start(opts: &ReplicaOptions) -> anyhow::Result<Replicas> {
        use sea_orm::{ConnectionTrait, Database};
        if opts.processors == 0 || opts.gateways == 0 {
            bail!("at least one processor and one gateway");
        }
        if opts.processors > opts.partitions {
            bail!("{} processors need at least as many partitions (--partitions {})", opts.processors, opts.partitions);
        }
        let tag = format!("{}_{}", chrono::Utc::now().format("%Y%m%d%H%M%S"), std::process::id());
        let database = format!("cp_bench_{}_{tag}", opts.bench);
        let admin = Database::connect(&opts.pg_admin_url).await.context("connecting to the Postgres admin URL")?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {database}"))
            .await
            .context("creating the bench database")?;
        drop(admin);
        let (head, _) =
            opts.pg_admin_url.rsplit_once('/').ok_or_else(|| anyhow!("the Postgres admin URL has no database"))?;
        let database_url = format!("{head}/{database}");
        let prefix = format!("cpbench{}{}x{}", opts.bench, std::process::id(), rand::random::<u16>());
        let mut replicas = Replicas {
            processors: Vec::new(),
            gateways: Vec::new(),
            database_url,
            prefix,
            admin_url: opts.pg_admin_url.clone(),
            database,
            redis_url: opts.redis_url.clone(),
            child_env: Vec::new(),
        };
        match replicas.start_children(opts).await {
            Ok(()) => Ok(replicas),
            Err(e) => {
                replicas.stop().await;
                Err(e)
            }
        }
    }

    async fn start_children(&mut self, opts: &ReplicaOptions) -> anyhow::Result<()> {
        let secret = hex::encode(rand::random::<[u8; 32]>());
        self.child_env = vec![
            ("CARTPULSE_REDIS_URL".into(), opts.redis_url.clone()),
            ("CARTPULSE_REDIS__PREFIX".into(), self.prefix.clone()),
            ("CARTPULSE_REDIS__PARTITIONS".into(), opts.partitions.to_string()),
            ("CARTPULSE_STREAM__TOKEN_SECRET".into(), secret),
        ];
        self.child_env.extend(opts.env.iter().cloned());
        for (a, b) in owns_ranges(opts.partitions, opts.processors) {
            let owns = format!("{a}-{b}");
            let owns = (opts.processors > 1 && !opts.leased).then_some(owns.as_str());
            let p = self.spawn("processor", owns).await?;
            self.processors.push(p);
        }
        for _ in 0..opts.gateways {
            let g = self.spawn("gateway", None).await?;
            self.gateways.push(g);
        }
        Ok(())
    }

    /// Starts one more replica of `role` (`processor` or `gateway`) over the
    /// same database and prefix, ready when it returns; the first one started
    /// creates the admin key the others share.
    pub async fn spawn(&self, role: &str, owns: Option<&str>) -> anyhow::Result<Server> {
        let env: Vec<(&str, &str)> = self.child_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut extra = vec!["--role", role];
        if let Some(o) = owns {
            extra.extend(["--owns", o]);
        }
        let key = self.processors.first().or(self.gateways.first()).map(|s| s.key.expose_secret().to_owned());
        Server::start_with(&self.database_url, key.as_deref(), &extra, &env).await
    }

    /// The admin key every replica shares.
    pub fn key(&self) -> &SecretString {
        &self.processors[0].key
    }

    /// The gateways' base URLs.
    pub fn gateway_bases(&self) -> Vec<String> {
        self.gateways.iter().map(|g| g.base.clone()).collect()
    }

    /// Stops every child, drops the database and deletes the Redis keys.
    pub async fn stop(self) {
        for g in self.gateways {
            g.stop().await;
        }
        for p in self.processors {
            p.stop().await;
        }
        if let Ok(admin) = sea_orm::Database::connect(&self.admin_url).await {
            use sea_orm::ConnectionTrait;
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database);
            if let Err(e) = admin.execute_unprepared(&drop).await {
                eprintln!("  could not drop the database {}: {e}", self.database);
            }
        }
        if let Err(e) = delete_prefix(&self.redis_url, &self.prefix).await {
            eprintln!("  could not delete the Redis keys {}:*: {e}", self.prefix);
        }
    }
}

/// `processors` disjoint inclusive ranges covering `0..partitions`, as even as possible.
pub fn owns_ranges(partitions: usize, processors: usize) -> Vec<(usize, usize)> {
    let processors = processors.max(1);
    let mut out = Vec::with_capacity(processors);
    let mut start = 0;
    for i in 0..processors {
        let n = partitions / processors + usize::from(i < partitions % processors);
        out.push((start, start + n.max(1) - 1));
        start += n;
    }
    out
}

/// A connection to the bench's Redis: routed by slot when it is a Redis
/// Cluster (a plain connection to one node would answer MOVED for the other
/// nodes' keys).
pub async fn redis_conn(url: &str) -> anyhow::Result<crate::redis_link::Dedicated> {
    use crate::redis_link::Dedicated;
    let mut c = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut c).await?;
    if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
        let cluster = redis::cluster::ClusterClient::new(vec![url])?.get_async_connection().await?;
        return Ok(Dedicated::Cluster(cluster));
    }
    Ok(Dedicated::Single(c))
}

/// Deletes every Redis key under `prefix:`; on a Redis Cluster, on every
/// primary (found with CLUSTER NODES, reached on the address it announces
/// with the URL's scheme and no credentials: the benches run on loopback).
pub async fn delete_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    let mut c = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let nodes: Option<String> = redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await.ok();
    let primaries: Vec<String> = nodes
        .iter()
        .flat_map(|text| text.lines())
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 2 && f[2].contains("master") && !f[2].contains("fail"))
        .map(|f| f[1].split('@').next().unwrap_or(f[1]).to_owned())
        .collect();
    if primaries.is_empty() {
        return scan_delete(&mut c, prefix).await;
    }
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("redis");
    for addr in primaries {
        let mut node = redis::Client::open(format!("{scheme}://{addr}"))?.get_multiplexed_async_connection().await?;
        scan_delete(&mut node, prefix).await?;
    }
    Ok(())
}

/// SCAN one node for `prefix:*` and delete what it finds, one key per DEL
/// (a cluster node refuses a DEL whose keys are in different slots).
async fn scan_delete(c: &mut redis::aio::MultiplexedConnection, prefix: &str) -> anyhow::Result<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("DEL").arg(k).ignore();
            }
            let _: () = pipe.query_async(c).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_ranges_are_disjoint_and_cover_every_partition() {
        assert_eq!(owns_ranges(8, 1), vec![(0, 7)]);
        assert_eq!(owns_ranges(8, 2), vec![(0, 3), (4, 7)]);
        assert_eq!(owns_ranges(8, 3), vec![(0, 2), (3, 5), (6, 7)]);
        assert_eq!(owns_ranges(16, 4).last(), Some(&(12, 15)));
    }
}
