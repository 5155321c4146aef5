//! The layers: a config file read into [`Settings`], and flags (with their environment
//! variables) merged over it key by key.
//!
//! The merge goes through `serde_json::Value` because both layers are the one `Settings`
//! type: a key set in the upper layer wins, an unset one (`None`, serialized as null and
//! stripped) falls through. A layered-config crate (figment, config-rs) would add its own
//! providers and value model for what is 30 lines here, and its errors would name its
//! paths rather than our file keys.
use std::path::Path;

use super::{settings::Settings, values::ConfigError};

impl Settings {
    /// Reads a config file into the same shape the flags have.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_file(path, &text)
    }

    pub fn parse_file(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let parse_err = |detail: String| ConfigError::ParseFile {
            path: path.to_owned(),
            // serde_yaml and toml errors span several lines; the user gets one.
            detail: detail.lines().map(str::trim).collect::<Vec<_>>().join(" "),
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                if text.trim().is_empty() {
                    return Ok(Self::default());
                }
                serde_yaml::from_str(text).map_err(|e| parse_err(e.to_string()))
            }
            Some("toml") => toml::from_str(text).map_err(|e| parse_err(e.to_string())),
            _ => Err(ConfigError::FileExtension {
                path: path.to_owned(),
            }),
        }
    }

    /// `self` over `lower`, key by key: a key set here wins, an unset one falls through.
    pub fn over(self, lower: Settings) -> Settings {
        let config = self.config.clone();
        let mut merged = to_value(&lower);
        merge_values(&mut merged, to_value(&self));
        // Both sides came from this type, so the merge deserializes back into it.
        let mut out: Settings = serde_json::from_value(merged).unwrap_or_default();
        out.config = config;
        out
    }
}

pub(super) fn to_value(s: &Settings) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    strip_nulls(&mut v);
    v
}

fn strip_nulls(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = v {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

fn merge_values(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge_values(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}
