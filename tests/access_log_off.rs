//! `RUST_LOG` can switch the access log off (`gatehouse::access=off`) while the rest logs: the
//! hand-formatted line honours the filter as the tracing event did. Its own test binary: the
//! filter belongs to the process-wide subscriber.

mod common;

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestServer, BOTH};
use gatehouse::config::LogFormat;
use gatehouse::logging::{self, BufferLimits};
use tracing_subscriber::EnvFilter;

const POD: &[u8] = include_bytes!("data/pod-admission-review.json");

#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("output").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_switched_off_writes_no_line() {
    let output = Output::default();
    let guard = logging::install(
        LogFormat::Text,
        output.clone(),
        false,
        EnvFilter::new("info,gatehouse::access=off"),
        BufferLimits {
            flush_bytes: 1024,
            flush_interval: Duration::from_millis(20),
            max_buffered: 1 << 20,
        },
    )
    .expect("install the log");
    let server = TestServer::start("").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        assert_eq!(
            client.post_json("/validate?timeout=10s", POD).await.status,
            200
        );
        assert_eq!(client.get("/nowhere").await.status, 404);
    }
    tracing::info!(target: "gatehouse::test", "after the requests");
    server.stop().await;
    drop(guard);
    let text = String::from_utf8(output.0.lock().expect("output").clone()).expect("utf-8");
    assert!(text.contains("INFO after the requests"), "{text}");
    assert!(
        !text.contains(" request method="),
        "an access line was written:\n{text}"
    );
}
