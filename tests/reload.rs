//! Config reload against the real binary over TLS: SIGHUP and a ConfigMap-style `..data` symlink
//! swap load a new configuration; a bad file leaves the old one deciding; SIGHUP without a
//! config file is harmless; settings needing a restart are named, not half-applied; Gatekeeper
//! policy files are watched like the config file.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{pod_review, Client, Proto};
use serde_json::Value;

/// Generous: a loaded machine may take a while to start a debug binary, and the file poll runs
/// every 5s.
const WAIT: Duration = Duration::from_secs(60);

/// Allowed by the built-in rule (a tag, not latest); refused by [`INTERNAL_ONLY`].
const PUBLIC: &str = "docker.io/library/nginx:1.25";
/// Allowed by both.
const INTERNAL: &str = "registry.internal/app:1.0";

/// Only images from registry.internal.
const INTERNAL_ONLY: &str = "policies:
- name: internal-only
  images:
    allowed_registries: [registry.internal]
";

/// `gatehouse serve` as an operator runs it, logging JSON to stdout.
struct Gatehouse {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every event read so far.
    events: Vec<Value>,
    addr: SocketAddr,
    ca_pem: String,
    _tmp: tempfile::TempDir,
}

impl Gatehouse {
    /// Starts the binary with `config` (or none) on an ephemeral port; waits for its banner.
    fn start(config: Option<&Path>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        command.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"]);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command
            .env("TMPDIR", tmp.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gatehouse binary");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            lines,
            events: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca_pem: String::new(),
            _tmp: tmp,
        };
        let banner = server.wait_for("the banner", |e| e["message"] == "gatehouse listening");
        let listen = banner["listen"].as_str().expect("listen field");
        server.addr = listen
            .strip_prefix("https://")
            .and_then(|a| a.parse().ok())
            .expect("an https address");
        server.ca_pem = banner["ca_pem"].as_str().expect("ca_pem field").to_owned();
        server
    }

    /// Waits (bounded) for a log event matching `pred`, among those already read or to come.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(e) = self.events.iter().find(|e| pred(e)) {
            return e.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!(
                    "no {what} within {WAIT:?} ({e}); events: {:#?}",
                    self.events
                )
            });
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            self.events.push(event.clone());
            if pred(&event) {
                return event;
            }
        }
    }

    /// Sends SIGHUP.
    fn hup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// True while the process runs.
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Whether `/validate` allows a pod running `image` (a new connection each time, so that a
    /// dead process shows as a failed connect).
    async fn allowed(&self, image: &str) -> bool {
        let mut client = Client::connect(self.addr, &self.ca_pem, Proto::Http2).await;
        let answer = client
            .post_json(
                "/validate",
                pod_review("admission.k8s.io/v1", "u1", "default", &[image]),
            )
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.json()["response"]["allowed"]
            .as_bool()
            .expect("response.allowed")
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reload event with `message` and `trigger`.
fn event(message: &'static str, trigger: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["message"] == message && e["trigger"] == trigger
}

const RELOADED: &str = "configuration reloaded";
const REFUSED: &str = "configuration reload refused; still serving the previous configuration";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_loads_a_new_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gatehouse.yaml");
    std::fs::write(&path, "policies: []\n").expect("write");
    let mut server = Gatehouse::start(Some(&path));
    assert!(server.allowed(PUBLIC).await);

    std::fs::write(&path, INTERNAL_ONLY).expect("write");
    server.hup();
    server.wait_for("a reload on SIGHUP", event(RELOADED, "SIGHUP"));
    assert!(server.running(), "SIGHUP must not end gatehouse");
    assert!(!server.allowed(PUBLIC).await, "the new policy decides");
    assert!(server.allowed(INTERNAL).await);
}

/// Lays out `dir` as the kubelet does a ConfigMap volume: the file is a symlink through
/// `..data`, itself a symlink to a timestamped directory, swapped by a rename.
fn configmap_write(dir: &Path, generation: u32, content: &str) -> PathBuf {
    let version = format!("..2026_11_30_05_00_0{generation}.{generation}");
    std::fs::create_dir(dir.join(&version)).expect("version dir");
    std::fs::write(dir.join(&version).join("gatehouse.yaml"), content).expect("write");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&version, &tmp).expect("symlink ..data_tmp");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    let file = dir.join("gatehouse.yaml");
    if std::fs::symlink_metadata(&file).is_err() {
        std::os::unix::fs::symlink("..data/gatehouse.yaml", &file).expect("symlink the file");
    }
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = configmap_write(dir.path(), 1, "policies: []\n");
    let mut server = Gatehouse::start(Some(&file));
    assert!(server.allowed(PUBLIC).await);

    configmap_write(dir.path(), 2, INTERNAL_ONLY);
    // The kubelet removes the old version once ..data points at the new one.
    std::fs::remove_dir_all(dir.path().join("..2026_11_30_05_00_01.1")).expect("remove old");
    server.wait_for(
        "a reload on the file change",
        event(RELOADED, "file change"),
    );
    assert!(!server.allowed(PUBLIC).await, "the new policy decides");
    assert!(server.allowed(INTERNAL).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_and_the_old_config_keeps_deciding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gatehouse.yaml");
    std::fs::write(&path, INTERNAL_ONLY).expect("write");
    let mut server = Gatehouse::start(Some(&path));
    assert!(!server.allowed(PUBLIC).await);

    // Not YAML at all.
    std::fs::write(&path, "policies: [\n").expect("write");
    server.hup();
    let refused = server.wait_for("a refused reload", event(REFUSED, "SIGHUP"));
    assert_eq!(refused["level"], "ERROR");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|m| m.contains("gatehouse.yaml")),
        "{refused}"
    );
    assert!(
        !server.allowed(PUBLIC).await,
        "the old policy still decides"
    );
    assert!(server.allowed(INTERNAL).await);

    // YAML, but a policy that does not compile (an invalid name). The events so far are
    // dropped so that the next refusal is this one.
    server.events.clear();
    std::fs::write(
        &path,
        "policies:\n- name: Not A Valid Name\n  images:\n    deny_latest: true\n",
    )
    .expect("write");
    server.hup();
    let refused = server.wait_for("a refused policy", event(REFUSED, "SIGHUP"));
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|m| m.contains("policies")),
        "{refused}"
    );
    assert!(
        !server.allowed(PUBLIC).await,
        "the old policy still decides"
    );
    assert!(server.allowed(INTERNAL).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_a_config_file_keeps_serving() {
    let mut server = Gatehouse::start(None);
    server.hup();
    server.wait_for("the nothing-to-reload notice", |e| {
        e["message"] == "started without a config file: nothing to reload"
    });
    assert!(server.running(), "SIGHUP must not end gatehouse");
    let mut client = Client::connect(server.addr, &server.ca_pem, Proto::Http1).await;
    assert_eq!(client.get("/healthz").await.status, 200);
    assert!(server.allowed(PUBLIC).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_needing_a_restart_are_named_and_keep_their_running_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gatehouse.yaml");
    std::fs::write(&path, "policies: []\n").expect("write");
    let mut server = Gatehouse::start(Some(&path));

    std::fs::write(
        &path,
        format!("limits:\n  max_body: 1KiB\nroutes:\n  mutate: true\n{INTERNAL_ONLY}"),
    )
    .expect("write");
    server.hup();
    let warning = server.wait_for("the restart warning", |e| {
        e["level"] == "WARN" && e["trigger"] == "SIGHUP" && e["settings"].is_string()
    });
    let settings = warning["settings"].as_str().unwrap_or_default();
    assert!(settings.contains("limits.max_body"), "{warning}");
    assert!(settings.contains("routes.mutate"), "{warning}");
    // The rest of the file is applied.
    assert!(!server.allowed(PUBLIC).await, "the new policy decides");
    // The running values stay: a review above 1 KiB is still read, /mutate is still off.
    let big = vec!["registry.internal/app:1.0"; 64];
    let mut client = Client::connect(server.addr, &server.ca_pem, Proto::Http1).await;
    let body = pod_review("admission.k8s.io/v1", "u2", "default", &big);
    assert!(body.len() > 1024);
    assert_eq!(
        client.post_json("/validate", body.clone()).await.status,
        200
    );
    assert_eq!(client.post_json("/mutate", body).await.status, 404);
}

/// A template refusing images outside `parameters.prefix`.
const PREFIX_TEMPLATE: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: ghprefix}
spec:
  crd:
    spec:
      names: {kind: GhPrefix}
      validation:
        openAPIV3Schema:
          type: object
          properties:
            prefix: {type: string}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package ghprefix
        violation[{"msg": msg}] {
          image := input.review.object.spec.containers[_].image
          not startswith(image, input.parameters.prefix)
          msg := sprintf("image <%v> is not under <%v>", [image, input.parameters.prefix])
        }
"#;

fn prefix_constraint(prefix: &str) -> String {
    format!("apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: GhPrefix\nmetadata: {{name: only-prefix}}\nspec:\n  parameters: {{prefix: {prefix}}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_constraint_file_is_picked_up_and_a_broken_template_keeps_the_old_policies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("gatekeeper");
    std::fs::create_dir(&policies).expect("mkdir");
    std::fs::write(policies.join("template.yaml"), PREFIX_TEMPLATE).expect("write");
    std::fs::write(
        policies.join("constraint.yaml"),
        prefix_constraint("registry.internal/"),
    )
    .expect("write");
    let config = dir.path().join("gatehouse.yaml");
    std::fs::write(
        &config,
        format!("gatekeeper:\n  paths: [{}]\n", policies.display()),
    )
    .expect("write");
    let mut server = Gatehouse::start(Some(&config));
    assert!(server.allowed(INTERNAL).await);
    assert!(!server.allowed(PUBLIC).await);

    // Only the constraint file changes; the config file stays as it was.
    std::fs::write(
        policies.join("constraint.yaml"),
        prefix_constraint("docker.io/"),
    )
    .expect("write");
    server.wait_for(
        "a reload on the policy file change",
        event(RELOADED, "file change"),
    );
    assert!(
        server.allowed(PUBLIC).await,
        "the edited constraint decides"
    );
    assert!(!server.allowed(INTERNAL).await);

    // A template whose Rego does not parse: refused, logged, the policies before keep deciding.
    std::fs::write(
        policies.join("zz-broken.yaml"),
        PREFIX_TEMPLATE
            .replace("ghprefix", "ghbroken")
            .replace("GhPrefix", "GhBroken")
            .replace("startswith(", "startswith(("),
    )
    .expect("write");
    let refused = server.wait_for(
        "a refused reload of the broken template",
        event(REFUSED, "file change"),
    );
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|m| m.contains("zz-broken.yaml") && m.contains("template ghbroken")),
        "{refused}"
    );
    assert!(
        server.allowed(PUBLIC).await,
        "the old policies still decide"
    );
    assert!(!server.allowed(INTERNAL).await);
}
