//! The `kanpa` binary as an operator runs it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::kanpa_bin;

/// Runs a command that must exit by itself; kills it and fails the test if
/// it is still running after 30 s (a start-up check that let it serve).
fn output_within_30s(command: &mut Command) -> std::process::Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("kanpa kept running: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `kanpa serve` with nothing configured in `dir`, on a free loopback port,
/// its logs (standard error) captured when `capture_logs`.
fn serve_in(dir: &std::path::Path, env: &[(&str, &str)], capture_logs: bool) -> (std::process::Child, u16) {
    let port = free_port();
    let child = Command::new(kanpa_bin())
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .env_remove("KANPA_ENV")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(if capture_logs { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .unwrap();
    (child, port)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn help_lists_every_command() {
    let output = Command::new(kanpa_bin()).arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for command in ["serve", "migrate", "ledger", "healthcheck"] {
        assert!(text.contains(command), "{text}");
    }
}

#[test]
fn a_bad_setting_stops_start_up_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = output_within_30s(
        Command::new(kanpa_bin()).arg("serve").current_dir(dir.path()).env("KANPA__SERVER__BIND", "not-an-address"),
    );
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("server.bind"), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing is created on a bad start");
}

#[test]
fn production_refuses_the_sandbox_gateway_and_missing_keys() {
    let run = |extra: &[(&str, &str)]| {
        let mut command = Command::new(kanpa_bin());
        command.args(["serve", "--bind", "127.0.0.1:0"]).env("KANPA_ENV", "production");
        for (k, v) in extra {
            command.env(k, v);
        }
        let output = output_within_30s(&mut command);
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (code, err) = run(&[("KANPA__PAYMENTS__GATEWAY", "sandbox")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("payments.gateway"), "{err}");
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("stripe.secret_key"), "{err}");
}

/// `kanpa serve` in an empty directory with nothing configured creates its
/// SQLite database, answers /healthz, and stops cleanly on SIGTERM.
#[test]
fn serve_needs_no_configuration_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = serve_in(dir.path(), &[], false);
    let started = Instant::now();
    let healthy = loop {
        let probe = Command::new(kanpa_bin())
            .args(["healthcheck", "--addr", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if probe.success() {
            break true;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(healthy, "serve did not answer /healthz");
    assert!(dir.path().join("data/kanpa.db").is_file());

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// With JSON logs, each request leaves one access-log line carrying the
/// request id the client sent (or the one the server made up).
#[test]
fn every_request_is_logged_with_its_request_id() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = serve_in(dir.path(), &[("KANPA__LOG__FORMAT", "json")], true);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            break stream;
        }
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nx-request-id: req-7f3a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.to_ascii_lowercase().contains("x-request-id: req-7f3a"), "{answer}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let mut logs = String::new();
    child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    assert!(child.wait().unwrap().success());
    let line = logs
        .lines()
        .find(|l| l.contains("finished processing request"))
        .unwrap_or_else(|| panic!("an access-log line in: {logs}"));
    let json: serde_json::Value = serde_json::from_str(line).expect("JSON logs");
    assert_eq!(json["span"]["request_id"], "req-7f3a", "{line}");
    assert_eq!(json["status"], 200);
}
