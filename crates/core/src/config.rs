//! Reading `HERALD_*` settings from the environment, with the default used when a variable is
//! unset and a precise error when one is set to something unusable.

use std::str::FromStr;
use std::time::Duration;

use crate::schedule::parse_duration;

/// A setting that could not be read: names the variable and what it expects.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    pub name: String,
    pub message: String,
}

/// Source of settings: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct Env;

impl Source for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Reads typed settings from a [`Source`].
pub struct Reader<'a> {
    source: &'a dyn Source,
}

impl<'a> Reader<'a> {
    pub fn new(source: &'a dyn Source) -> Self {
        Self { source }
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.source.get(name).unwrap_or_else(|| default.to_owned())
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        self.source.get(name)
    }

    pub fn parse<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.source.get(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.to_owned(),
                message: format!("cannot parse {raw:?}: {e}"),
            }),
        }
    }

    /// A duration such as `500ms`, `30s`, `5m`, `1h` (a bare number is milliseconds).
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.source.get(name) {
            None => Ok(default),
            Some(raw) => parse_duration(&raw).map_err(|e| ConfigError {
                name: name.to_owned(),
                message: e.to_string(),
            }),
        }
    }
}
