//! The tower stack alone (access log, panic catcher, deadline, route, in-flight cap, content type,
//! body collect) around a constant handler: what the layers between the listener and the
//! handlers cost per request, with the JSON access log on (installed as `main` installs it,
//! batched to /dev/null).
//!
//!     cargo bench --bench stack
//!
//! Instruction counts, repeatable on a busy machine: with `STACK_REQUESTS=N` set the binary
//! skips criterion and serves N webhook requests (a 5.4 KB Pod review) and N probes in a loop;
//! run it under callgrind for two values of N and divide the difference in instructions by the
//! difference in N (which cancels start-up):
//!
//!     cargo bench --bench stack --no-run
//!     STACK_REQUESTS=1000 valgrind --tool=callgrind target/release/deps/stack-<hash>
//!     STACK_REQUESTS=3000 valgrind --tool=callgrind target/release/deps/stack-<hash>
//!
//! `STACK_LOG=event` logs the access line as a tracing event through tracing-subscriber's JSON
//! formatter into the same buffer instead (a scoped subscriber, which the access log does not
//! format by hand): how it was logged before, for comparison.

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::Criterion;
use http::StatusCode;
use http_body_util::Full;
use tower::ServiceExt;
use tracing_subscriber::EnvFilter;

use gatehouse::config::{Config, LogFormat};
use gatehouse::error::{json_response, Response};
use gatehouse::logging::{self, subscriber, BufferLimits, LogBuffer};

const POD: &[u8] = include_bytes!("../tests/data/pod-admission-review.json");
const ANSWER: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"x","allowed":true}}"#;

/// A webhook request as the listener hands it over (a declared length, JSON).
fn webhook() -> http::Request<Full<Bytes>> {
    http::Request::post("/validate?timeout=10s")
        .header("content-type", "application/json")
        .header("content-length", POD.len())
        .body(Full::new(Bytes::from_static(POD)))
        .expect("request")
}

fn probe() -> http::Request<Full<Bytes>> {
    http::Request::get("/healthz")
        .body(Full::default())
        .expect("request")
}

/// The stack from the default limits and routes, around a handler that answers at once.
fn stack() -> impl tower::Service<
    http::Request<Full<Bytes>>,
    Response = Response,
    Error = Infallible,
    Future: Send,
> + Clone {
    let config = Config::from_yaml("{}", "stack.yaml").expect("config");
    let handler = tower::service_fn(|req: http::Request<Bytes>| async move {
        // Webhook handlers run on the blocking pool, so their future is pending at first poll
        // (and the layers above it park their timers); probes answer at once.
        if !req.body().is_empty() {
            tokio::task::yield_now().await;
        }
        black_box(req.body().len());
        Ok::<_, Infallible>(json_response(StatusCode::OK, Bytes::from_static(ANSWER)))
    });
    gatehouse::stack::build(
        &config.limits,
        &config.routes,
        std::sync::Arc::new(gatehouse::metrics::Metrics::new()),
        handler,
    )
}

async fn once<S>(service: &S, request: http::Request<Full<Bytes>>)
where
    S: tower::Service<http::Request<Full<Bytes>>, Response = Response, Error = Infallible> + Clone,
{
    let response = service.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    black_box(response);
}

fn main() {
    let devnull = std::fs::File::create("/dev/null").expect("/dev/null");
    let filter = EnvFilter::new("info");
    if std::env::var("STACK_LOG").is_ok_and(|v| v == "event") {
        let (buffer, guard) = LogBuffer::new(devnull, BufferLimits::default()).expect("buffer");
        let log = subscriber(LogFormat::Json, buffer.clone(), false, filter);
        tracing::dispatcher::with_default(&log, run);
        buffer.flush(std::time::Duration::from_secs(30));
        drop(guard);
    } else {
        let guard = logging::install(
            LogFormat::Json,
            devnull,
            false,
            filter,
            BufferLimits::default(),
        )
        .expect("install the log");
        run();
        logging::flush();
        drop(guard);
    }
}

/// Serves `STACK_REQUESTS` pairs, or runs criterion.
fn run() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let service = stack();
    if let Some(n) = std::env::var("STACK_REQUESTS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        runtime.block_on(async {
            for _ in 0..n {
                once(&service, webhook()).await;
                once(&service, probe()).await;
            }
        });
    } else {
        let mut c = Criterion::default().configure_from_args();
        let mut group = c.benchmark_group("stack");
        group.bench_function("webhook_5k", |b| {
            b.to_async(&runtime).iter(|| once(&service, webhook()))
        });
        group.bench_function("probe", |b| {
            b.to_async(&runtime).iter(|| once(&service, probe()))
        });
        group.finish();
        c.final_summary();
    }
}
