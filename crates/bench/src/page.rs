//! The campaign page benchmark: `/c/{slug}` of the seeded demo drive served
//! by kanpa, against nginx serving the same rendered HTML as a static file
//! (the floor), both under `wrk` on loopback.
//!
//! kanpa runs in this process with the workers idle; nginx runs with a
//! generated minimal configuration (2 workers, no access log) on a free
//! loopback port. Both are driven with the same `wrk` command and must
//! answer every request 200.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kanpa_campaigns::demo::{self, DEMO_CAMPAIGN};
use kanpa_ledger::Timestamp;
use kanpa_server::app::Server;
use kanpa_server::config::{Config, Overrides, Secret};
use kanpa_testkit::postgres::PgCluster;

use crate::target::{cluster_for, fresh};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds of load per run (wrk -d).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Open connections (wrk -c).
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Load-generating threads (wrk -t).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
}

/// What one `wrk` run printed.
#[derive(Clone, Copy, Debug)]
struct Load {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// "1.23ms", "850.00us", "1.02s" in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn parse_wrk(output: &str) -> anyhow::Result<Load> {
    let mut rate = None;
    let (mut p50, mut p99) = (None, None);
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => rate = n.parse::<f64>().ok(),
            ["50%", d] => p50 = duration_ms(d),
            ["99%", d] => p99 = duration_ms(d),
            ["Non-2xx", ..] => anyhow::bail!("some answers were not 2xx:\n{output}"),
            ["Socket", "errors:", ..] => anyhow::bail!("socket errors:\n{output}"),
            _ => {}
        }
    }
    match (rate, p50, p99) {
        (Some(requests_per_second), Some(p50_ms), Some(p99_ms)) => Ok(Load { requests_per_second, p50_ms, p99_ms }),
        _ => anyhow::bail!("could not read wrk's output:\n{output}"),
    }
}

/// Runs wrk against `url` (blocking the calling thread, not the runtime).
async fn wrk(url: &str, args: &Args) -> anyhow::Result<Load> {
    let wrk = program("wrk").ok_or_else(|| anyhow::anyhow!("wrk not found: apt-get install wrk"))?;
    let command = vec![
        format!("-t{}", args.threads),
        format!("-c{}", args.connections),
        format!("-d{}s", args.seconds),
        "--latency".to_owned(),
        url.to_owned(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new(wrk).args(command).output()).await??;
    anyhow::ensure!(output.status.success(), "wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    parse_wrk(&String::from_utf8_lossy(&output.stdout))
}

/// nginx serving one file at `path` on a free port; stopped when dropped.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

async fn nginx(html: &str, path: &str) -> anyhow::Result<Nginx> {
    let binary = program("nginx").ok_or_else(|| anyhow::anyhow!("nginx not found: apt-get install nginx"))?;
    let dir = tempfile::Builder::new().prefix("kanpa-bench-nginx-").tempdir()?;
    // nginx's workers drop root's rights: they must be able to read the page.
    set_mode(dir.path(), 0o755)?;
    let page = dir.path().join("page.html");
    std::fs::write(&page, html)?;
    set_mode(&page, 0o644)?;
    let port = free_port()?;
    let root = dir.path().display();
    let config = format!(
        "worker_processes 2;
daemon off;
master_process on;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = {path} {{
            default_type \"text/html; charset=utf-8\";
            try_files /page.html =404;
        }}
    }}
}}
"
    );
    let config_path = dir.path().join("nginx.conf");
    std::fs::write(&config_path, config)?;
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let nginx = Nginx { child, port, _dir: dir };
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}{path}");
    for _ in 0..100 {
        if let Ok(res) = client.get(&url).send().await {
            anyhow::ensure!(res.status() == 200, "nginx answered {}", res.status());
            anyhow::ensure!(res.text().await? == html, "nginx serves another page");
            return Ok(nginx);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("nginx did not start on port {port}")
}

fn config(url: &str) -> anyhow::Result<Config> {
    let mut config = Config::load_env("development", &Overrides::default())?;
    config.database.url = Secret::new(url);
    config.database.max_connections = 40;
    config.server.bind = "127.0.0.1:0".parse()?;
    config.log.filter = "error".into();
    Ok(config)
}

struct Row {
    backend: String,
    kanpa: Load,
    nginx: Load,
    bytes: usize,
}

async fn measure(backend: &str, cluster: Option<&'static PgCluster>, args: &Args) -> anyhow::Result<Row> {
    let target = fresh(backend, cluster).await?;
    demo::seed(&target.db, Timestamp::now()).await?;
    let server = Server::build(config(&target.url)?).await?;
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let path = format!("/c/{DEMO_CAMPAIGN}");
    let url = format!("http://{addr}{path}");
    let res = reqwest::get(&url).await?;
    anyhow::ensure!(res.status() == 200, "kanpa answered {}", res.status());
    let html = res.text().await?;
    anyhow::ensure!(html.contains("7職種"), "not the campaign page");

    let floor = nginx(&html, &path).await?;
    eprintln!("{backend}: nginx serving the {} byte page for {} s", html.len(), args.seconds);
    let nginx_load = wrk(&format!("http://127.0.0.1:{}{path}", floor.port), args).await?;
    drop(floor);
    eprintln!("{backend}: kanpa for {} s", args.seconds);
    let kanpa_load = wrk(&url, args).await?;

    let _ = stop.send(());
    running.await??;
    Ok(Row { backend: backend.to_owned(), kanpa: kanpa_load, nginx: nginx_load, bytes: html.len() })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for backend in &args.backends {
        rows.push(measure(backend, cluster_for(backend)?, &args).await?);
    }
    println!(
        "\nCampaign page /c/{DEMO_CAMPAIGN}: wrk -t{} -c{} -d{}s --latency on loopback\n",
        args.threads, args.connections, args.seconds
    );
    println!("| backend    | server | page bytes | requests/s | p50 ms | p99 ms | kanpa / nginx |");
    println!("|------------|--------|-----------:|-----------:|-------:|-------:|--------------:|");
    for row in &rows {
        let name = if row.backend == "postgres" { "PostgreSQL" } else { "SQLite" };
        let ratio = row.kanpa.requests_per_second / row.nginx.requests_per_second;
        for (server, load, ratio) in [("nginx", row.nginx, String::new()), ("kanpa", row.kanpa, format!("{ratio:.2}"))]
        {
            println!(
                "| {name:<10} | {server:<6} | {:>10} | {:>10.0} | {:>6.2} | {:>6.2} | {ratio:>13} |",
                row.bytes, load.requests_per_second, load.p50_ms, load.p99_ms
            );
        }
    }
    println!("\nTargets: kanpa at least 0.50 of nginx's requests/s, kanpa p99 under 20 ms.");
    for row in &rows {
        let ratio = row.kanpa.requests_per_second / row.nginx.requests_per_second;
        let met = |ok: bool| if ok { "met" } else { "NOT MET" };
        println!(
            "{}: ratio {ratio:.2} ({}), p99 {:.2} ms ({})",
            row.backend,
            met(ratio >= 0.5),
            row.kanpa.p99_ms,
            met(row.kanpa.p99_ms < 20.0)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_wrk_prints() {
        let output = "Running 20s test @ http://127.0.0.1:8080/c/x
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  500.00us  20.00ms   90.00%
  Latency Distribution
     50%  850.00us
     75%    1.20ms
     90%    2.00ms
     99%    4.50ms
  100000 requests in 20.00s, 1.00GB read
Requests/sec:   5000.00
Transfer/sec:     50.00MB
";
        let load = parse_wrk(output).unwrap();
        assert_eq!(load.requests_per_second, 5000.0);
        assert!((load.p50_ms - 0.85).abs() < 1e-9);
        assert_eq!(load.p99_ms, 4.5);
        assert!(parse_wrk(&format!("{output}  Non-2xx or 3xx responses: 3\n")).is_err());
    }
}
