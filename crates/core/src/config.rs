//! Experiment configuration: embedded defaults, then a TOML file, then `--set key=value`
//! overrides, deserialised into a serde struct with `deny_unknown_fields` and validated once,
//! before any work starts.
//!
//! Each layer is checked as soon as it is applied, so an error names the layer that caused it
//! (the file, or the exact `--set`), not just the final merged value.

use crate::error::{ConfigError, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use toml::{Table, Value};

/// A configuration that can check its own values (linfa's ParamGuard idea): called once after
/// loading, so that training code can trust every field.
pub trait Validate {
    /// Returns the first value that is out of range, naming its key.
    fn validate(&self) -> std::result::Result<(), ConfigError>;
}

/// Helper for [`Validate`] implementations: fails with a message naming `key` unless `ok`.
pub fn check(
    ok: bool,
    key: &str,
    value: impl std::fmt::Display,
    reason: &str,
) -> std::result::Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        })
    }
}

/// Loads `T` from its defaults, an optional TOML file and `key=value` overrides, then validates.
pub fn load<T>(file: Option<&Path>, sets: &[String]) -> Result<T>
where
    T: Serialize + DeserializeOwned + Default + Validate,
{
    let mut table = to_table(&T::default())?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| crate::CoreError::io(path, e))?;
        let origin = path.display().to_string();
        let overlay: Table = toml::from_str(&text).map_err(|e| parse_err(&origin, e))?;
        merge(&mut table, overlay);
        from_table::<T>(&table, &origin)?;
    }
    for set in sets {
        let (key, raw) = set
            .split_once('=')
            .ok_or_else(|| ConfigError::BadSet(set.clone()))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(ConfigError::BadSet(set.clone()).into());
        }
        set_dotted(&mut table, key, parse_value(raw.trim())).map_err(|msg| ConfigError::Parse {
            origin: format!("--set {set}"),
            msg,
        })?;
        from_table::<T>(&table, &format!("--set {set}"))?;
    }
    let cfg = from_table::<T>(&table, "config")?;
    cfg.validate()?;
    Ok(cfg)
}

/// Serialises a config to TOML text (the run folder's `config.toml`).
pub fn to_toml<T: Serialize>(cfg: &T) -> Result<String> {
    toml::to_string_pretty(cfg)
        .map_err(|e| crate::CoreError::Runtime(format!("serialising config: {e}")))
}

fn to_table<T: Serialize>(cfg: &T) -> Result<Table> {
    match Value::try_from(cfg) {
        Ok(Value::Table(t)) => Ok(t),
        Ok(_) => Err(crate::CoreError::Runtime("config is not a table".into())),
        Err(e) => Err(crate::CoreError::Runtime(format!(
            "serialising defaults: {e}"
        ))),
    }
}

fn from_table<T: DeserializeOwned>(table: &Table, origin: &str) -> Result<T> {
    T::deserialize(Value::Table(table.clone())).map_err(|e| parse_err(origin, e))
}

fn parse_err(origin: &str, e: impl std::fmt::Display) -> crate::CoreError {
    // toml's messages span several lines with a caret diagram; one line is what a CLI user
    // needs, and the key or line number is already inside the first lines.
    let msg = e
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.starts_with('^'))
        .collect::<Vec<_>>()
        .join(" ");
    ConfigError::Parse {
        origin: origin.to_string(),
        msg,
    }
    .into()
}

/// A `--set` value is TOML when it parses as one (`3`, `0.5`, `true`, `[1, 2]`, `"x"`), and a
/// bare string otherwise, so `--set data.train=../x.txt` needs no quotes.
fn parse_value(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

fn set_dotted(table: &mut Table, key: &str, value: Value) -> std::result::Result<(), String> {
    let mut parts = key.split('.').peekable();
    let mut cur = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_string(), value);
            return Ok(());
        }
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(t) => t,
            _ => return Err(format!("`{part}` is a value, not a section")),
        };
    }
    Ok(())
}

fn merge(base: &mut Table, overlay: Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Train {
        lr: f64,
        epochs: usize,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        name: String,
        train: Train,
        path: Option<String>,
    }
    impl Default for Train {
        fn default() -> Self {
            Train { lr: 0.1, epochs: 3 }
        }
    }
    impl Default for Cfg {
        fn default() -> Self {
            Cfg {
                name: "a".into(),
                train: Train::default(),
                path: None,
            }
        }
    }
    impl Validate for Cfg {
        fn validate(&self) -> std::result::Result<(), ConfigError> {
            check(
                self.train.lr > 0.0,
                "train.lr",
                self.train.lr,
                "must be > 0",
            )
        }
    }

    fn sets(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_file_and_sets_layer_in_order() {
        let dir = std::env::temp_dir().join(format!("ferrolab-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "name = \"b\"\n[train]\nepochs = 7\n").unwrap();
        let c: Cfg = load(Some(&f), &sets(&["train.lr=0.5", "path=../x y.txt"])).unwrap();
        assert_eq!(c.name, "b");
        assert_eq!(c.train, Train { lr: 0.5, epochs: 7 });
        assert_eq!(c.path.as_deref(), Some("../x y.txt"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn unknown_key_is_rejected_naming_the_set() {
        let e = load::<Cfg>(None, &sets(&["train.lrr=0.5"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--set train.lrr=0.5"), "{e}");
        assert!(e.contains("lrr"), "{e}");
    }

    #[test]
    fn wrong_type_and_range_are_rejected() {
        let e = load::<Cfg>(None, &sets(&["train.epochs=many"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.epochs=many"), "{e}");
        let e = load::<Cfg>(None, &sets(&["train.lr=-1"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.lr") && e.contains("must be > 0"), "{e}");
        assert!(load::<Cfg>(None, &sets(&["novalue"])).is_err());
    }

    #[test]
    fn malformed_file_names_the_file() {
        let dir = std::env::temp_dir().join(format!("ferrolab-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.toml");
        std::fs::write(&f, "name = \n").unwrap();
        let e = load::<Cfg>(Some(&f), &[]).unwrap_err();
        assert!(e.is_usage());
        assert!(e.to_string().contains("bad.toml"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
