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
    /// Returns the first value that is out of range, naming its key. Per-field ranges are
    /// declared beside the fields ([`config_section!`](crate::config_section)); this holds the
    /// rules that involve several fields.
    fn validate(&self) -> std::result::Result<(), ConfigError> {
        Ok(())
    }
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
    T: Serialize + DeserializeOwned + Default + Validate + ConfigValue,
{
    let cfg: T = load_layers(None, file, sets)?;
    Ok(Checked::new(cfg)?.into_inner())
}

/// Defaults, then `base` (`(origin, toml text)`, e.g. an embedded preset), then `file`, then
/// `sets`; each layer is parsed into `T` as soon as it is applied so an error names its layer.
/// Range checks are the caller's (see [`Checked`]).
pub fn load_layers<T>(base: Option<(&str, &str)>, file: Option<&Path>, sets: &[String]) -> Result<T>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut table = to_table(&T::default())?;
    if let Some((origin, text)) = base {
        let overlay: Table = toml::from_str(text).map_err(|e| parse_err(origin, e))?;
        merge(&mut table, overlay);
        from_table::<T>(&table, origin)?;
    }
    if let Some(path) = file {
        let bytes = read_config_file(path)?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Parse {
            origin: path.display().to_string(),
            msg: "not UTF-8 text".into(),
        })?;
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
    from_table::<T>(&table, "config")
}

/// Reads a configuration file: a regular file of at most 16 MiB (a FIFO or `/dev/zero` is
/// refused instead of read without end).
fn read_config_file(path: &Path) -> std::result::Result<Vec<u8>, ConfigError> {
    const MAX: u64 = 16 << 20;
    let err = |msg: String| ConfigError::Parse {
        origin: path.display().to_string(),
        msg,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    if meta.len() > MAX {
        return Err(err(format!(
            "{} bytes; a configuration is at most 16 MiB",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(path).map_err(|e| err(format!("cannot read: {e}")))?,
            MAX + 1,
        ),
        &mut bytes,
    )
    .map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX {
        return Err(err(
            "more than 16 MiB; a configuration is at most 16 MiB".into()
        ));
    }
    Ok(bytes)
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
    ConfigError::Parse {
        origin: origin.to_string(),
        msg: one_line(&e),
    }
    .into()
}

/// A TOML error on one line. toml's messages span several lines with a caret diagram (`1 |
/// [fed`, `  |     ^`); one line is what a CLI user needs, and the key or the line and column
/// are already in the others.
pub fn one_line(e: &dyn std::fmt::Display) -> String {
    let diagram = |l: &str| {
        l.starts_with('^')
            || l.split_once('|')
                .is_some_and(|(pre, _)| pre.trim().chars().all(|c| c.is_ascii_digit()))
    };
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !diagram(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Deserialises `T` from an already parsed table; the error is one line and names the key
/// (`invalid type: string "x", expected u64 in `fed.rounds``).
pub fn from_toml_table<T: DeserializeOwned>(table: &Table) -> std::result::Result<T, String> {
    T::deserialize(Value::Table(table.clone())).map_err(|e| one_line(&e))
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

/// One key or section of a configuration, as `--print-config` shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyDoc {
    /// A value: its dotted key, one-line doc, allowed range and current value (`None` when
    /// unset, e.g. an optional path).
    Key {
        /// Dotted key, e.g. `train.epochs`.
        key: String,
        /// The field's one-line doc.
        doc: String,
        /// Allowed values in words, e.g. `1..=10000`; empty when any value of the type is.
        range: String,
        /// The value; `None` when unset.
        value: Option<Value>,
    },
    /// A nested section (`[train]`), with its keys.
    Section {
        /// Dotted key of the section.
        key: String,
        /// The section's one-line doc.
        doc: String,
        /// Its keys and sub-sections.
        children: Vec<KeyDoc>,
        /// False for an optional section that is unset (its keys are shown commented out).
        present: bool,
    },
}

/// A value that can appear in a configuration: a scalar, a list, or a section declared with
/// [`config_section!`](crate::config_section). Sections recurse into their fields, so the
/// checks and docs of nested sections are reached from the root.
pub trait ConfigValue {
    /// Appends this value's documentation under `key`.
    fn describe_into(&self, key: &str, doc: &str, range: &str, out: &mut Vec<KeyDoc>);
    /// Runs the range checks of a section's fields (scalars have none of their own).
    fn check_at(&self, _key: &str) -> std::result::Result<(), ConfigError> {
        Ok(())
    }
    /// True for a string that is empty or only whitespace: set, yet naming nothing.
    fn is_blank(&self) -> bool {
        false
    }
}

/// Documents a value that is one TOML value (for [`ConfigValue`] impls of enums and other
/// scalars defined outside core).
pub fn scalar_doc<T: Serialize>(v: &T, key: &str, doc: &str, range: &str, out: &mut Vec<KeyDoc>) {
    out.push(KeyDoc::Key {
        key: key.to_string(),
        doc: doc.to_string(),
        range: range.to_string(),
        value: Value::try_from(v).ok(),
    });
}

macro_rules! scalar_config_values {
    ($($t:ty),*) => {$(
        impl ConfigValue for $t {
            fn describe_into(&self, key: &str, doc: &str, range: &str, out: &mut Vec<KeyDoc>) {
                scalar_doc(self, key, doc, range, out);
            }
        }
    )*};
}
scalar_config_values!(bool, u8, u16, u32, u64, usize, i32, i64, f32, f64);

impl ConfigValue for String {
    fn describe_into(&self, key: &str, doc: &str, range: &str, out: &mut Vec<KeyDoc>) {
        scalar_doc(self, key, doc, range, out);
    }
    fn is_blank(&self) -> bool {
        self.trim().is_empty()
    }
}

impl<T: Serialize> ConfigValue for Vec<T> {
    fn describe_into(&self, key: &str, doc: &str, range: &str, out: &mut Vec<KeyDoc>) {
        scalar_doc(self, key, doc, range, out);
    }
}

impl<T: ConfigValue + Default> ConfigValue for Option<T> {
    fn describe_into(&self, key: &str, doc: &str, range: &str, out: &mut Vec<KeyDoc>) {
        match self {
            Some(v) => v.describe_into(key, doc, range, out),
            None => {
                // Unset: show what setting it would look like (the type's defaults), marked
                // as absent so the printed file still parses to the same configuration.
                let mut tmp = Vec::new();
                T::default().describe_into(key, doc, range, &mut tmp);
                for d in tmp {
                    out.push(match d {
                        KeyDoc::Key {
                            key, doc, range, ..
                        } => KeyDoc::Key {
                            key,
                            doc,
                            range,
                            value: None,
                        },
                        KeyDoc::Section {
                            key, doc, children, ..
                        } => KeyDoc::Section {
                            key,
                            doc,
                            children,
                            present: false,
                        },
                    });
                }
            }
        }
    }
    fn check_at(&self, key: &str) -> std::result::Result<(), ConfigError> {
        match self {
            // An optional path or name set to "" would be read as the working folder or a
            // file named "", and fail later with a message that names no key.
            Some(v) if v.is_blank() => Err(ConfigError::Invalid {
                key: key.to_string(),
                value: "\"\"".into(),
                reason:
                    "is empty (or only spaces): name a path, or leave the key out for its default"
                        .into(),
            }),
            Some(v) => v.check_at(key),
            None => Ok(()),
        }
    }
}

/// True when no value of a grid repeats: a repeated grid point would run twice under one unit
/// name and write the same metric keys twice.
pub fn distinct<T: PartialEq>(v: &[T]) -> bool {
    (1..v.len()).all(|i| !v[..i].contains(&v[i]))
}

/// Joins a section key and a field name (`""` + `train` = `train`).
pub fn join_key(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// Declares a configuration section: the struct (serde, `deny_unknown_fields`), its `Default`
/// from the per-field defaults, and its range checks and docs, each declared once beside its
/// field.
///
/// ```
/// ferrolab_core::config_section! {
///     /// Optimisation.
///     pub struct Train {
///         /// Passes over the training set.
///         pub epochs: usize = 10, "1..=100000" => |v| (1..=100_000).contains(v);
///         /// Adam learning rate.
///         pub lr: f64 = 1e-3, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
///         /// Optional label (any value).
///         pub tag: Option<String> = None;
///     }
/// }
/// let t = Train::default();
/// assert_eq!(t.epochs, 10);
/// use ferrolab_core::config::ConfigValue;
/// assert!(t.check_at("train").is_ok());
/// let bad = Train { lr: -1.0, ..Train::default() };
/// assert!(bad.check_at("train").unwrap_err().to_string().contains("train.lr"));
/// ```
#[macro_export]
macro_rules! config_section {
    (
        $(#[doc = $sdoc:literal])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $fdoc:literal])*
                $fvis:vis $field:ident : $ty:ty = $default:expr
                    $(, $range:literal => $check:expr)? ;
            )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        $vis struct $name {
            $(
                $(#[doc = $fdoc])*
                $fvis $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)* }
            }
        }

        impl $crate::config::ConfigValue for $name {
            fn describe_into(
                &self,
                key: &str,
                doc: &str,
                _range: &str,
                out: &mut Vec<$crate::config::KeyDoc>,
            ) {
                let mut children = Vec::new();
                $(
                    $crate::config::ConfigValue::describe_into(
                        &self.$field,
                        &$crate::config::join_key(key, stringify!($field)),
                        concat!($($fdoc),*).trim(),
                        $crate::config_section!(@range $($range)?),
                        &mut children,
                    );
                )*
                out.push($crate::config::KeyDoc::Section {
                    key: key.to_string(),
                    doc: doc.to_string(),
                    children,
                    present: true,
                });
            }

            fn check_at(&self, key: &str) -> std::result::Result<(), $crate::ConfigError> {
                $(
                    let k = $crate::config::join_key(key, stringify!($field));
                    $(
                        let ok: fn(&$ty) -> bool = $check;
                        if !ok(&self.$field) {
                            return Err($crate::ConfigError::Invalid {
                                key: k,
                                value: $crate::config::show(&self.$field),
                                reason: format!("must be {}", $range),
                            });
                        }
                    )?
                    $crate::config::ConfigValue::check_at(&self.$field, &k)?;
                )*
                Ok(())
            }
        }
    };
    (@range $r:literal) => { $r };
    (@range) => { "" };
}

/// A value as the user would write it in TOML (for error messages).
pub fn show<T: Serialize>(v: &T) -> String {
    match Value::try_from(v) {
        Ok(Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => "?".into(),
    }
}

/// The documentation tree of a whole configuration (its root is a section with key `""`).
pub fn describe<T: ConfigValue>(cfg: &T) -> Vec<KeyDoc> {
    let mut out = Vec::new();
    cfg.describe_into("", "", "", &mut out);
    match out.pop() {
        Some(KeyDoc::Section { children, .. }) => children,
        Some(other) => vec![other],
        None => Vec::new(),
    }
}

/// The resolved configuration as TOML, each key preceded by its doc and allowed range as a
/// comment; unset optional keys are commented out. Parsing the output gives back `cfg`.
pub fn to_documented_toml<T: ConfigValue>(cfg: &T) -> String {
    let mut s = String::new();
    render_section(&describe(cfg), "", true, &mut s);
    s
}

fn render_section(items: &[KeyDoc], header: &str, present: bool, s: &mut String) {
    use std::fmt::Write as _;
    let c = if present { "" } else { "# " };
    if !header.is_empty() {
        let _ = writeln!(s, "{c}[{header}]");
    }
    // TOML needs a table's own keys before its sub-tables.
    for it in items {
        if let KeyDoc::Key {
            key,
            doc,
            range,
            value,
        } = it
        {
            let leaf = key.rsplit('.').next().unwrap_or(key);
            let mut comment = doc.clone();
            if !range.is_empty() {
                comment.push_str(&format!(" [{range}]"));
            }
            if !comment.is_empty() {
                let _ = writeln!(s, "# {comment}");
            }
            match value {
                Some(v) if present => {
                    let _ = writeln!(s, "{leaf} = {v}");
                }
                Some(v) => {
                    let _ = writeln!(s, "# {leaf} = {v}");
                }
                None => {
                    let _ = writeln!(s, "# {leaf} = (unset)");
                }
            }
        }
    }
    for it in items {
        if let KeyDoc::Section {
            key,
            doc,
            children,
            present: p,
        } = it
        {
            s.push('\n');
            if !doc.is_empty() {
                let _ = writeln!(s, "# {doc}");
            }
            render_section(children, key, present && *p, s);
        }
    }
}

crate::config_section! {
    /// Optimisation keys every system shares: `train.epochs`, `train.batch_size`, `train.lr`,
    /// `train.weight_decay`, `train.patience`, `train.seeds`. A system declares its own
    /// defaults where it embeds the section, and refuses keys it does not use (see
    /// [`TrainSection::unused`]).
    pub struct TrainSection {
        /// Maximum epochs (passes over the training data).
        pub epochs: usize = 10, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Mini-batch size (examples per step).
        pub batch_size: usize = 64, "1..=1000000" => |v| (1..=1_000_000).contains(v);
        /// Learning rate of the optimiser (Adam).
        pub lr: f64 = 1e-3, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// L2 weight decay.
        pub weight_decay: f64 = 0.0, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Epochs without improvement of the validation metric before stopping (0 = never
        /// stop early; the best-validation weights are still the ones evaluated).
        pub patience: usize = 0;
        /// Runs per method; run i's seeds derive from `--seed` and `run<i>`.
        pub seeds: usize = 1, "1..=1000" => |v| (1..=1000).contains(v);
    }
}

impl TrainSection {
    /// The patience to give the loop's early stopping (`0` = never stop early).
    pub fn early_stopping_patience(&self) -> usize {
        if self.patience == 0 {
            usize::MAX
        } else {
            self.patience
        }
    }

    /// Refuses a key the system does not use when it differs from the system's default
    /// (`default`), so a setting is never silently ignored.
    pub fn unused(
        &self,
        default: &TrainSection,
        system: &str,
        keys: &[&str],
    ) -> std::result::Result<(), ConfigError> {
        for &k in keys {
            let differs = match k {
                "batch_size" => self.batch_size != default.batch_size,
                "weight_decay" => self.weight_decay != default.weight_decay,
                "patience" => self.patience != default.patience,
                _ => false,
            };
            if differs {
                return Err(ConfigError::Invalid {
                    key: format!("train.{k}"),
                    value: match k {
                        "batch_size" => self.batch_size.to_string(),
                        "weight_decay" => self.weight_decay.to_string(),
                        _ => self.patience.to_string(),
                    },
                    reason: format!("is not used by {system} (leave it at its default)"),
                });
            }
        }
        Ok(())
    }
}

/// A configuration that passed every check: the only form a system's library entry point
/// accepts, so a library user cannot skip validation (linfa's checked-parameters idea).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked<C>(C);

impl<C: ConfigValue + Validate> Checked<C> {
    /// Runs every field's range check, then the cross-field rules of [`Validate`].
    pub fn new(cfg: C) -> std::result::Result<Self, ConfigError> {
        cfg.check_at("")?;
        cfg.validate()?;
        Ok(Checked(cfg))
    }
}

impl<C> Checked<C> {
    /// The checked configuration.
    pub fn get(&self) -> &C {
        &self.0
    }
    /// Gives the configuration back (to change it, check it again).
    pub fn into_inner(self) -> C {
        self.0
    }
}

impl<C> std::ops::Deref for Checked<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::config_section! {
        /// Training.
        pub struct Train {
            /// Learning rate.
            pub lr: f64 = 0.1, "> 0" => |v| *v > 0.0;
            /// Epochs.
            pub epochs: usize = 3;
        }
    }
    crate::config_section! {
        /// Root.
        pub struct Cfg {
            /// A name.
            pub name: String = "a".into();
            /// Training section.
            pub train: Train = Train::default();
            /// An optional path
            /// spanning two doc lines.
            pub path: Option<String> = None;
            /// An optional section.
            pub extra: Option<Train> = None;
        }
    }
    impl Validate for Cfg {}

    #[test]
    fn printed_config_documents_every_key_and_parses_back() {
        let mut c = Cfg {
            path: Some("x y".into()),
            ..Cfg::default()
        };
        c.train.epochs = 9;
        let text = to_documented_toml(&c);
        assert!(text.contains("# Learning rate. [> 0]\nlr = 0.1"), "{text}");
        assert!(
            text.contains("# An optional path spanning two doc lines."),
            "{text}"
        );
        // The unset optional section is shown, commented out.
        assert!(
            text.contains("# [extra]") && text.contains("# lr = 0.1"),
            "{text}"
        );
        let back: Cfg = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let c2 = Cfg {
            path: None,
            ..c.clone()
        };
        let back: Cfg = toml::from_str(&to_documented_toml(&c2)).unwrap();
        assert_eq!(back, c2);
    }

    #[test]
    fn checked_runs_nested_range_checks() {
        let mut c = Cfg::default();
        assert!(Checked::new(c.clone()).is_ok());
        c.extra = Some(Train {
            lr: -1.0,
            epochs: 1,
        });
        let e = Checked::new(c).unwrap_err().to_string();
        assert!(e.contains("extra.lr") && e.contains("must be > 0"), "{e}");
    }

    #[test]
    fn an_optional_string_set_to_nothing_is_refused_by_key() {
        for blank in ["", "  "] {
            let c: Cfg = load_layers(None, None, &[format!("path=\"{blank}\"")]).unwrap();
            let e = Checked::new(c).unwrap_err().to_string();
            assert!(e.contains("path") && e.contains("is empty"), "{e}");
        }
        let c: Cfg = load_layers(None, None, &["path=\"data\"".into()]).unwrap();
        assert!(Checked::new(c).is_ok());
        // A required string may be empty where its own check allows it.
        let c: Cfg = load_layers(None, None, &["name=\"\"".into()]).unwrap();
        assert!(Checked::new(c).is_ok());
    }

    #[test]
    fn preset_layer_comes_between_defaults_and_sets() {
        let c: Cfg = load_layers(
            Some(("preset p", "[train]\nepochs = 5\nlr = 0.2\n")),
            None,
            &["train.lr=0.3".into()],
        )
        .unwrap();
        assert_eq!(c.train, Train { lr: 0.3, epochs: 5 });
        let e = load_layers::<Cfg>(Some(("preset p", "[train]\nlrr = 1\n")), None, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("preset p"), "{e}");
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
