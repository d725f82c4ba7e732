//! Fresh, migrated databases to measure against.

use kanpa_ledger::{Db, DbOptions, on_db};
use kanpa_testkit::postgres::PgCluster;

pub struct Target {
    pub db: Db,
    pub url: String,
    _guard: Guard,
}

enum Guard {
    Sqlite(#[expect(dead_code, reason = "held for its Drop")] tempfile::TempDir),
    Postgres(#[expect(dead_code, reason = "held for its Drop")] kanpa_testkit::postgres::PgDatabase),
}

/// A throw-away durable PostgreSQL cluster for the "postgres" backend,
/// kept for the rest of the run; none for other backends.
pub fn cluster_for(backend: &str) -> anyhow::Result<Option<&'static PgCluster>> {
    if backend != "postgres" {
        return Ok(None);
    }
    let cluster = PgCluster::start(kanpa_testkit::postgres::Durability::Durable)?;
    Ok(Some(Box::leak(Box::new(cluster))))
}

/// An empty, migrated database on `backend` ("sqlite" in a temporary
/// directory, "postgres" in `cluster`).
pub async fn fresh(backend: &str, cluster: Option<&'static PgCluster>) -> anyhow::Result<Target> {
    let options = DbOptions { max_connections: 40, ..DbOptions::default() };
    let (url, guard) = match backend {
        "sqlite" => {
            let dir = tempfile::tempdir()?;
            (format!("sqlite://{}", dir.path().join("bench.db").display()), Guard::Sqlite(dir))
        }
        "postgres" => {
            let cluster = cluster.ok_or_else(|| anyhow::anyhow!("no PostgreSQL cluster"))?;
            let db = cluster.create_database()?;
            (db.url(), Guard::Postgres(db))
        }
        other => anyhow::bail!("unknown backend {other}"),
    };
    let db = Db::connect(&url, &options).await?;
    db.migrate().await?;
    Ok(Target { db, url, _guard: guard })
}

/// Jobs still to apply Stripe events (the inbox's kind, not given up on):
/// none left means every event stored was applied, as each job is deleted
/// in the transaction applying its events. Benches poll this while the
/// server works: counting pending events instead scans the whole inbox
/// (hundreds of MB after a run), which took CPU from the server just as it
/// worked through the last of the backlog.
pub async fn event_jobs_left(db: &Db) -> anyhow::Result<i64> {
    let sql = "SELECT COUNT(*) FROM jobs WHERE kind = $1 AND state <> 'dead'";
    Ok(on_db!(db, p => sqlx::query_scalar(sql).bind(kanpa_messaging::inbox::JOB_KIND).fetch_one(p).await?))
}

/// Events the inbox has stored but not applied: a scan of the whole inbox,
/// for checking once the clock has stopped that no job was missed.
pub async fn events_pending(db: &Db) -> anyhow::Result<i64> {
    let sql = "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'pending'";
    Ok(on_db!(db, p => sqlx::query_scalar(sql).fetch_one(p).await?))
}

/// Lets the database settle before a clock starts: on PostgreSQL a
/// checkpoint, so what the run before left dirty is not written during the
/// measurement; then a pause for the disk to finish with the files dropped
/// before. Without it the floor, measured just after a renewal run, read
/// 5-21 % lower than on the same cluster settled, flattering every ratio to
/// it.
pub async fn settle(db: &Db) -> anyhow::Result<()> {
    if let Db::Postgres(pool) = db {
        sqlx::query("CHECKPOINT").execute(pool).await?;
    }
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    Ok(())
}

/// A new directory for the emails a server writes as files, removed when
/// dropped: under `parent` when given, else under /dev/shm where it exists,
/// else the system's temporary directory. On a disk whose ext4 has no
/// journal, creating a file scans past every inode deleted in the last
/// minutes, such as a previous run's emails: a third of the server's CPU in
/// the renewal bench, varying with what ran before.
pub fn mail_dir(parent: Option<&std::path::Path>) -> anyhow::Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    let parent = match parent {
        Some(parent) => parent.to_path_buf(),
        None if shm.is_dir() => shm.to_path_buf(),
        None => std::env::temp_dir(),
    };
    Ok(tempfile::Builder::new().prefix("kanpa-bench-mail-").tempdir_in(parent)?)
}
