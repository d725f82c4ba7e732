//! Which database backends a test run must cover.
//!
//! `KANPA_TEST_BACKENDS=sqlite,postgres` (as CI sets it) makes a missing
//! backend a failure. Unset, SQLite always runs and PostgreSQL runs when its
//! server binaries are on this machine, and is skipped with a loud notice
//! otherwise, so a fresh machine's test command still passes.

use crate::postgres::{INSTALL_HINT, PgCluster, PgDatabase};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// True when `KANPA_TEST_BACKENDS` names `backend`.
pub fn required(backend: TestBackend) -> bool {
    let name = match backend {
        TestBackend::Sqlite => "sqlite",
        TestBackend::Postgres => "postgres",
    };
    std::env::var("KANPA_TEST_BACKENDS")
        .map(|v| v.split(',').any(|b| b.trim().eq_ignore_ascii_case(name)))
        .unwrap_or(false)
}

/// A fresh, empty database of either backend, removed when dropped.
pub enum FreshDatabase {
    Sqlite { dir: tempfile::TempDir },
    Postgres(PgDatabase),
}

impl FreshDatabase {
    /// A new database, or `None` when the backend is unavailable and not
    /// required (after printing why). Panics when it is required.
    pub fn new(backend: TestBackend) -> Option<FreshDatabase> {
        match backend {
            TestBackend::Sqlite => {
                Some(FreshDatabase::Sqlite { dir: tempfile::tempdir().expect("temporary directory") })
            }
            TestBackend::Postgres => match PgCluster::shared() {
                Ok(cluster) => {
                    Some(FreshDatabase::Postgres(cluster.create_database().expect("create a test database")))
                }
                Err(why) if required(TestBackend::Postgres) => {
                    panic!("KANPA_TEST_BACKENDS requires postgres, but it cannot start: {why}")
                }
                Err(why) => {
                    eprintln!(
                        "\n!!!!!!!! SKIPPED on PostgreSQL !!!!!!!!\n{INSTALL_HINT}\n({why})\n\
                         Set KANPA_TEST_BACKENDS=sqlite,postgres to make this a failure.\n"
                    );
                    None
                }
            },
        }
    }

    pub fn url(&self) -> String {
        match self {
            FreshDatabase::Sqlite { dir } => {
                format!("sqlite://{}", dir.path().join("kanpa.db").display())
            }
            FreshDatabase::Postgres(db) => db.url(),
        }
    }
}
