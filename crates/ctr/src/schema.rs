//! The field schema of a CTR data set and its encoding into embedding-table rows.
//!
//! Every field becomes one embedding vector per instance: a categorical field looks up its
//! value's row, a multi-hot field (e.g. genres) averages the rows of its values, and a numeric
//! field scales its one field row by the value (FuxiCTR's numeric embedding). All fields share
//! one table: each categorical or multi-hot field owns `vocab + 1` consecutive rows, the first
//! of which is its out-of-vocabulary bucket; each numeric field owns one row.
//!
//! An instance is encoded as `slots` (id, weight) pairs: one slot per categorical or numeric
//! field, in schema order, followed by `max_len` slots per multi-hot field (unused slots have
//! weight 0). The model's field order is the same: single-slot fields first, then multi-hot.

use crate::error::{CtrError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What kind of values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// One category per instance.
    Categorical,
    /// A set of categories per instance (averaged), at most `max_len`.
    MultiHot,
    /// One real value per instance.
    Numeric,
}

/// One field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// Column name.
    pub name: String,
    /// Kind of values.
    pub kind: FieldKind,
    /// Known categories (empty for numeric fields); category `vocab[i]` has row `offset + 1 + i`.
    #[serde(default)]
    pub vocab: Vec<String>,
    /// Most values kept for a multi-hot field (1 otherwise).
    #[serde(default = "one")]
    pub max_len: usize,
}

fn one() -> usize {
    1
}

impl Field {
    /// A categorical field with the given categories.
    pub fn categorical(name: &str, vocab: Vec<String>) -> Self {
        Field {
            name: name.into(),
            kind: FieldKind::Categorical,
            vocab,
            max_len: 1,
        }
    }
    /// A multi-hot field.
    pub fn multi_hot(name: &str, vocab: Vec<String>, max_len: usize) -> Self {
        Field {
            name: name.into(),
            kind: FieldKind::MultiHot,
            vocab,
            max_len: max_len.max(1),
        }
    }
    /// A numeric field.
    pub fn numeric(name: &str) -> Self {
        Field {
            name: name.into(),
            kind: FieldKind::Numeric,
            vocab: Vec::new(),
            max_len: 1,
        }
    }
    fn rows(&self) -> usize {
        match self.kind {
            FieldKind::Numeric => 1,
            _ => self.vocab.len() + 1,
        }
    }
    fn slots(&self) -> usize {
        match self.kind {
            FieldKind::MultiHot => self.max_len,
            _ => 1,
        }
    }
}

/// The fields of a data set, in column order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// Fields in input-column order.
    pub fields: Vec<Field>,
}

/// Where a field lives in the embedding table and in the slot layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    row: usize,
    slot: usize,
}

/// The schema with its table layout and category look-up maps.
#[derive(Debug, Clone)]
pub struct Layout {
    schema: Schema,
    places: Vec<Place>,
    /// Model position (single-slot fields first, then multi-hot) of each schema field.
    positions: Vec<usize>,
    maps: Vec<HashMap<String, u32>>,
    rows: usize,
    slots: usize,
}

impl Layout {
    /// Lays out `schema`; fails on duplicate field names or categories.
    pub fn new(schema: Schema) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        for f in &schema.fields {
            if !seen.insert(f.name.as_str()) {
                return Err(CtrError::Invalid(format!(
                    "schema: field `{}` appears twice",
                    f.name
                )));
            }
        }
        if schema.fields.is_empty() {
            return Err(CtrError::Invalid("schema: no fields".into()));
        }
        let mut places = vec![Place { row: 0, slot: 0 }; schema.fields.len()];
        let mut positions = vec![0; schema.fields.len()];
        let (mut row, mut slot, mut pos) = (0, 0, 0);
        // Single-slot fields first, then multi-hot, so the model can take the singles as one
        // contiguous block.
        for pass_multi in [false, true] {
            for (i, f) in schema.fields.iter().enumerate() {
                if (f.kind == FieldKind::MultiHot) != pass_multi {
                    continue;
                }
                places[i] = Place { row, slot };
                positions[i] = pos;
                row += f.rows();
                slot += f.slots();
                pos += 1;
            }
        }
        let mut maps = Vec::with_capacity(schema.fields.len());
        for f in &schema.fields {
            let mut m = HashMap::with_capacity(f.vocab.len());
            for (i, v) in f.vocab.iter().enumerate() {
                if m.insert(v.clone(), i as u32 + 1).is_some() {
                    return Err(CtrError::Invalid(format!(
                        "schema: field `{}` lists category {v:?} twice",
                        f.name
                    )));
                }
            }
            maps.push(m);
        }
        Ok(Layout {
            schema,
            places,
            positions,
            maps,
            rows: row,
            slots: slot,
        })
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
    /// Rows of the shared embedding table.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Slots per encoded instance.
    pub fn slots(&self) -> usize {
        self.slots
    }
    /// Number of fields.
    pub fn num_fields(&self) -> usize {
        self.schema.fields.len()
    }
    /// Number of single-slot (categorical or numeric) fields.
    pub fn num_single(&self) -> usize {
        self.schema
            .fields
            .iter()
            .filter(|f| f.kind != FieldKind::MultiHot)
            .count()
    }
    /// `max_len` of each multi-hot field, in model order.
    pub fn multi_lens(&self) -> Vec<usize> {
        self.schema
            .fields
            .iter()
            .filter(|f| f.kind == FieldKind::MultiHot)
            .map(|f| f.max_len)
            .collect()
    }
    /// Model position of the field `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        let i = self.schema.fields.iter().position(|f| f.name == name)?;
        Some(self.positions[i])
    }
    /// Field names joined for messages.
    pub fn field_names(&self) -> String {
        self.schema
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Row id of category index `value` (0-based into the vocabulary; `None` = OOV) of field `i`.
    pub fn row_of(&self, i: usize, value: Option<usize>) -> u32 {
        (self.places[i].row + value.map_or(0, |v| v + 1)) as u32
    }

    /// Row id of the category string `value` of field `i` (its OOV row if unknown) and
    /// whether it was known.
    pub fn lookup(&self, i: usize, value: &str) -> (u32, bool) {
        match self.maps[i].get(value) {
            Some(&k) => ((self.places[i].row + k as usize) as u32, true),
            None => (self.places[i].row as u32, false),
        }
    }

    /// Parses one tab-separated row (columns in schema order; multi-hot values separated by
    /// `|`) into `out`; `oov[i]` counts unknown categories of field `i`. Errors say what is
    /// wrong without the line number (the caller adds it).
    pub fn parse_row(
        &self,
        line: &str,
        out: &mut Encoded,
        oov: &mut [u64],
    ) -> std::result::Result<(), String> {
        let cols: Vec<&str> = line.split('\t').collect();
        let n = self.schema.fields.len();
        if cols.len() != n {
            return Err(format!(
                "expected {n} tab-separated fields ({}), found {}{}",
                self.field_names(),
                cols.len(),
                if cols.len() < n {
                    format!(" (missing field `{}`)", self.schema.fields[cols.len()].name)
                } else {
                    String::new()
                }
            ));
        }
        let mut row = Instance::new(self.slots);
        for (i, (f, raw)) in self.schema.fields.iter().zip(&cols).enumerate() {
            let raw = raw.trim();
            let slot = self.places[i].slot;
            match f.kind {
                FieldKind::Categorical => {
                    let (id, known) = self.lookup(i, raw);
                    if !known {
                        oov[i] += 1;
                    }
                    row.set(slot, id, 1.0);
                }
                FieldKind::MultiHot => {
                    let vals: Vec<&str> = raw
                        .split('|')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .take(f.max_len)
                        .collect();
                    let w = 1.0 / vals.len().max(1) as f32;
                    for (k, v) in vals.iter().enumerate() {
                        let (id, known) = self.lookup(i, v);
                        if !known {
                            oov[i] += 1;
                        }
                        row.set(slot + k, id, w);
                    }
                    for k in vals.len()..f.max_len {
                        row.set(slot + k, self.places[i].row as u32, 0.0);
                    }
                }
                FieldKind::Numeric => {
                    let v: f32 = raw
                        .parse()
                        .map_err(|_| format!("field `{}`: {raw:?} is not a number", f.name))?;
                    if !v.is_finite() {
                        return Err(format!("field `{}`: {raw:?} is not finite", f.name));
                    }
                    row.set(slot, self.places[i].row as u32, v);
                }
            }
        }
        out.push(&row, 0.0);
        Ok(())
    }

    /// Writes instance `i` of `data` back as a tab-separated row in schema column order (the
    /// format [`Layout::parse_row`] reads; an OOV value is written as `?`).
    pub fn decode_row(&self, data: &Encoded, i: usize) -> String {
        let s = data.slots;
        let (ids, w) = (&data.ids[i * s..(i + 1) * s], &data.w[i * s..(i + 1) * s]);
        let name = |fi: usize, id: u32| -> String {
            let k = id as usize - self.places[fi].row;
            if k == 0 {
                "?".to_string()
            } else {
                self.schema.fields[fi].vocab[k - 1].clone()
            }
        };
        let cols: Vec<String> = self
            .schema
            .fields
            .iter()
            .enumerate()
            .map(|(fi, f)| {
                let slot = self.places[fi].slot;
                match f.kind {
                    FieldKind::Categorical => name(fi, ids[slot]),
                    FieldKind::Numeric => format!("{}", w[slot]),
                    FieldKind::MultiHot => (slot..slot + f.max_len)
                        .filter(|&k| w[k] > 0.0)
                        .map(|k| name(fi, ids[k]))
                        .collect::<Vec<_>>()
                        .join("|"),
                }
            })
            .collect();
        cols.join("\t")
    }

    /// Starts an instance builder for this layout.
    pub fn instance(&self) -> Instance {
        Instance::new(self.slots)
    }

    /// Sets categorical field `i` of `inst` to category index `value` (`None` = OOV).
    pub fn set_categorical(&self, inst: &mut Instance, i: usize, value: Option<usize>) {
        inst.set(self.places[i].slot, self.row_of(i, value), 1.0);
    }

    /// Sets categorical field `i` of `inst` to the category string `value` (its OOV row if
    /// unknown); returns whether it was known.
    pub fn set_category(&self, inst: &mut Instance, i: usize, value: &str) -> bool {
        let (id, known) = self.lookup(i, value);
        inst.set(self.places[i].slot, id, 1.0);
        known
    }

    /// Sets numeric field `i` of `inst` to `value`.
    pub fn set_numeric(&self, inst: &mut Instance, i: usize, value: f32) {
        inst.set(self.places[i].slot, self.places[i].row as u32, value);
    }

    /// Sets multi-hot field `i` of `inst` to the category indices `values` (averaged).
    pub fn set_multi(&self, inst: &mut Instance, i: usize, values: &[usize]) {
        let f = &self.schema.fields[i];
        let take = values.len().min(f.max_len);
        let w = 1.0 / take.max(1) as f32;
        let slot = self.places[i].slot;
        for (k, &v) in values.iter().take(take).enumerate() {
            inst.set(slot + k, self.row_of(i, Some(v)), w);
        }
        for k in take..f.max_len {
            inst.set(slot + k, self.places[i].row as u32, 0.0);
        }
    }
}

/// One instance's slots while it is being built.
#[derive(Debug, Clone)]
pub struct Instance {
    ids: Vec<u32>,
    w: Vec<f32>,
}

impl Instance {
    fn new(slots: usize) -> Self {
        Instance {
            ids: vec![0; slots],
            w: vec![0.0; slots],
        }
    }
    fn set(&mut self, slot: usize, id: u32, w: f32) {
        self.ids[slot] = id;
        self.w[slot] = w;
    }
}

/// Encoded instances, row-major `[n, slots]`, with 0/1 labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    /// Slots per instance.
    pub slots: usize,
    /// Table row of each slot.
    pub ids: Vec<u32>,
    /// Weight of each slot (1 categorical, 1/count multi-hot, the value for numeric).
    pub w: Vec<f32>,
    /// Click labels (0 or 1).
    pub labels: Vec<f32>,
}

impl Encoded {
    /// Empty set for `slots` slots per instance.
    pub fn new(slots: usize) -> Self {
        Encoded {
            slots,
            ..Default::default()
        }
    }
    /// Number of instances.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Appends an instance with its label.
    pub fn push(&mut self, inst: &Instance, label: f32) {
        self.ids.extend_from_slice(&inst.ids);
        self.w.extend_from_slice(&inst.w);
        self.labels.push(label);
    }
    /// The subset at `idx`.
    pub fn subset(&self, idx: &[usize]) -> Encoded {
        let s = self.slots;
        let mut out = Encoded::new(s);
        for &i in idx {
            out.ids.extend_from_slice(&self.ids[i * s..(i + 1) * s]);
            out.w.extend_from_slice(&self.w[i * s..(i + 1) * s]);
            out.labels.push(self.labels[i]);
        }
        out
    }
    /// Labels as booleans (for the metrics).
    pub fn clicks(&self) -> Vec<bool> {
        self.labels.iter().map(|&l| l > 0.5).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new(Schema {
            fields: vec![
                Field::categorical("user", vec!["a".into(), "b".into()]),
                Field::multi_hot("genres", vec!["x".into(), "y".into(), "z".into()], 2),
                Field::numeric("price"),
            ],
        })
        .unwrap()
    }

    #[test]
    fn layout_puts_single_fields_first() {
        let l = layout();
        assert_eq!(l.rows(), 3 + 1 + 4);
        assert_eq!(l.slots(), 1 + 1 + 2);
        assert_eq!(l.position("user"), Some(0));
        assert_eq!(l.position("price"), Some(1));
        assert_eq!(l.position("genres"), Some(2));
    }

    #[test]
    fn parse_row_encodes_and_counts_oov() {
        let l = layout();
        let mut e = Encoded::new(l.slots());
        let mut oov = vec![0; 3];
        l.parse_row("b\tx|q\t2.5", &mut e, &mut oov).unwrap();
        // user b = row 2; price row 3 with weight 2.5; genres rows 4 (OOV) .. x = 5.
        assert_eq!(e.ids, vec![2, 3, 5, 4]);
        assert_eq!(e.w, vec![1.0, 2.5, 0.5, 0.5]);
        assert_eq!(oov, vec![0, 1, 0]);
        assert_eq!(l.decode_row(&e, 0), "b\tx|?\t2.5");
        let err = l.parse_row("b\tx", &mut e, &mut oov).unwrap_err();
        assert!(err.contains("missing field `price`"), "{err}");
        let err = l.parse_row("b\tx\tcheap", &mut e, &mut oov).unwrap_err();
        assert!(err.contains("not a number"), "{err}");
    }
}
