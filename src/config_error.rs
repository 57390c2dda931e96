//! The error every configuration check returns. Its own module so that `authn/`, `policy/` and
//! the other sections' checks depend on it without depending on `config` (which depends on them).

use std::path::PathBuf;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML did not match the schema (unknown key, wrong type, bad unit).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file, or `<embedded>` for the defaults.
        path: String,
        /// The key, what it expects, line, column and a snippet.
        message: String,
    },
    /// A value parsed but makes no sense (e.g. a cert without a key).
    #[error("config: {key}: {message}")]
    Invalid {
        /// The offending key, dotted (`tls.key`).
        key: String,
        /// What to fix.
        message: String,
    },
}

impl ConfigError {
    /// An invalid value at `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}
