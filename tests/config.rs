//! The shipped example loads; mistakes are refused with the key and line named.

use std::path::PathBuf;

use gatehouse::config::Config;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/gatehouse.yaml")
}

#[test]
fn shipped_example_loads_with_documented_defaults() {
    let config = Config::load(&example()).expect("config/gatehouse.yaml must load");
    assert_eq!(config.listen.to_string(), "127.0.0.1:8443");
    assert_eq!(config.limits.max_body.0, 4 << 20);
    assert_eq!(config.limits.request_timeout.0.as_secs(), 9);
    assert!(config.routes.validate && config.routes.image_policy);
    assert!(!config.routes.authenticate && !config.routes.mutate);
}

#[test]
fn unknown_key_is_refused_naming_it_and_its_line() {
    let err = Config::from_yaml(
        "listen: 127.0.0.1:8443\nlimits:\n  max_bdy: 1MiB\n",
        "x.yaml",
    )
    .expect_err("unknown key");
    let message = err.to_string();
    assert!(message.contains("max_bdy"), "{message}");
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("x.yaml"), "{message}");
}

#[test]
fn wrong_types_and_units_are_refused() {
    for (yaml, needle) in [
        ("limits:\n  request_timeout: 9 parsecs\n", "duration"),
        ("limits:\n  max_body: lots\n", "size"),
        ("listen: not-an-address\n", "line 1"),
        ("routes:\n  validate: maybe\n", "line 2"),
        ("log:\n  format: xml\n", "xml"),
    ] {
        let err = Config::from_yaml(yaml, "x.yaml").expect_err(yaml);
        assert!(err.to_string().contains(needle), "{yaml:?}: {err}");
    }
}

#[test]
fn half_a_tls_pair_is_refused() {
    let err = Config::from_yaml("tls:\n  cert: /x.crt\n", "x.yaml").expect_err("cert without key");
    assert!(err.to_string().contains("tls.key"), "{err}");
}

#[test]
fn empty_file_is_the_defaults() {
    let config = Config::from_yaml("", "x.yaml").expect("empty");
    assert_eq!(config.listen.to_string(), "127.0.0.1:8443");
}
