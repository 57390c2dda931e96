//! The access log of the real server, through the buffered writer installed as in `main`: one
//! JSON line per request over HTTP/1.1 and h2, in order; a stalled output never holds up an
//! answer, and what it could not hold is counted and reported once writing resumes; an
//! `/authenticate` line names the user, never the token.

mod common;
#[path = "common/github_mock.rs"]
mod github_mock;

use std::future::Future;
use std::io::{self, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use common::{Proto, TestServer, BOTH};
use gatehouse::config::LogFormat;
use gatehouse::logging::{self, BufferLimits};
use github_mock::{MockGithub, MockUser};
use tracing_subscriber::EnvFilter;

const POD: &[u8] = include_bytes!("data/pod-admission-review.json");
const WAIT: Duration = Duration::from_secs(60);

/// Collects what the writer thread writes; while closed, a write waits (a stalled disk or pipe).
#[derive(Clone, Default)]
struct Output {
    bytes: Arc<Mutex<Vec<u8>>>,
    closed: Arc<(Mutex<bool>, Condvar)>,
}

impl Output {
    fn set_closed(&self, closed: bool) {
        *self.closed.0.lock().expect("gate") = closed;
        self.closed.1.notify_all();
    }

    /// Takes what was written so far.
    fn take_text(&self) -> String {
        let bytes = std::mem::take(&mut *self.bytes.lock().expect("output"));
        String::from_utf8(bytes).expect("utf-8")
    }

    /// Takes what was written so far, as lines.
    fn take_lines(&self) -> Vec<serde_json::Value> {
        self.take_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (lock, cv) = &*self.closed;
        drop(
            cv.wait_while(lock.lock().expect("gate"), |closed| *closed)
                .expect("gate"),
        );
        self.bytes.lock().expect("output").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Room for about 20 access lines unwritten.
const MAX_BUFFERED: usize = 8 * 1024;

/// The process-wide log, installed once; tests take turns through the lock.
fn output() -> &'static Output {
    static OUTPUT: OnceLock<Output> = OnceLock::new();
    OUTPUT.get_or_init(|| {
        let output = Output::default();
        let guard = logging::install(
            LogFormat::Json,
            output.clone(),
            false,
            EnvFilter::new("info"),
            BufferLimits {
                flush_bytes: 1024,
                flush_interval: Duration::from_millis(20),
                max_buffered: MAX_BUFFERED,
            },
        )
        .expect("install the log");
        // Lives as long as the test process, like main's.
        std::mem::forget(guard);
        output
    })
}

/// One test at a time: they share the process-wide log.
static TURN: Mutex<()> = Mutex::new(());

/// Runs `test` on its own runtime and thread, one test at a time, and fails (rather than hangs)
/// if it does not finish in [`WAIT`]: a log that blocked its callers would block the server's
/// worker threads, and with them any time-out inside the runtime.
fn serially(test: impl Future<Output = ()> + Send + 'static) {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(test);
        let _ = done.send(());
    });
    match finished.recv_timeout(WAIT) {
        Ok(()) => {}
        Err(RecvTimeoutError::Timeout) => {
            // Let the other test run on an output that writes again.
            output().set_closed(false);
            panic!("requests waited for the log output")
        }
        Err(RecvTimeoutError::Disconnected) => panic!("the test failed (its panic is above)"),
    }
}

fn access_lines(lines: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    lines.iter().filter(|l| l["message"] == "request").collect()
}

#[test]
fn one_json_line_per_request_in_order_on_both_protocols() {
    serially(in_order());
}

async fn in_order() {
    let output = output();
    let server = TestServer::start("").await;
    logging::flush();
    output.take_lines();
    let dropped_before = logging::dropped_lines();
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for n in 0..30 {
            let answer = client
                .post_json(&format!("/validate?timeout=10s&n={n}"), POD)
                .await;
            assert_eq!(answer.status, 200);
        }
        assert_eq!(client.get("/nowhere").await.status, 404);
    }
    logging::flush();
    let lines = output.take_lines();
    let access = access_lines(&lines);
    let uris: Vec<String> = access
        .iter()
        .map(|l| {
            l["uri"]
                .as_str()
                .expect("uri")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let mut expected = Vec::new();
    for _ in BOTH {
        expected.extend((0..30).map(|n| format!("validate?timeout=10s&n={n}")));
        expected.push("nowhere".to_owned());
    }
    assert_eq!(
        uris, expected,
        "every request, in order, nothing lost below the bound"
    );
    let first = access[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["status"], 200);
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert!(first["peer"]
        .as_str()
        .expect("peer")
        .starts_with("127.0.0.1:"));
    assert_eq!(access[31]["protocol"], "HTTP/2.0");
    assert_eq!(access[61]["status"], 404);
    assert_eq!(logging::dropped_lines(), dropped_before);
    server.stop().await;
}

#[test]
fn a_stalled_log_output_never_holds_up_an_answer() {
    serially(stalled());
}

async fn stalled() {
    let output = output();
    let server = TestServer::start("").await;
    logging::flush();
    output.take_lines();
    let dropped_before = logging::dropped_lines();

    output.set_closed(true);
    const REQUESTS: usize = 200;
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = server.client(proto).await;
        let requests = async {
            for n in 0..REQUESTS / 2 {
                let path = format!("/validate?timeout=10s&n={n}");
                assert_eq!(client.post_json(&path, POD).await.status, 200);
            }
        };
        // ~50 KB of lines against an 8 KiB buffer and an output that takes nothing.
        requests.await;
    }
    let dropped = logging::dropped_lines() - dropped_before;
    assert!(dropped > 0, "the bound was reached");

    output.set_closed(false);
    // The first flush writes what waited and queues the warning; the second writes it.
    logging::flush();
    logging::flush();
    let lines = output.take_lines();
    let access = access_lines(&lines).len() as u64;
    assert!(access > 0);
    assert_eq!(
        access + dropped,
        REQUESTS as u64,
        "every line written or counted"
    );
    let warning = lines
        .iter()
        .find(|l| l["message"] == "log buffer was full; lines dropped")
        .expect("a warning with the drop count");
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["dropped"].as_u64(), Some(dropped));
    server.stop().await;
}

#[test]
fn an_authenticate_line_names_the_user_and_never_the_token() {
    serially(authenticate());
}

async fn authenticate() {
    const TOKEN: &str = "ghp_accesslogtokensecret";
    const UNKNOWN: &str = "ghp_accesslogunknownsecret";
    let output = output();
    let mock = MockGithub::start().await;
    mock.add(TOKEN, MockUser::new("octolog", 4243));
    let server = TestServer::start(&format!(
        "routes:\n  authenticate: true\nauthenticate:\n  github:\n    api_url: {}\n    allowed_orgs: []\n",
        mock.url()
    ))
    .await;
    logging::flush();
    output.take_lines();
    let review = |token: &str| {
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
            .to_string()
    };
    let mut usernames = Vec::new();
    for proto in BOTH {
        let mut client = server.client(proto).await;
        let answer = client
            .post_json("/authenticate", review(TOKEN))
            .await
            .ok_json();
        assert_eq!(answer["status"]["authenticated"], true, "{answer}");
        let username = answer["status"]["user"]["username"]
            .as_str()
            .expect("username");
        assert!(username.ends_with("octolog"), "{answer}");
        usernames.push(username.to_owned());
        let answer = client
            .post_json("/authenticate", review(UNKNOWN))
            .await
            .ok_json();
        assert_eq!(answer["status"]["authenticated"], false, "{answer}");
        usernames.push("unauthenticated".to_owned());
    }
    logging::flush();
    let text = output.take_text();
    assert!(
        !text.contains(TOKEN) && !text.contains(UNKNOWN) && !text.contains("secret"),
        "a token reached the log:\n{text}"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let users: Vec<&str> = access_lines(&lines)
        .iter()
        .map(|l| {
            assert_eq!(
                l["uri"].as_str().map(|u| u.ends_with("/authenticate")),
                Some(true),
                "{l}"
            );
            l["user"]
                .as_str()
                .expect("a user on every /authenticate line")
        })
        .collect();
    assert_eq!(users, usernames);
    server.stop().await;
}
