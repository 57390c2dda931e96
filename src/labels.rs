//! Kubernetes' syntax for label and annotation keys and label values (`IsQualifiedName`,
//! `IsValidLabelValue`): config that sets or requires labels is checked against it at startup,
//! so a mutation never sends a patch the apiserver would refuse.

/// Kubernetes' `IsQualifiedName`: `[prefix/]name`, the prefix a DNS subdomain.
pub fn check_qualified_name(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_dns_subdomain(prefix) {
            return Err(
                "the prefix before '/' must be a DNS subdomain (lowercase letters, \
                        digits, '-' and '.', at most 253 characters)",
            );
        }
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(
            "the name must be 1 to 63 letters, digits, '-', '_' or '.', starting and \
                    ending with a letter or digit, after an optional DNS-subdomain prefix and '/'",
        );
    }
    Ok(())
}

/// Kubernetes' `IsValidLabelValue`: empty, or a name as in [`check_qualified_name`].
pub fn check_label_value(value: &str) -> Result<(), &'static str> {
    if is_label_value(value) {
        Ok(())
    } else {
        Err(
            "must be empty or 1 to 63 letters, digits, '-', '_' or '.', starting and ending \
             with a letter or digit",
        )
    }
}

/// `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`, at most 63 characters.
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return true;
    }
    b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// RFC 1123 subdomain: dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 253 in all.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && is_lower_alnum(b[0])
                && is_lower_alnum(b[b.len() - 1])
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        })
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert!(check_qualified_name("team").is_ok());
        assert!(check_qualified_name("app.kubernetes.io/managed-by").is_ok());
        assert!(check_qualified_name("/x").is_err());
        assert!(check_qualified_name("a b").is_err());
        assert!(check_qualified_name("Example.com/x").is_err());
        assert!(check_qualified_name(&"a".repeat(64)).is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_3-x").is_ok());
        assert!(check_label_value("-x").is_err());
    }
}
