//! Throw-away PostgreSQL clusters started from the server binaries on this
//! machine (`initdb`, `pg_ctl`), one per test process, one database per test.
//!
//! As root the binaries run as the `postgres` user through `runuser`. A
//! watchdog process stops the cluster and removes its directory when the
//! process that started it exits, so no test run leaves a server behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// How the cluster treats durability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync off: fast, for tests.
    Scratch,
    /// PostgreSQL's defaults, for benchmarks.
    Durable,
}

pub struct PgCluster {
    base: PathBuf,
    port: u16,
    run_as_postgres: bool,
}

/// Finds a PostgreSQL program in Debian's versioned directories (newest
/// first), else on PATH.
pub fn pg_bin(name: &str) -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    if let Some(newest) = versions.pop() {
        return Some(newest);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The message printed when PostgreSQL runs are skipped or required but
/// impossible.
pub const INSTALL_HINT: &str =
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install them with `apt-get install -y postgresql`";

impl PgCluster {
    /// Starts a new cluster on a free loopback port.
    pub fn start(durability: Durability) -> anyhow::Result<PgCluster> {
        let initdb = pg_bin("initdb").context(INSTALL_HINT)?;
        let pg_ctl = pg_bin("pg_ctl").context(INSTALL_HINT)?;
        let run_as_postgres = unsafe { libc::geteuid() } == 0;
        let base = tempfile::Builder::new().prefix("kanpa-pg-").tempdir()?.keep();
        if run_as_postgres {
            let status = Command::new("chown").arg("postgres:").arg(&base).status()?;
            if !status.success() {
                bail!("could not hand {} to the postgres user", base.display());
            }
        }
        let cluster = PgCluster { base, port: 0, run_as_postgres };
        let data = cluster.data_dir();
        cluster.run(
            &initdb,
            &["-D", path_str(&data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
        )?;
        let mut settings = vec![
            "-c listen_addresses=127.0.0.1".to_owned(),
            format!("-k {}", path_str(&cluster.base)),
            "-c max_connections=400".to_owned(),
            "-c shared_buffers=128MB".to_owned(),
        ];
        if durability == Durability::Scratch {
            settings.push("-c fsync=off -c synchronous_commit=off -c full_page_writes=off".to_owned());
        }
        // Extra server settings for profiling a run, e.g.
        // `-c shared_preload_libraries=pg_stat_statements`.
        if let Ok(extra) = std::env::var("KANPA_PG_SETTINGS") {
            settings.push(extra);
        }
        // A port may be taken between choosing and binding it: try a few.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let options = format!("-p {port} {}", settings.join(" "));
            let log = cluster.base.join("server.log");
            match cluster.run(&pg_ctl, &["-D", path_str(&data), "-l", path_str(&log), "-o", &options, "-w", "start"]) {
                Ok(()) => {
                    let cluster = PgCluster { port, ..cluster };
                    cluster.spawn_watchdog(&pg_ctl)?;
                    return Ok(cluster);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    /// The cluster shared by every test in this process, started on first use.
    pub fn shared() -> Result<&'static PgCluster, String> {
        static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| PgCluster::start(Durability::Scratch).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's main process (from `postmaster.pid`), for measuring
    /// what the cluster's processes use.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pid_file = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        pid_file.lines().next()?.trim().parse().ok()
    }

    /// A connection URL for database `name` as the superuser.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs SQL through psql against the `postgres` database.
    pub fn psql(&self, sql: &str) -> anyhow::Result<()> {
        let psql = pg_bin("psql").context("psql not found: install postgresql-client")?;
        let output = Command::new(psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()?;
        if !output.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }

    /// Creates an empty database that is dropped when the guard is.
    pub fn create_database(&'static self) -> anyhow::Result<PgDatabase> {
        let name = format!("kanpa_{}", uuid::Uuid::new_v4().simple());
        self.psql(&format!("CREATE DATABASE {name}"))?;
        Ok(PgDatabase { cluster: self, name })
    }

    fn run(&self, program: &Path, args: &[&str]) -> anyhow::Result<()> {
        let mut command = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let output = command.args(args).stdin(Stdio::null()).output()?;
        if !output.status.success() {
            bail!(
                "{} failed: {}{}",
                program.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn spawn_watchdog(&self, pg_ctl: &Path) -> anyhow::Result<()> {
        let runner = if self.run_as_postgres { "runuser -u postgres -- " } else { "" };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {runner}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{base}'",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = self.data_dir().display(),
            base = self.base.display(),
        );
        let mut command = Command::new("sh");
        command.arg("-c").arg(script).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // A session of its own, so a Ctrl-C aimed at the tests does not stop
        // the watchdog before it has cleaned up.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        command.spawn()?;
        Ok(())
    }
}

/// A database in the shared cluster, dropped with this guard.
pub struct PgDatabase {
    cluster: &'static PgCluster,
    name: String,
}

impl PgDatabase {
    pub fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Err(e) = self.cluster.psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("warning: could not drop test database {}: {e:#}", self.name);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}
