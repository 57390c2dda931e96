//! The `gatehouse` binary as an operator runs it: what reaches stdout and stderr, which a log
//! collector reads as one stream.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{pod_review, Client, Proto};
use serde_json::Value;

/// Generous: a loaded CI machine may take a while to start a debug binary.
const WAIT: Duration = Duration::from_secs(60);

/// Starts `gatehouse serve` with `args`, `TMPDIR` in `tmp` (where it writes the CA) and the
/// default log level; stdout lines arrive on the returned channel.
fn spawn(args: &[&str], tmp: &std::path::Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("serve")
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the gatehouse binary");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits (bounded) for the process to exit; returns whether it succeeded and its stderr.
fn wait_for_exit(child: &mut Child) -> (bool, String) {
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gatehouse did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("read stderr");
    }
    (status.success(), stderr)
}

/// Parses a line as a JSON object, failing the test with the line otherwise.
fn json_line(line: &str, stream: &str) -> Value {
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{stream} line is not JSON ({e}): {line:?}"));
    assert!(
        value.is_object(),
        "{stream} line is not a JSON object: {line}"
    );
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_keeps_every_output_line_json_with_the_ca_as_fields() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut child, lines) = spawn(
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
        tmp.path(),
    );
    let mut seen = Vec::new();
    // The banner is an event like the others; everything before it must be JSON too.
    let banner = loop {
        let line = lines.recv_timeout(WAIT).unwrap_or_else(|e| {
            panic!("no banner within {WAIT:?} ({e}); stdout so far: {seen:#?}")
        });
        let event = json_line(&line, "stdout");
        seen.push(line);
        if event["message"] == "gatehouse listening" {
            break event;
        }
    };
    assert_eq!(banner["level"], "INFO");
    let listen = banner["listen"].as_str().expect("listen field");
    let addr: SocketAddr = listen
        .strip_prefix("https://")
        .expect("https")
        .parse()
        .expect("an address");
    assert_ne!(addr.port(), 0, "the bound port, not the configured :0");
    let ca_pem = banner["ca_pem"].as_str().expect("ca_pem field");
    assert!(
        ca_pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "{ca_pem}"
    );
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(banner["ca_bundle"].as_str().expect("ca_bundle field"))
        .expect("caBundle is base64");
    assert_eq!(bundle, ca_pem.as_bytes());
    let ca_file = banner["ca_file"].as_str().expect("ca_file field");
    assert_eq!(
        std::fs::read_to_string(ca_file).expect("the CA file"),
        ca_pem
    );

    // The CA in the event is the one the server uses, and requests log JSON too.
    {
        let mut client = Client::connect(addr, ca_pem, Proto::Http2).await;
        assert_eq!(client.get("/healthz").await.status, 200);
        let answer = client
            .post_json(
                "/validate",
                pod_review("admission.k8s.io/v1", "u1", "default", &["nginx"]),
            )
            .await;
        assert_eq!(answer.status, 200);
    }

    // SIGTERM drains and stops; its log lines are read to the end of stdout.
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let (ok, stderr) = wait_for_exit(&mut child);
    assert!(ok, "exit status; stderr: {stderr}");
    let rest: Vec<String> = lines.iter().collect();
    for line in &rest {
        json_line(line, "stdout");
    }
    for line in stderr.lines() {
        json_line(line, "stderr");
    }
    let messages: Vec<String> = seen
        .iter()
        .chain(&rest)
        .map(|l| {
            json_line(l, "stdout")["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(messages.iter().any(|m| m == "stopped"), "{messages:?}");
}

#[test]
fn json_log_format_reports_a_startup_failure_as_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing.yaml");
    let (mut child, lines) = spawn(
        &[
            "--config",
            missing.to_str().expect("utf-8 path"),
            "--log-format",
            "json",
        ],
        tmp.path(),
    );
    let (ok, stderr) = wait_for_exit(&mut child);
    assert!(!ok, "a missing config file must stop startup");
    let events: Vec<Value> = lines
        .iter()
        .map(|l| json_line(&l, "stdout"))
        .chain(stderr.lines().map(|l| json_line(l, "stderr")))
        .collect();
    assert!(
        events.iter().any(|e| e["level"] == "ERROR"
            && e["error"]
                .as_str()
                .is_some_and(|m| m.contains("missing.yaml"))),
        "{events:?}"
    );
}
