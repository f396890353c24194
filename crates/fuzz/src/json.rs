//! JSON-aware mutation (checkpoint `meta.json` and the safetensors header): one node replaced
//! by a value at or beyond a bound, by another type, or removed.

use crate::rng::Rng;
use serde_json::{Value, json};

fn paths(v: &Value, here: &mut Vec<PathSeg>, out: &mut Vec<Vec<PathSeg>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                here.push(PathSeg::Key(k.clone()));
                paths(c, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                here.push(PathSeg::Index(i));
                paths(c, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum PathSeg {
    Key(String),
    Index(usize),
}

fn node<'a>(v: &'a mut Value, path: &[PathSeg]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        cur = match (seg, cur) {
            (PathSeg::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (PathSeg::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn replacement(rng: &mut Rng, old: &Value) -> Value {
    let near = |rng: &mut Rng, x: i64| -> Value {
        json!(*rng.pick(&[
            x.saturating_sub(1),
            x.saturating_add(1),
            x.saturating_mul(1000),
            -x
        ]))
    };
    match rng.below(12) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(i64::MAX),
        4 => json!(1u64 << 32),
        5 => json!(1e308),
        6 => json!(0.5),
        7 => Value::Null,
        8 => json!(""),
        9 => json!([]),
        10 => match old.as_i64() {
            Some(x) => near(rng, x),
            None => json!({}),
        },
        _ => match old {
            Value::String(s) => json!(format!("{s}x")),
            Value::Array(a) => {
                let mut a = a.clone();
                if let Some(first) = a.first().cloned() {
                    a.push(first);
                }
                Value::Array(a)
            }
            _ => json!("text"),
        },
    }
}

/// Mutates one to three nodes of `v`. Returns false when `v` has nothing to mutate.
pub fn mutate(rng: &mut Rng, v: &mut Value) -> bool {
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let mut all = Vec::new();
        paths(v, &mut Vec::new(), &mut all);
        // Leaves and small nodes: the root itself is replaced rarely.
        let chosen = if all.len() > 1 {
            all[1 + rng.below(all.len() - 1)].clone()
        } else {
            return false;
        };
        let Some((last, parent_path)) = chosen.split_last() else {
            return false;
        };
        if rng.chance(0.15) {
            // Delete the node.
            match (last, node(v, parent_path)) {
                (PathSeg::Key(k), Some(Value::Object(m))) => {
                    m.remove(k);
                }
                (PathSeg::Index(i), Some(Value::Array(a))) if *i < a.len() => {
                    a.remove(*i);
                }
                _ => {}
            }
            continue;
        }
        if let Some(n) = node(v, &chosen) {
            let new = replacement(rng, n);
            *n = new;
        }
    }
    true
}
