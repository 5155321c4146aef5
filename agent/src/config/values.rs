//! What every part of the configuration shares: the error (one line, naming the file key
//! and the fix) and the parsers of single values.
use std::{path::PathBuf, time::Duration};

use clap::ValueEnum;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: cannot read {path}: {source} (check the --config path)")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config: {path}: {detail} (fix the file; keys are the flag names with '_')")]
    ParseFile { path: PathBuf, detail: String },
    #[error(
        "config: {path}: unknown key {key} (known in {section}: {known}; keys are the flag names with '_')"
    )]
    UnknownKey {
        path: PathBuf,
        key: String,
        section: String,
        known: String,
    },
    #[error("config: {path}: unknown extension (use .yaml, .yml or .toml)")]
    FileExtension { path: PathBuf },
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
}

pub(super) fn invalid(field: &'static str, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        detail: detail.into(),
    }
}

/// Parses a `ValueEnum` value, or names the field and lists what it takes.
pub(super) fn parse_enum<T: ValueEnum>(
    field: &'static str,
    value: &str,
    what: &str,
) -> Result<T, ConfigError> {
    T::from_str(value.trim(), true).map_err(|_| {
        invalid(
            field,
            format!(
                "{value:?} is not {what} (use {})",
                value_names::<T>().join(", ")
            ),
        )
    })
}

/// The names a `ValueEnum` takes, as written on the command line.
pub(super) fn value_names<T: ValueEnum>() -> Vec<String> {
    T::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
        .collect()
}

/// A duration such as `5s`, `500ms` or `1m`, at least `min` (see [`crate::duration`]).
pub fn duration(field: &'static str, value: &str, min: Duration) -> Result<Duration, ConfigError> {
    crate::duration::parse(value, min).map_err(|detail| invalid(field, detail))
}
