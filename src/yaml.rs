//! Reading the configuration's YAML: serde-saphyr parses (line, column and a snippet in every
//! error), and every error also names the key it is about (`limits.max_connections`) and what
//! that key expects, where a bare message would say only "invalid u64".

use std::borrow::Cow;

use serde::Deserialize;
use serde_saphyr::{DefaultMessageFormatter, Error, MessageFormatter};

/// Parses `yaml` into `T`; the error is rendered for the operator, key path first.
pub fn from_str<'de, T: Deserialize<'de>>(yaml: &'de str) -> Result<T, String> {
    let mut key = String::new();
    serde_saphyr::with_deserializer_from_str(yaml, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            key = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| e.render_with_formatter(&KeyedMessages { key: &key }))
}

/// serde-saphyr's messages, prefixed with the key and with type names said in words.
struct KeyedMessages<'k> {
    /// The dotted path, `.` at the root.
    key: &'k str,
}

impl MessageFormatter for KeyedMessages<'_> {
    fn format_message<'a>(&self, err: &'a Error) -> Cow<'a, str> {
        let message = match err {
            Error::InvalidScalar { ty, .. } => Cow::Owned(format!("expected {}", expected(ty))),
            other => DefaultMessageFormatter.format_message(other),
        };
        if self.key.is_empty() || self.key == "." {
            message
        } else {
            Cow::Owned(format!("{}: {message}", self.key))
        }
    }
}

/// What a scalar of Rust type `ty` looks like in YAML.
fn expected(ty: &str) -> Cow<'static, str> {
    match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "bool" | "boolean" => "true or false".into(),
        "char" => "a single character".into(),
        other => format!("a {other}").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        limits: Option<Inner>,
        #[serde(default)]
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        count: u64,
        #[serde(default)]
        on: bool,
    }

    fn error(yaml: &str) -> String {
        from_str::<Outer>(yaml).expect_err(yaml)
    }

    #[test]
    fn errors_name_the_key_and_what_it_expects() {
        let message = error("limits:\n  count: lots\n");
        assert!(
            message.contains("limits.count: expected a whole number, 0 or more"),
            "{message}"
        );
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains("invalid u64"), "{message}");

        let message = error("items:\n  - count: 1\n  - on: maybe\n");
        assert!(
            message.contains("items[1].on: expected true or false"),
            "{message}"
        );

        let message = error("limits:\n  cont: 1\n");
        assert!(message.contains("limits"), "{message}");
        assert!(message.contains("cont"), "{message}");
    }

    #[test]
    fn good_yaml_parses() {
        let outer: Outer =
            from_str("limits:\n  count: 3\n  on: true\nitems:\n  - count: 4\n").expect("parses");
        let limits = outer.limits.expect("limits");
        assert_eq!(limits.count, 3);
        assert!(limits.on);
        assert_eq!(outer.items.len(), 1);
        assert_eq!(outer.items[0].count, 4);
    }
}
