//! The test application: the real server on port 0 against a fresh database
//! of either backend.

use std::net::SocketAddr;
use std::path::PathBuf;

use kanpa_ledger::Db;
use kanpa_server::app::Server;
use kanpa_server::config::{Config, Overrides, Secret};
use kanpa_server::workers::Extras;
pub use kanpa_testkit::backends::{FreshDatabase, TestBackend};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generates a `sqlite` and a `postgres` test for each named scenario, an
/// `async fn NAME(backend: TestBackend)` in the same module.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::harness::TestBackend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::harness::TestBackend::Postgres).await
            }
        }
    )*};
}

/// What points a server's configuration at the fake Stripe: the Stripe
/// gateway, its API base and its webhook secret.
pub fn on_fake_stripe(
    stripe: &kanpa_testkit::stripe::FakeStripe,
) -> impl Fn(&mut Config) + Clone + Send + Sync + 'static {
    let (api_base, secret) = (stripe.api_base(), stripe.webhook_secret());
    move |c: &mut Config| {
        c.payments.gateway = kanpa_server::config::GatewayKind::Stripe;
        c.stripe.secret_key = Secret::new("sk_test_kanpa");
        c.stripe.api_base = api_base.clone();
        c.stripe.webhook_secrets = Secret::new(&secret);
    }
}

/// A migrated, empty database and the guard that removes it.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _fresh: FreshDatabase,
}

/// Polls `check` every 20 ms until it returns true or `seconds` pass.
pub async fn eventually<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

impl TestDb {
    /// `None` when the backend is unavailable and not required (already
    /// reported loudly).
    pub async fn new(backend: TestBackend) -> Option<TestDb> {
        Self::open(backend, None).await
    }

    /// An empty database migrated up to `version` only, as an older release
    /// left it.
    pub async fn at_migration(backend: TestBackend, version: i64) -> Option<TestDb> {
        Self::open(backend, Some(version)).await
    }

    async fn open(backend: TestBackend, up_to: Option<i64>) -> Option<TestDb> {
        let fresh = FreshDatabase::new(backend)?;
        let url = fresh.url();
        let db = Db::connect(&url, &kanpa_ledger::DbOptions { max_connections: 8, ..Default::default() })
            .await
            .expect("connect to the test database");
        match up_to {
            None => db.migrate().await,
            Some(version) => db.migrate_to(version).await,
        }
        .expect("migrate the test database");
        Some(TestDb { db, url, _fresh: fresh })
    }
}

pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::load_env("test", &Overrides::default()).expect("test configuration loads");
    config.database.url = Secret::new(database_url);
    config
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: Db,
    pub database_url: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _database: TestDb,
    _outbox: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn(backend: TestBackend) -> Option<TestApp> {
        TestApp::spawn_with(backend, Extras::default(), |_| {}).await
    }

    /// Spawns with handlers or a mailer plugged in and the configuration
    /// adjusted by `configure`.
    pub async fn spawn_with(
        backend: TestBackend,
        extras: Extras,
        configure: impl FnOnce(&mut Config),
    ) -> Option<TestApp> {
        kanpa_server::install_crypto_provider();
        let database = TestDb::new(backend).await?;
        let mut config = test_config(&database.url);
        // The file mailer writes into the test's own directory, not the tree.
        let outbox = tempfile::tempdir().expect("a temporary outbox");
        config.mail.file_dir = outbox.path().display().to_string();
        configure(&mut config);
        let server = Server::build_with(config, extras).await.expect("server builds");
        let addr = server.local_addr();
        let db = server.db().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        let client =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http client");
        let database_url = database.url.clone();
        Some(TestApp {
            addr,
            db,
            database_url,
            client,
            shutdown: Some(tx),
            task: Some(task),
            _database: database,
            _outbox: outbox,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request reaches the server")
    }

    /// Stops the server as SIGTERM would and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task joins").expect("server stops cleanly");
        }
    }
}

/// The `kanpa` binary built for these tests.
pub fn kanpa_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kanpa"))
}

/// Runs `kanpa ARGS` against `database_url`; returns (exit code, stdout, stderr).
pub fn run_kanpa(database_url: &str, args: &[&str]) -> (i32, String, String) {
    run_kanpa_with(database_url, &[], args)
}

/// As [`run_kanpa`], with more environment variables.
pub fn run_kanpa_with(database_url: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(kanpa_bin())
        .args(args)
        .env("KANPA_ENV", "test")
        .env("KANPA__DATABASE__URL", database_url)
        .envs(env.iter().copied())
        .output()
        .expect("kanpa runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs raw SQL on the write side, as someone with database access would;
/// returns rows affected.
pub async fn exec_raw(db: &Db, sql: &str) -> Result<u64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db {
        Db::Sqlite { write, .. } => Ok(sqlx::query(sql).execute(write).await?.rows_affected()),
        Db::Postgres(pool) => Ok(sqlx::query(sql).execute(pool).await?.rows_affected()),
    }
}
