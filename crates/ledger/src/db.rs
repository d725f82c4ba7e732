//! The database handle: one type with a SQLite arm and a PostgreSQL arm.
//!
//! sqlx's `Any` driver cannot carry timestamps, uuids or booleans across both
//! databases, so every query is written once in SQL that both dialects accept
//! (`$1` placeholders work in SQLite too) and run through [`on_tx!`] or
//! [`on_db!`], which expand the same code once per backend so each arm is
//! type-checked against its own driver.
//!
//! SQLite gets one writer connection (writes queue in the pool instead of
//! spinning on `SQLITE_BUSY`) and a few readers; WAL lets readers run beside
//! the writer. Write transactions begin with `BEGIN IMMEDIATE` so a
//! transaction never has to upgrade its lock half-way.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Postgres, Sqlite};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Pool sizes and timeouts.
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// PostgreSQL pool size; SQLite readers.
    pub max_connections: u32,
    /// How long a caller may wait for a connection (or SQLite's write lock).
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions { max_connections: 16, acquire_timeout: Duration::from_secs(30) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("could not create the directory for the SQLite file: {0}")]
    CreateDir(#[source] std::io::Error),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A handle on the database, cheap to clone.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite { write: SqlitePool, read: SqlitePool },
    Postgres(PgPool),
}

/// A write transaction on either backend.
pub struct Tx {
    #[doc(hidden)]
    pub conn: TxConn,
    /// Journal entries written in this transaction, counted into the
    /// `kanpa_ledger_entries_posted_total` metric only if it commits.
    pub(crate) entries_posted: u64,
    /// The balance slot this transaction posts to on PostgreSQL (see
    /// [`crate::store::BALANCE_SLOTS`]): every entry of one transaction uses
    /// the same slot of each account, so a transaction holds at most one
    /// balance row per account however many entries it posts, and two
    /// transactions meet on a row only when they drew the same slot.
    pub(crate) balance_slot: i64,
}

#[doc(hidden)]
pub enum TxConn {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// Runs `$body` with `$c` bound to the transaction's connection of whichever
/// backend it is (`&mut SqliteConnection` or `&mut PgConnection`).
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match &mut ($tx).conn {
            $crate::db::TxConn::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::db::TxConn::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

/// Runs `$body` with `$p` bound to a read pool of whichever backend `$db` is.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite { read: $p, .. } => $body,
            $crate::db::Db::Postgres($p) => $body,
        }
    };
}

impl Db {
    /// Connects to `sqlite://PATH` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str, options: &DbOptions) -> Result<Db, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await?;
            return Ok(Db::Postgres(pool));
        }
        let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
            return Err(DbError::UnsupportedUrl(url.to_owned()));
        };
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(DbError::CreateDir)?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.acquire_timeout)
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(options.max_connections.clamp(1, 8))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.read_only(true))
            .await?;
        Ok(Db::Sqlite { write, read })
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies pending migrations. Safe to run from several processes at once
    /// on PostgreSQL (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite { write, .. } => SQLITE_MIGRATIONS.run(write).await?,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Applies pending migrations up to `version` and none after it: a
    /// database as an older release left it, for testing what a later
    /// migration does to the rows it finds.
    pub async fn migrate_to(&self, version: i64) -> Result<(), DbError> {
        match self {
            Db::Sqlite { write, .. } => SQLITE_MIGRATIONS.run_to(version, write).await?,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run_to(version, pool).await?,
        }
        Ok(())
    }

    /// True when the database answers and every migration this binary knows
    /// has been applied.
    pub async fn is_ready(&self) -> Result<bool, DbError> {
        let (migrator, applied): (&Migrator, Vec<i64>) = match self {
            Db::Sqlite { read, .. } => (
                &SQLITE_MIGRATIONS,
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(read).await?,
            ),
            Db::Postgres(pool) => (
                &POSTGRES_MIGRATIONS,
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await?,
            ),
        };
        Ok(migrator.iter().all(|m| applied.contains(&m.version)))
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Db::Sqlite { write, .. } => Ok(Tx::new(TxConn::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?))),
            Db::Postgres(pool) => Ok(Tx::new(TxConn::Postgres(pool.begin().await?))),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// The balance slot of a new PostgreSQL transaction: the process's
/// transactions take the slots in turn (from a random one, so that processes
/// started together do not move in step), so transactions under way at the
/// same time in one process, fewer than [`crate::store::BALANCE_SLOTS`],
/// never draw the same slot and never wait on each other's balance rows.
fn next_balance_slot() -> i64 {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU64> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| std::sync::atomic::AtomicU64::new(rand::random()));
    (next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % crate::store::BALANCE_SLOTS) as i64
}

impl Tx {
    fn new(conn: TxConn) -> Tx {
        let balance_slot = match conn {
            TxConn::Sqlite(_) => 0,
            TxConn::Postgres(_) => next_balance_slot(),
        };
        Tx { conn, entries_posted: 0, balance_slot }
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            TxConn::Sqlite(_) => Backend::Sqlite,
            TxConn::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.conn {
            TxConn::Sqlite(t) => t.commit().await?,
            TxConn::Postgres(t) => t.commit().await?,
        }
        metrics::counter!("kanpa_ledger_entries_posted_total").increment(self.entries_posted);
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.conn {
            TxConn::Sqlite(t) => t.rollback().await,
            TxConn::Postgres(t) => t.rollback().await,
        }
    }
}

/// True for errors worth retrying the whole transaction for: PostgreSQL
/// serialization failures and deadlocks, SQLite busy/locked.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01" | "5" | "6" | "517" | "262"))
        }
        sqlx::Error::PoolTimedOut => true,
        _ => false,
    }
}
