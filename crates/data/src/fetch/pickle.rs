//! A small reader for the Python pickles (protocols 0-2) that Planetoid's `ind.<name>.*` files
//! are: SciPy CSR matrices, NumPy arrays and a `defaultdict` of adjacency lists, written by
//! Python 2.
//!
//! It is a stack machine over the opcodes those files use plus their protocol-0/1 siblings; it
//! never imports or calls anything. A `GLOBAL` becomes a name, `REDUCE`/`NEWOBJ` an instance
//! that records the name and its arguments, `BUILD` attaches the state to it. The few classes
//! Planetoid uses are then interpreted by [`ndarray`], [`csr`] and [`int_lists`].
//!
//! Compound values live in an arena and are referenced by index, so that `BUILD` on a memoised
//! object is seen through every later `GET` of it, as in Python.

use std::collections::HashMap;
use std::rc::Rc;

/// A pickled value. Compound values are [`Value::Ref`]s into [`Pickle::objs`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A Python 2 `str` (bytes; NumPy's raw array data is one).
    Bytes(Rc<Vec<u8>>),
    Str(Rc<str>),
    Ref(usize),
}

/// A compound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global {
        module: String,
        name: String,
    },
    /// The result of calling a global: `callable(*args)`, then `BUILD` with `state`, then
    /// appends and set-items (a `defaultdict` is a dict built this way).
    Instance {
        callable: Value,
        args: Vec<Value>,
        state: Option<Value>,
        list: Vec<Value>,
        dict: Vec<(Value, Value)>,
    },
}

/// A parsed pickle: its top value and the arena it points into.
#[derive(Debug)]
pub struct Pickle {
    pub top: Value,
    pub objs: Vec<Obj>,
}

enum Slot {
    Mark,
    V(Value),
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Value>,
    objs: Vec<Obj>,
}

type R<T> = std::result::Result<T, String>;

/// Parses a pickle. Errors are a short message with the byte offset.
pub fn parse(bytes: &[u8]) -> R<Pickle> {
    let mut p = Parser {
        b: bytes,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        objs: Vec::new(),
    };
    let top = p.run()?;
    Ok(Pickle { top, objs: p.objs })
}

impl Parser<'_> {
    fn take(&mut self, n: usize) -> R<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("byte {}: truncated (wanted {n} more bytes)", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> R<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn line(&mut self) -> R<String> {
        let rest = &self.b[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| format!("byte {}: unterminated text argument", self.pos))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Slot::V(v));
    }

    fn new_obj(&mut self, o: Obj) -> Value {
        self.objs.push(o);
        Value::Ref(self.objs.len() - 1)
    }

    fn pop(&mut self) -> R<Value> {
        match self.stack.pop() {
            Some(Slot::V(v)) => Ok(v),
            Some(Slot::Mark) => Err(format!("byte {}: unexpected MARK on the stack", self.pos)),
            None => Err(format!("byte {}: stack underflow", self.pos)),
        }
    }

    fn top(&self) -> R<Value> {
        match self.stack.last() {
            Some(Slot::V(v)) => Ok(v.clone()),
            _ => Err(format!("byte {}: no value on the stack", self.pos)),
        }
    }

    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let at = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| format!("byte {}: no MARK on the stack", self.pos))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .filter_map(|s| match s {
                Slot::V(v) => Some(v),
                Slot::Mark => None,
            })
            .collect())
    }

    fn obj_mut(&mut self, v: &Value) -> R<&mut Obj> {
        let pos = self.pos;
        match v {
            Value::Ref(i) => self
                .objs
                .get_mut(*i)
                .ok_or_else(|| format!("byte {pos}: dangling reference")),
            _ => Err(format!("byte {pos}: {v:?} is not a container")),
        }
    }

    fn append(&mut self, target: &Value, items: Vec<Value>) -> R<()> {
        let pos = self.pos;
        match self.obj_mut(target)? {
            Obj::List(l) | Obj::Instance { list: l, .. } => {
                l.extend(items);
                Ok(())
            }
            _ => Err(format!("byte {pos}: APPEND to a non-list")),
        }
    }

    fn set_items(&mut self, target: &Value, items: Vec<Value>) -> R<()> {
        let pos = self.pos;
        if !items.len().is_multiple_of(2) {
            return Err(format!("byte {pos}: odd number of dict items"));
        }
        let pairs: Vec<(Value, Value)> = items
            .chunks_exact(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect();
        match self.obj_mut(target)? {
            Obj::Dict(d) | Obj::Instance { dict: d, .. } => {
                d.extend(pairs);
                Ok(())
            }
            _ => Err(format!("byte {pos}: SETITEM on a non-dict")),
        }
    }

    fn memo_key(&mut self, op: u8) -> R<u32> {
        Ok(match op {
            b'q' | b'h' => u32::from(self.u8()?),
            b'r' | b'j' => u32::from_le_bytes(self.le::<4>()?),
            _ => {
                let l = self.line()?;
                l.trim()
                    .parse()
                    .map_err(|_| format!("byte {}: bad memo key {l:?}", self.pos))?
            }
        })
    }

    fn run(&mut self) -> R<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let v = self.u8()?;
                    if v > 2 {
                        return Err(format!("byte {at}: pickle protocol {v} (only 0-2 read)"));
                    }
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Slot::Mark),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?;
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'I' => {
                    let l = self.line()?;
                    let v = match l.trim() {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        t => {
                            Value::Int(t.parse().map_err(|_| format!("byte {at}: bad INT {l:?}"))?)
                        }
                    };
                    self.push(v);
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.le::<4>()?);
                    self.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le::<2>()?);
                    self.push(Value::Int(i64::from(v)));
                }
                b'L' => {
                    let l = self.line()?;
                    let t = l.trim().trim_end_matches('L');
                    let v = t
                        .parse()
                        .map_err(|_| format!("byte {at}: bad LONG {l:?}"))?;
                    self.push(Value::Int(v));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        usize::from(self.u8()?)
                    } else {
                        let n = i32::from_le_bytes(self.le::<4>()?);
                        usize::try_from(n).map_err(|_| format!("byte {at}: negative LONG4"))?
                    };
                    if n > 8 {
                        return Err(format!("byte {at}: integer of {n} bytes does not fit i64"));
                    }
                    let bytes = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, &b) in bytes.iter().enumerate() {
                        v |= i64::from(b) << (8 * i);
                    }
                    if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.push(Value::Int(v));
                }
                b'F' => {
                    let l = self.line()?;
                    let v = l
                        .trim()
                        .parse()
                        .map_err(|_| format!("byte {at}: bad FLOAT {l:?}"))?;
                    self.push(Value::Float(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le::<8>()?);
                    self.push(Value::Float(v));
                }
                b'S' => {
                    let l = self.line()?;
                    let b =
                        unquote_py2(l.trim()).ok_or_else(|| format!("byte {at}: bad STRING"))?;
                    self.push(Value::Bytes(Rc::new(b)));
                }
                b'T' | b'U' => {
                    let n = if op == b'U' {
                        usize::from(self.u8()?)
                    } else {
                        let n = i32::from_le_bytes(self.le::<4>()?);
                        usize::try_from(n).map_err(|_| format!("byte {at}: negative length"))?
                    };
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(Rc::new(b)));
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.le::<4>()?) as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.push(Value::Str(s.into()));
                }
                b'V' => {
                    let l = self.line()?;
                    self.push(Value::Str(l.into()));
                }
                b')' => {
                    let v = self.new_obj(Obj::Tuple(Vec::new()));
                    self.push(v);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let v = self.new_obj(Obj::Tuple(items));
                    self.push(v);
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let v = self.new_obj(Obj::Tuple(items));
                    self.push(v);
                }
                b']' => {
                    let v = self.new_obj(Obj::List(Vec::new()));
                    self.push(v);
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let v = self.new_obj(Obj::List(items));
                    self.push(v);
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.append(&list, vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.append(&list, items)?;
                }
                b'}' => {
                    let v = self.new_obj(Obj::Dict(Vec::new()));
                    self.push(v);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let v = self.new_obj(Obj::Dict(Vec::new()));
                    self.set_items(&v, items)?;
                    self.push(v);
                }
                b's' => {
                    let val = self.pop()?;
                    let key = self.pop()?;
                    let d = self.top()?;
                    self.set_items(&d, vec![key, val])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?;
                    self.set_items(&d, items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let v = self.new_obj(Obj::Global { module, name });
                    self.push(v);
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let args = match &args {
                        Value::Ref(i) => match self.objs.get(*i) {
                            Some(Obj::Tuple(t)) => t.clone(),
                            _ => return Err(format!("byte {at}: call arguments are not a tuple")),
                        },
                        _ => return Err(format!("byte {at}: call arguments are not a tuple")),
                    };
                    let v = self.new_obj(Obj::Instance {
                        callable,
                        args,
                        state: None,
                        list: Vec::new(),
                        dict: Vec::new(),
                    });
                    self.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    match self.obj_mut(&target)? {
                        Obj::Instance { state: s, .. } => *s = Some(state),
                        _ => return Err(format!("byte {at}: BUILD on a non-instance")),
                    }
                }
                b'p' | b'q' | b'r' => {
                    let k = self.memo_key(op)?;
                    let v = self.top()?;
                    self.memo.insert(k, v);
                }
                b'g' | b'h' | b'j' => {
                    let k = self.memo_key(op)?;
                    let v = self
                        .memo
                        .get(&k)
                        .cloned()
                        .ok_or_else(|| format!("byte {at}: memo key {k} was never stored"))?;
                    self.push(v);
                }
                other => {
                    return Err(format!(
                        "byte {at}: unsupported pickle opcode 0x{other:02x}"
                    ));
                }
            }
        }
    }
}

/// Decodes a protocol-0 `STRING` argument: a Python 2 `repr` of a byte string.
fn unquote_py2(s: &str) -> Option<Vec<u8>> {
    let q = s.chars().next()?;
    if !(q == '\'' || q == '"') || !s.ends_with(q) || s.len() < 2 {
        return None;
    }
    let inner = s.get(1..s.len() - 1)?.as_bytes();
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *inner.get(i + 1)?;
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'x' => {
                let h = std::str::from_utf8(inner.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// A NumPy array's numbers, widened.
#[derive(Debug, Clone, PartialEq)]
pub enum Numbers {
    Int(Vec<i64>),
    Float(Vec<f64>),
}

impl Numbers {
    pub fn as_f64(&self) -> Vec<f64> {
        match self {
            Numbers::Int(v) => v.iter().map(|&x| x as f64).collect(),
            Numbers::Float(v) => v.clone(),
        }
    }

    /// The values as integers; floats must be whole.
    pub fn as_i64(&self) -> Option<Vec<i64>> {
        match self {
            Numbers::Int(v) => Some(v.clone()),
            Numbers::Float(v) => v
                .iter()
                .map(|&x| (x.fract() == 0.0 && x.abs() < 9e15).then_some(x as i64))
                .collect(),
        }
    }
}

/// A dense NumPy array in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Numbers,
}

/// A SciPy CSR matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    pub rows: usize,
    pub cols: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<usize>,
    pub data: Vec<f64>,
}

impl Pickle {
    fn obj(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Ref(i) => self.objs.get(*i),
            _ => None,
        }
    }

    fn tuple(&self, v: &Value) -> Option<&[Value]> {
        match self.obj(v)? {
            Obj::Tuple(t) => Some(t),
            _ => None,
        }
    }

    /// `module.name` of a global, or of the callable that made an instance.
    pub fn class_of(&self, v: &Value) -> Option<String> {
        match self.obj(v)? {
            Obj::Global { module, name } => Some(format!("{module}.{name}")),
            Obj::Instance { callable, .. } => self.class_of(callable),
            _ => None,
        }
    }

    fn int(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    fn text(v: &Value) -> Option<String> {
        match v {
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }

    /// Reads a `numpy.core.multiarray._reconstruct` instance (an `ndarray`).
    pub fn ndarray(&self, v: &Value) -> R<Array> {
        let class = self.class_of(v).unwrap_or_default();
        let Some(Obj::Instance {
            state: Some(state), ..
        }) = self.obj(v)
        else {
            return Err(format!("expected a NumPy array, found {class:?}"));
        };
        if !class.ends_with("_reconstruct") {
            return Err(format!("expected a NumPy array, found {class:?}"));
        }
        // ndarray.__reduce__ state: (version, shape, dtype, is_fortran, raw bytes).
        let st = self.tuple(state).ok_or("array state is not a tuple")?;
        let [_, shape, dtype, fortran, raw] = st else {
            return Err(format!("array state has {} fields, expected 5", st.len()));
        };
        let shape: Vec<usize> = self
            .tuple(shape)
            .ok_or("array shape is not a tuple")?
            .iter()
            .map(|d| Self::int(d).and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or("array shape holds a non-integer")?;
        if Self::int(fortran) == Some(1) && shape.len() > 1 {
            return Err("Fortran-order arrays are not supported".into());
        }
        let Value::Bytes(raw) = raw else {
            return Err("array data is not a byte string (object arrays are not supported)".into());
        };
        let (code, order) = self.dtype(dtype)?;
        let n: usize = shape.iter().product();
        let data = decode_numbers(&code, order, raw, n)?;
        Ok(Array { shape, data })
    }

    /// (type code like `f4`, byte order char) of a `numpy.dtype` instance.
    fn dtype(&self, v: &Value) -> R<(String, char)> {
        let Some(Obj::Instance { args, state, .. }) = self.obj(v) else {
            return Err("array dtype is not a numpy.dtype".into());
        };
        let code = args
            .first()
            .and_then(Self::text)
            .ok_or("dtype has no type code")?;
        // dtype state: (version, byte order, ...); absent means native, little-endian here.
        let order = state
            .as_ref()
            .and_then(|s| self.tuple(s))
            .and_then(|t| t.get(1))
            .and_then(Self::text)
            .and_then(|s| s.chars().next())
            .unwrap_or('<');
        Ok((code, order))
    }

    /// Reads a `scipy.sparse` CSR matrix (pickled through `__dict__`).
    pub fn csr(&self, v: &Value) -> R<Csr> {
        let class = self.class_of(v).unwrap_or_default();
        let Some(Obj::Instance {
            state: Some(state), ..
        }) = self.obj(v)
        else {
            return Err(format!("expected a SciPy CSR matrix, found {class:?}"));
        };
        let Some(Obj::Dict(d)) = self.obj(state) else {
            return Err(format!("{class} state is not a dict"));
        };
        let get = |k: &str| {
            d.iter()
                .find(|(key, _)| Self::text(key).as_deref() == Some(k))
                .map(|(_, v)| v)
        };
        if let Some(f) = get("format").and_then(Self::text)
            && f != "csr"
        {
            return Err(format!("sparse format {f:?}, expected csr"));
        }
        let shape = get("_shape")
            .or_else(|| get("shape"))
            .and_then(|s| self.tuple(s))
            .ok_or("CSR matrix has no shape")?;
        let dims: Vec<usize> = shape
            .iter()
            .map(|d| Self::int(d).and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or("CSR shape holds a non-integer")?;
        let [rows, cols] = dims[..] else {
            return Err(format!("CSR shape {dims:?} is not 2-D"));
        };
        let idx = |k: &str| -> R<Vec<usize>> {
            let a = self.ndarray(get(k).ok_or(format!("CSR matrix has no {k}"))?)?;
            a.data
                .as_i64()
                .and_then(|v| v.into_iter().map(|x| usize::try_from(x).ok()).collect())
                .ok_or(format!("CSR {k} holds a negative or non-integer value"))
        };
        let indptr = idx("indptr")?;
        let indices = idx("indices")?;
        let data = self
            .ndarray(get("data").ok_or("CSR matrix has no data")?)?
            .data
            .as_f64();
        if indptr.len() != rows + 1
            || indptr.first() != Some(&0)
            || indptr.windows(2).any(|w| w[0] > w[1])
            || indptr.last() != Some(&indices.len())
            || data.len() != indices.len()
            || indices.iter().any(|&c| c >= cols)
        {
            return Err(format!(
                "inconsistent CSR matrix ({rows}x{cols}, {} row pointers, {} indices, {} values)",
                indptr.len(),
                indices.len(),
                data.len()
            ));
        }
        Ok(Csr {
            rows,
            cols,
            indptr,
            indices,
            data,
        })
    }

    /// Reads a dict (or `defaultdict`) of int -> list of ints, as Planetoid's graph.
    pub fn int_lists(&self, v: &Value) -> R<Vec<(usize, Vec<usize>)>> {
        let pairs = match self.obj(v) {
            Some(Obj::Dict(d)) | Some(Obj::Instance { dict: d, .. }) => d,
            _ => return Err("expected a dict of adjacency lists".into()),
        };
        let id = |x: &Value| Self::int(x).and_then(|i| usize::try_from(i).ok());
        pairs
            .iter()
            .map(|(k, l)| {
                let k = id(k).ok_or("a dict key is not a node id")?;
                let list = match self.obj(l) {
                    Some(Obj::List(l)) | Some(Obj::Tuple(l)) => l,
                    _ => return Err(format!("adjacency of node {k} is not a list")),
                };
                let ns = list
                    .iter()
                    .map(id)
                    .collect::<Option<Vec<_>>>()
                    .ok_or(format!("adjacency of node {k} holds a non-id"))?;
                Ok((k, ns))
            })
            .collect()
    }
}

fn decode_numbers(code: &str, order: char, raw: &[u8], n: usize) -> R<Numbers> {
    let size: usize = code
        .get(1..)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("unsupported dtype {code:?}"))?;
    if raw.len() != n.saturating_mul(size) {
        return Err(format!(
            "array of {n} x {code} needs {} bytes, has {}",
            n.saturating_mul(size),
            raw.len()
        ));
    }
    let big = order == '>';
    let word = |c: &[u8]| -> [u8; 8] {
        let mut w = [0u8; 8];
        if big {
            for (i, &b) in c.iter().rev().enumerate() {
                w[i] = b;
            }
        } else {
            w[..c.len()].copy_from_slice(c);
        }
        w
    };
    let kind = code.as_bytes()[0];
    let chunks = raw.chunks_exact(size);
    Ok(match (kind, size) {
        (b'f', 4) => Numbers::Float(chunks.map(|c| f32_of(&word(c))).collect()),
        (b'f', 8) => Numbers::Float(chunks.map(|c| f64::from_le_bytes(word(c))).collect()),
        (b'i', 1 | 2 | 4 | 8) => Numbers::Int(
            chunks
                .map(|c| {
                    let v = i64::from_le_bytes(word(c));
                    let shift = 64 - 8 * size as u32;
                    (v << shift) >> shift
                })
                .collect(),
        ),
        (b'u' | b'b', 1 | 2 | 4) => {
            Numbers::Int(chunks.map(|c| i64::from_le_bytes(word(c))).collect())
        }
        _ => return Err(format!("unsupported dtype {code:?}")),
    })
}

fn f32_of(w: &[u8; 8]) -> f64 {
    f64::from(f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// A protocol-2 pickle writer for the values Planetoid's files hold: NumPy arrays (through
/// `numpy.core.multiarray._reconstruct` and `BUILD`, as NumPy pickles them), SciPy CSR
/// matrices and `collections.defaultdict(list)` adjacency. It builds Planetoid folders without
/// Python: the converter's tests and the fuzz harness's seeds. Integers are `BININT2`, so
/// shapes and values stay below 65536.
#[derive(Debug, Clone)]
pub struct Writer(Vec<u8>);

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

impl Writer {
    /// An empty pickle (the `PROTO 2` opcode written).
    pub fn new() -> Writer {
        Writer(vec![0x80, 2])
    }

    /// Raw opcodes and their arguments.
    pub fn op(&mut self, b: &[u8]) -> &mut Writer {
        self.0.extend_from_slice(b);
        self
    }

    /// `GLOBAL module name`.
    pub fn global(&mut self, module: &str, name: &str) -> &mut Writer {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }

    /// `BININT2 v`.
    pub fn int(&mut self, v: u16) -> &mut Writer {
        self.op(b"M").op(&v.to_le_bytes())
    }

    /// `SHORT_BINSTRING s` (at most 255 bytes).
    pub fn short(&mut self, s: &str) -> &mut Writer {
        let n = s.len().min(255);
        self.op(&[b'U', n as u8]).op(&s.as_bytes()[..n])
    }

    /// `BINSTRING b`.
    pub fn bin(&mut self, b: &[u8]) -> &mut Writer {
        self.op(b"T").op(&(b.len() as i32).to_le_bytes()).op(b)
    }

    /// A NumPy array of dtype `code` (`i4`, `f4`, …, little-endian) and `shape`, its raw
    /// `data`: `_reconstruct(ndarray, (0,), 'b')`, then `BUILD` with the state tuple
    /// `(1, shape, dtype, False, data)`.
    pub fn ndarray(&mut self, code: &str, shape: &[u16], data: &[u8]) -> &mut Writer {
        self.global("numpy.core.multiarray", "_reconstruct")
            .global("numpy", "ndarray")
            .int(0)
            .op(&[0x85])
            .short("b")
            .op(&[0x87, b'R', b'('])
            .int(1)
            .op(b"(");
        for &d in shape {
            self.int(d);
        }
        self.op(b"t")
            .global("numpy", "dtype")
            .short(code)
            .int(0)
            .int(1)
            .op(&[0x87, b'R', b'('])
            .int(3)
            .short("<")
            .op(b"NNN")
            .op(b"J\xff\xff\xff\xffJ\xff\xff\xff\xff")
            .int(0)
            .op(b"tb")
            .op(&[0x89])
            .bin(data)
            .op(b"tb")
    }

    /// A `scipy.sparse.csr_matrix` of `rows × cols` (int32 `indptr`/`indices`, float32 `data`).
    pub fn csr(
        &mut self,
        rows: u16,
        cols: u16,
        indptr: &[i32],
        indices: &[i32],
        data: &[f32],
    ) -> &mut Writer {
        let i32s = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let f32s: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let len = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        self.global("scipy.sparse.csr", "csr_matrix")
            .op(&[b')', 0x81, b'}', b'('])
            .short("format")
            .short("csr")
            .short("_shape")
            .int(rows)
            .int(cols)
            .op(&[0x86])
            .short("indptr")
            .ndarray("i4", &[len(indptr.len())], &i32s(indptr))
            .short("indices")
            .ndarray("i4", &[len(indices.len())], &i32s(indices))
            .short("data")
            .ndarray("f4", &[len(data.len())], &f32s)
            .op(b"ub")
    }

    /// `defaultdict(list, {node: [neighbours…]})`, as Planetoid's `graph` files are written.
    pub fn adjacency(&mut self, lists: &[(u16, &[u16])]) -> &mut Writer {
        self.global("collections", "defaultdict")
            .global("__builtin__", "list")
            .op(&[0x85, b'R', b'(']);
        for (node, nbrs) in lists {
            self.int(*node).op(b"](");
            for &n in *nbrs {
                self.int(n);
            }
            self.op(b"e");
        }
        self.op(b"u")
    }

    /// The bytes, `STOP` appended.
    pub fn finish(&mut self) -> Vec<u8> {
        self.op(b".");
        std::mem::take(&mut self.0)
    }
}
