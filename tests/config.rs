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

#[test]
fn sizes_mean_their_units_and_ambiguous_ones_are_refused() {
    for (value, bytes) in [
        ("4MB", 4_000_000),
        ("4MiB", 4 << 20),
        ("4Mi", 4 << 20),
        ("512kB", 512_000),
        ("512KiB", 512 << 10),
        ("4194304", 4 << 20),
    ] {
        let yaml = format!("limits:\n  max_body: {value}\n");
        let config = Config::from_yaml(&yaml, "x.yaml").expect(value);
        assert_eq!(config.limits.max_body.0, bytes, "{value}");
    }
    let err = Config::from_yaml("limits:\n  max_body: 4M\n", "x.yaml")
        .expect_err("4M is ambiguous")
        .to_string();
    for needle in [
        "limits.max_body",
        "\"4M\"",
        "ambiguous",
        "MiB",
        "MB",
        "line 2",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn wrong_values_name_the_key_and_what_it_expects() {
    for (yaml, key, expected) in [
        (
            "limits:\n  max_connections: lots\n",
            "limits.max_connections",
            "expected a whole number",
        ),
        (
            "limits:\n  max_connections: -3\n",
            "limits.max_connections",
            "expected a whole number",
        ),
        (
            "routes:\n  validate: maybe\n",
            "routes.validate",
            "expected true or false",
        ),
        (
            "limits:\n  max_body: [1]\n",
            "limits.max_body",
            "expected a size",
        ),
        (
            "limits:\n  request_timeout: soon\n",
            "limits.request_timeout",
            "invalid duration",
        ),
        (
            "policies:\n  - name: a\n  - name: b\n    enforcement: maybe\n",
            "policies[1].enforcement",
            "maybe",
        ),
    ] {
        let err = Config::from_yaml(yaml, "x.yaml")
            .expect_err(yaml)
            .to_string();
        assert!(err.contains(key), "{yaml:?} must name {key}: {err}");
        assert!(err.contains(expected), "{yaml:?}: {err}");
        assert!(!err.contains("invalid u64"), "{yaml:?}: {err}");
    }
}
