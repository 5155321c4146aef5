//! The layers: the command line (the agent's flags and every probe family's), a config file
//! read into [`Settings`], and the flags (with their environment variables) merged over it
//! key by key.
//!
//! The merge goes through `serde_json::Value` because both layers are the one `Settings`
//! type: a key set in the upper layer wins, an unset one (`None`, serialized as null and
//! stripped) falls through. A layered-config crate (figment, config-rs) would add its own
//! providers and value model for what is 30 lines here, and its errors would name its
//! paths rather than our file keys.
//!
//! The families' keys are not fields of `Settings` (a family declares them, see
//! `Family::flags`), so the file is read twice: typed, collecting the keys `Settings` left
//! out (`serde_ignored`), and untyped, to take the families' keys among those. Any other
//! key left out is a mistake, refused with the keys its section knows.
use std::{ffi::OsString, path::Path};

use clap::{CommandFactory, FromArgMatches};
use serde_json::{Map, Value};

use super::{
    settings::{Cli, Settings},
    values::ConfigError,
};
use crate::ebpf::{
    families,
    family::{CgroupSeriesName, FamilyFlag},
};

/// Every family's flags, in family order.
fn family_flags() -> impl Iterator<Item = FamilyFlag> {
    families::ALL.iter().flat_map(|f| f.flags())
}

/// The command line: the agent's own flags, then every family's. `--cgroup-series` is the
/// agent's, but the names it takes are the families'.
pub fn command() -> clap::Command {
    let series = cgroup_series_names();
    let all: Vec<&str> = series.iter().map(|s| s.name).collect();
    let defaults: Vec<&str> = series
        .iter()
        .filter(|s| s.default)
        .map(|s| s.name)
        .collect();
    let help = format!(
        "Which per-cgroup series to export (comma-separated): {}, all, or default (the defaults, to add to them: default,cpu_throttling) [default: {}]",
        all.join(", "),
        defaults.join(",")
    );
    family_flags()
        .fold(Cli::command(), |cmd, flag| {
            cmd.arg(flag.arg.id(flag.key).global(true))
        })
        .mut_arg("cgroup_series", |arg| arg.help(help))
}

/// Every family's per-cgroup series, in family order.
pub(super) fn cgroup_series_names() -> Vec<CgroupSeriesName> {
    families::ALL
        .iter()
        .flat_map(|f| f.cgroup_series().iter().copied())
        .collect()
}

impl Cli {
    /// Parses a command line (the families' flags included), with the environment's
    /// `NODELENS_*` variables for flags not given.
    pub fn from_command_line<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        for flag in family_flags() {
            let Some(raw) = matches.get_raw(flag.key) else {
                continue;
            };
            let mut values: Vec<Value> = raw
                .map(|v| Value::String(v.to_string_lossy().into_owned()))
                .collect();
            let value = if flag.arg.get_value_delimiter().is_some() {
                Value::Array(values)
            } else {
                values.pop().unwrap_or(Value::Null)
            };
            insert_at(&mut cli.settings.family_keys, flag.key, value);
        }
        Ok(cli)
    }
}

/// Reads a whole file as JSON, for the families' keys.
type UntypedReader = fn(&str) -> Result<Value, String>;

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
        let mut left_out = Vec::new();
        let note = |p: serde_ignored::Path| left_out.push(dotted(&p));
        let (mut settings, untyped): (Settings, UntypedReader) =
            match path.extension().and_then(|e| e.to_str()) {
                Some("yaml" | "yml") => {
                    if text.trim().is_empty() {
                        return Ok(Self::default());
                    }
                    let typed =
                        serde_ignored::deserialize(serde_yaml::Deserializer::from_str(text), note)
                            .map_err(|e| parse_err(e.to_string()))?;
                    (typed, |t| {
                        serde_yaml::from_str(t).map_err(|e| e.to_string())
                    })
                }
                Some("toml") => {
                    let de =
                        toml::Deserializer::parse(text).map_err(|e| parse_err(e.to_string()))?;
                    let typed = serde_ignored::deserialize(de, note)
                        .map_err(|e| parse_err(e.to_string()))?;
                    (typed, |t| toml::from_str(t).map_err(|e| e.to_string()))
                }
                _ => {
                    return Err(ConfigError::FileExtension {
                        path: path.to_owned(),
                    });
                }
            };
        if left_out.is_empty() {
            return Ok(settings);
        }
        let untyped = untyped(text).map_err(parse_err)?;
        let family_keys: Vec<&'static str> = family_flags().map(|f| f.key).collect();
        for key in left_out {
            match family_keys.iter().find(|k| **k == key) {
                Some(family_key)
                    if let Some(value) =
                        untyped.pointer(&format!("/{}", family_key.replace('.', "/"))) =>
                {
                    insert_at(&mut settings.family_keys, family_key, value.clone());
                }
                // Not a family's key, or one written flat (`cgroups.x: 1` at the top
                // level), which the file does not take for the agent's keys either.
                _ => {
                    let (section, _) = key.rsplit_once('.').unwrap_or(("", &key));
                    return Err(ConfigError::UnknownKey {
                        path: path.to_owned(),
                        known: known_keys(section).join(", "),
                        section: if section.is_empty() {
                            "the top level".into()
                        } else {
                            section.to_owned()
                        },
                        key,
                    });
                }
            }
        }
        Ok(settings)
    }

    /// `self` over `lower`, key by key: a key set here wins, an unset one falls through.
    pub fn over(self, lower: Settings) -> Settings {
        let config = self.config.clone();
        let mut merged = to_value(&lower);
        merge_values(&mut merged, to_value(&self));
        // Both sides came from this type, so the merge deserializes back into it.
        let mut out: Settings = serde_json::from_value(merged).unwrap_or_default();
        out.config = config;
        let mut family_keys = Value::Object(lower.family_keys);
        merge_values(&mut family_keys, Value::Object(self.family_keys));
        if let Value::Object(keys) = family_keys {
            out.family_keys = keys;
        }
        out
    }
}

/// The settings as JSON keyed by the file keys, the families' included; unset keys left out.
pub(super) fn to_value(s: &Settings) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    merge_values(&mut v, Value::Object(s.family_keys.clone()));
    strip_nulls(&mut v);
    v
}

/// The keys a section of the file knows (`""` for the top level): the agent's, then the
/// families'.
fn known_keys(section: &str) -> Vec<String> {
    // Unset options serialize as null, so the default lists every key of every section.
    let all = serde_json::to_value(Settings::default()).unwrap_or_default();
    let pointer = if section.is_empty() {
        String::new()
    } else {
        format!("/{}", section.replace('.', "/"))
    };
    let mut keys: Vec<String> = match all.pointer(&pointer) {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    keys.extend(family_flags().filter_map(|f| {
        let (parent, leaf) = f.key.rsplit_once('.').unwrap_or(("", f.key));
        (parent == section).then(|| leaf.to_owned())
    }));
    keys
}

/// A key `serde_ignored` reports, as the file writes it: `cgroups.series`.
fn dotted(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Map { parent, key } => match dotted(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

/// Puts `value` at the dotted `key`, making the sections on the way.
fn insert_at(map: &mut Map<String, Value>, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            map.insert(key.to_owned(), value);
        }
        Some((section, rest)) => {
            let entry = map
                .entry(section.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                insert_at(inner, rest, value);
            }
        }
    }
}

fn strip_nulls(v: &mut Value) {
    if let Value::Object(map) = v {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

fn merge_values(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge_values(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}
