//! The metered evaluator: CEL's semantics over a message, every step
//! charged to a budget.
//!
//! Values borrow from the message's parsed payload and from the program's
//! literals wherever they can (`data.call.direction` copies nothing), and
//! lists a macro builds grow in place. Numbers from JSON are integers when
//! they are whole and fit, doubles otherwise; arithmetic and comparison mix
//! integers and doubles freely (a JSON number has no CEL type to keep).

use std::rc::Rc;
use std::time::{Duration, Instant};

use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue};
use serde::ser::{SerializeMap, SerializeSeq};
use serde_json::Value as Json;

use super::{
    Program, BUDGET, FILTER_BUDGET, FILTER_DEADLINE, MAX_OUTPUT_BYTES, REGEX_STATE_BYTES_PER_UNIT,
    TRANSFORMATION_DEADLINE,
};

/// Units spent between two looks at the clock (about 17 µs of work).
const UNITS_PER_LOOK: u64 = 1024;

/// What an expression sees of a message.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub event_type: &'a str,
    pub data: &'a Json,
    pub channels: &'a [String],
    pub event_id: Option<&'a str>,
    /// RFC 3339, as in the body's `timestamp`.
    pub timestamp: &'a str,
}

/// Why an evaluation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// It spent its budget (or would have built a value past the limit).
    #[error("the expression exceeded its cost budget")]
    Budget,
    /// It ran past its wall-clock deadline.
    #[error("the expression ran past its deadline")]
    Deadline,
    /// A CEL error: a missing key, a wrong type, a division by zero…
    #[error("{0}")]
    Failed(String),
}

type R<T> = Result<T, EvalError>;

fn fail<T>(text: impl Into<String>) -> R<T> {
    Err(EvalError::Failed(text.into()))
}

impl Program {
    /// Whether the message passes the filter, within a filter's budget.
    /// Anything but `true` or `false` is an error.
    pub fn matches(&self, input: &Input<'_>) -> Result<bool, EvalError> {
        let mut run = Run::new(self, input, FILTER_BUDGET, (None, FILTER_DEADLINE));
        run.eval(&self.root).and_then(Val::into_decision)
    }

    /// [`Program::matches`] drawing on `budget` (what is left of a
    /// message's [`super::FANOUT_BUDGET`]), at most a filter's budget, and
    /// stopping at `deadline` (the message's) or after
    /// [`FILTER_DEADLINE`], whichever comes first; what it spends is taken
    /// off `budget`.
    pub fn matches_within(
        &self,
        input: &Input<'_>,
        budget: &mut u64,
        deadline: Instant,
    ) -> Result<bool, EvalError> {
        let allowed = (*budget).min(FILTER_BUDGET);
        let mut run = Run::new(self, input, allowed, (Some(deadline), FILTER_DEADLINE));
        let outcome = run.eval(&self.root);
        *budget -= allowed - run.left;
        outcome.and_then(Val::into_decision)
    }

    /// The JSON the transformation yields for the message, as bytes.
    pub fn render(&self, input: &Input<'_>) -> Result<Vec<u8>, EvalError> {
        let mut run = Run::new(self, input, BUDGET, (None, TRANSFORMATION_DEADLINE));
        let value = run.eval(&self.root)?;
        let mut out = Limited(Vec::new());
        if serde_json::to_writer(&mut out, &value).is_err() {
            return Err(EvalError::Budget);
        }
        run.charge(bytes_cost(out.0.len()))?;
        Ok(out.0)
    }
}

/// A writer that refuses to grow past [`MAX_OUTPUT_BYTES`].
struct Limited(Vec<u8>);

impl std::io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT_BYTES {
            return Err(std::io::Error::other("output too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn bytes_cost(bytes: usize) -> u64 {
    (bytes / 32) as u64
}

#[derive(Debug, Clone)]
enum Text<'a> {
    Borrowed(&'a str),
    Owned(Rc<str>),
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }
}

#[derive(Debug, Clone)]
enum List<'a> {
    Json(&'a [Json]),
    Owned(Rc<Vec<Val<'a>>>),
}

#[derive(Debug, Clone)]
enum Map<'a> {
    Json(&'a serde_json::Map<String, Json>),
    Owned(Rc<Vec<(Rc<str>, Val<'a>)>>),
}

#[derive(Debug, Clone)]
enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Text<'a>),
    List(List<'a>),
    Map(Map<'a>),
}

fn from_json(value: &Json) -> Val<'_> {
    match value {
        Json::Null => Val::Null,
        Json::Bool(b) => Val::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Val::Int(i),
            (None, Some(u)) => Val::UInt(u),
            _ => Val::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Val::Str(Text::Borrowed(s)),
        Json::Array(items) => Val::List(List::Json(items)),
        Json::Object(fields) => Val::Map(Map::Json(fields)),
    }
}

impl<'a> List<'a> {
    fn len(&self) -> usize {
        match self {
            List::Json(items) => items.len(),
            List::Owned(items) => items.len(),
        }
    }

    fn get(&self, index: usize) -> Option<Val<'a>> {
        match self {
            List::Json(items) => items.get(index).map(from_json),
            List::Owned(items) => items.get(index).cloned(),
        }
    }
}

impl<'a> Map<'a> {
    fn len(&self) -> usize {
        match self {
            Map::Json(fields) => fields.len(),
            Map::Owned(entries) => entries.len(),
        }
    }

    fn get(&self, key: &str) -> Option<Val<'a>> {
        match self {
            Map::Json(fields) => fields.get(key).map(from_json),
            Map::Owned(entries) => entries
                .iter()
                .find(|(k, _)| &**k == key)
                .map(|(_, v)| v.clone()),
        }
    }

    fn keys(&self) -> Vec<Val<'a>> {
        match self {
            Map::Json(fields) => fields.keys().map(|k| Val::Str(Text::Borrowed(k))).collect(),
            Map::Owned(entries) => entries
                .iter()
                .map(|(k, _)| Val::Str(Text::Owned(k.clone())))
                .collect(),
        }
    }
}

impl Val<'_> {
    /// A filter's answer: anything but `true` or `false` is an error.
    fn into_decision(self) -> R<bool> {
        match self {
            Val::Bool(b) => Ok(b),
            other => fail(format!(
                "a filter must yield true or false, not {}",
                other.kind()
            )),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::UInt(_) => "uint",
            Val::Double(_) => "double",
            Val::Str(_) => "string",
            Val::List(_) => "list",
            Val::Map(_) => "map",
        }
    }

    fn number(&self) -> Option<Number> {
        match self {
            Val::Int(i) => Some(Number::Int(*i)),
            Val::UInt(u) => Some(Number::UInt(*u)),
            Val::Double(d) => Some(Number::Double(*d)),
            _ => None,
        }
    }
}

impl serde::Serialize for Val<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Null => serializer.serialize_unit(),
            Val::Bool(b) => serializer.serialize_bool(*b),
            Val::Int(i) => serializer.serialize_i64(*i),
            Val::UInt(u) => serializer.serialize_u64(*u),
            Val::Double(d) => serializer.serialize_f64(*d),
            Val::Str(s) => serializer.serialize_str(s.as_str()),
            Val::List(List::Json(items)) => items.serialize(serializer),
            Val::List(List::Owned(items)) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items.iter() {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Val::Map(Map::Json(fields)) => fields.serialize(serializer),
            Val::Map(Map::Owned(entries)) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries.iter() {
                    map.serialize_entry(&**key, value)?;
                }
                map.end()
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Number {
    Int(i64),
    UInt(u64),
    Double(f64),
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::UInt(u) => u as f64,
            Number::Double(d) => d,
        }
    }

    fn as_i128(self) -> Option<i128> {
        match self {
            Number::Int(i) => Some(i128::from(i)),
            Number::UInt(u) => Some(i128::from(u)),
            Number::Double(_) => None,
        }
    }

    fn compare(self, other: Number) -> Option<std::cmp::Ordering> {
        match (self.as_i128(), other.as_i128()) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => self.as_f64().partial_cmp(&other.as_f64()),
        }
    }
}

/// A name in scope: a macro's variable or accumulator. While a macro's
/// step runs, reading its accumulator moves it out (`taking`), so the list
/// `map` and `filter` build is extended in place instead of copied on
/// every element; the standard macros read it at most once per step.
struct Binding<'a> {
    name: &'a str,
    value: Option<Val<'a>>,
    taking: bool,
}

struct Run<'a, 'i> {
    program: &'a Program,
    input: &'i Input<'a>,
    left: u64,
    /// The caller's deadline, if it has one, and how long this evaluation
    /// may run: measured from the first look at the clock, about 1,024
    /// units in, so that an evaluation that never gets that far never
    /// reads the clock at all (a read costs about as much as a small
    /// filter).
    deadline: (Option<Instant>, Duration),
    first_look: Option<Instant>,
    /// Units spent since the clock was last read.
    unlooked: u64,
    scope: Vec<Binding<'a>>,
}

impl<'a, 'i> Run<'a, 'i> {
    fn new(
        program: &'a Program,
        input: &'i Input<'a>,
        budget: u64,
        deadline: (Option<Instant>, Duration),
    ) -> Self {
        Self {
            program,
            input,
            left: budget,
            deadline,
            first_look: None,
            unlooked: 0,
            scope: Vec::new(),
        }
    }

    /// Takes `units` off the budget; every [`UNITS_PER_LOOK`] units, also
    /// checks the deadline.
    fn charge(&mut self, units: u64) -> R<()> {
        match self.left.checked_sub(units) {
            Some(left) => {
                self.left = left;
                self.unlooked += units;
                if self.unlooked >= UNITS_PER_LOOK {
                    self.unlooked = 0;
                    let now = Instant::now();
                    let (outer, within) = self.deadline;
                    let own = *self.first_look.get_or_insert(now) + within;
                    if now >= outer.map_or(own, |outer| outer.min(own)) {
                        return Err(EvalError::Deadline);
                    }
                }
                Ok(())
            }
            None => {
                self.left = 0;
                Err(EvalError::Budget)
            }
        }
    }

    fn eval(&mut self, expr: &'a IdedExpr) -> R<Val<'a>> {
        self.charge(1)?;
        match &expr.expr {
            Expr::Literal(literal) => literal_value(literal),
            Expr::Ident(name) => self.lookup(name),
            Expr::Select(select) => {
                let operand = self.eval(&select.operand)?;
                let Val::Map(map) = operand else {
                    return fail(format!(
                        "no field `{}` on a {}",
                        select.field,
                        operand.kind()
                    ));
                };
                match map.get(&select.field) {
                    Some(value) if !select.test => Ok(value),
                    found if select.test => Ok(Val::Bool(found.is_some())),
                    _ => fail(format!("no such key: {}", select.field)),
                }
            }
            Expr::List(list) => {
                let mut items = Vec::with_capacity(list.elements.len());
                for element in &list.elements {
                    items.push(self.eval(element)?);
                }
                Ok(Val::List(List::Owned(Rc::new(items))))
            }
            Expr::Map(map) => {
                let mut entries: Vec<(Rc<str>, Val<'a>)> = Vec::with_capacity(map.entries.len());
                for entry in &map.entries {
                    let EntryExpr::MapEntry(entry) = &entry.expr else {
                        return fail("struct fields are not supported");
                    };
                    let key = match self.eval(&entry.key)? {
                        Val::Str(key) => key,
                        other => {
                            return fail(format!(
                                "map keys must be strings (the body is JSON), not {}",
                                other.kind()
                            ))
                        }
                    };
                    self.charge(entries.len() as u64)?;
                    if entries.iter().any(|(k, _)| &**k == key.as_str()) {
                        return fail(format!("repeated map key `{}`", key.as_str()));
                    }
                    let value = self.eval(&entry.value)?;
                    entries.push((Rc::from(key.as_str()), value));
                }
                Ok(Val::Map(Map::Owned(Rc::new(entries))))
            }
            Expr::Comprehension(comprehension) => {
                let base = self.scope.len();
                let result = self.comprehension(comprehension);
                self.scope.truncate(base);
                result
            }
            Expr::Call(call) => self.call(expr.id, call),
            Expr::Struct(_) | Expr::Unspecified => fail("unsupported expression"),
        }
    }

    fn lookup(&mut self, name: &str) -> R<Val<'a>> {
        if let Some(binding) = self.scope.iter_mut().rev().find(|b| b.name == name) {
            let value = if binding.taking {
                binding.value.take()
            } else {
                binding.value.clone()
            };
            return value.map_or_else(|| fail(format!("`{name}` read twice")), Ok);
        }
        let input = self.input;
        Ok(match name {
            "type" => Val::Str(Text::Borrowed(input.event_type)),
            "data" => from_json(input.data),
            "channels" => {
                self.charge(input.channels.len() as u64)?;
                Val::List(List::Owned(Rc::new(
                    input
                        .channels
                        .iter()
                        .map(|c| Val::Str(Text::Borrowed(c)))
                        .collect(),
                )))
            }
            "eventId" => input
                .event_id
                .map_or(Val::Null, |id| Val::Str(Text::Borrowed(id))),
            "timestamp" => Val::Str(Text::Borrowed(input.timestamp)),
            _ => return fail(format!("unknown name `{name}`")),
        })
    }

    fn comprehension(&mut self, c: &'a ComprehensionExpr) -> R<Val<'a>> {
        let range = self.eval(&c.iter_range)?;
        let (list, keys) = match range {
            Val::List(list) => (list, None),
            Val::Map(map) => {
                self.charge(map.len() as u64)?;
                (List::Json(&[]), Some(map.keys()))
            }
            other => return fail(format!("cannot iterate over a {}", other.kind())),
        };
        let count = keys.as_ref().map_or(list.len(), Vec::len);
        let accu = self.eval(&c.accu_init)?;
        let accu_at = self.scope.len();
        self.scope.push(Binding {
            name: &c.accu_var,
            value: Some(accu),
            taking: false,
        });
        for index in 0..count {
            self.charge(1)?;
            let item = match &keys {
                Some(keys) => keys[index].clone(),
                None => list.get(index).unwrap_or(Val::Null),
            };
            self.scope.push(Binding {
                name: &c.iter_var,
                value: Some(item),
                taking: false,
            });
            match self.eval(&c.loop_cond)? {
                Val::Bool(true) => {}
                Val::Bool(false) => break,
                other => return fail(format!("a loop condition yielded a {}", other.kind())),
            }
            self.scope[accu_at].taking = true;
            let step = self.eval(&c.loop_step);
            self.scope[accu_at].taking = false;
            self.scope[accu_at].value = Some(step?);
            self.scope.pop();
        }
        self.eval(&c.result)
    }

    fn call(&mut self, id: u64, call: &'a CallExpr) -> R<Val<'a>> {
        let args = &call.args;
        match (call.func_name.as_str(), args.len()) {
            ("_&&_", 2) => return self.logical(&args[0], &args[1], false),
            ("_||_", 2) => return self.logical(&args[0], &args[1], true),
            ("_?_:_", 3) => {
                return match self.eval(&args[0])? {
                    Val::Bool(true) => self.eval(&args[1]),
                    Val::Bool(false) => self.eval(&args[2]),
                    other => fail(format!("a condition must be a bool, not {}", other.kind())),
                }
            }
            ("@not_strictly_false", 1) => {
                return match self.eval(&args[0]) {
                    Ok(Val::Bool(false)) => Ok(Val::Bool(false)),
                    Err(EvalError::Budget) => Err(EvalError::Budget),
                    _ => Ok(Val::Bool(true)),
                }
            }
            _ => {}
        }
        let target = match &call.target {
            Some(target) => Some(self.eval(target)?),
            None => None,
        };
        let mut values = Vec::with_capacity(args.len() + 1);
        values.extend(target);
        for arg in args {
            values.push(self.eval(arg)?);
        }
        self.apply(id, &call.func_name, values)
    }

    /// `a && b` (or `a || b` with `or`): CEL's commutative logic, where a
    /// decisive side wins over an error on the other.
    fn logical(&mut self, a: &'a IdedExpr, b: &'a IdedExpr, or: bool) -> R<Val<'a>> {
        let left = self.eval(a);
        match &left {
            Ok(Val::Bool(v)) if *v == or => return Ok(Val::Bool(or)),
            Err(EvalError::Budget) => return Err(EvalError::Budget),
            _ => {}
        }
        let right = self.eval(b);
        match (left, right) {
            (_, Ok(Val::Bool(v))) if v == or => Ok(Val::Bool(or)),
            (_, Err(EvalError::Budget)) => Err(EvalError::Budget),
            (Ok(Val::Bool(_)), Ok(Val::Bool(_))) => Ok(Val::Bool(!or)),
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(l), Ok(r)) => fail(format!(
                "`{}` takes bools, not {} and {}",
                if or { "||" } else { "&&" },
                l.kind(),
                r.kind()
            )),
        }
    }

    fn apply(&mut self, id: u64, name: &str, mut args: Vec<Val<'a>>) -> R<Val<'a>> {
        let wrong = |args: &[Val<'_>]| {
            let kinds: Vec<&str> = args.iter().map(Val::kind).collect();
            EvalError::Failed(format!(
                "no overload of `{}` for ({})",
                name.trim_matches('_').trim_start_matches('@'),
                kinds.join(", ")
            ))
        };
        match (name, args.as_mut_slice()) {
            ("_==_", [a, b]) => Ok(Val::Bool(self.equal(a, b)?)),
            ("_!=_", [a, b]) => Ok(Val::Bool(!self.equal(a, b)?)),
            ("_<_" | "_<=_" | "_>_" | "_>=_", [a, b]) => {
                use std::cmp::Ordering::*;
                let order = match (&*a, &*b) {
                    (Val::Str(x), Val::Str(y)) => {
                        self.charge(bytes_cost(x.as_str().len().min(y.as_str().len())))?;
                        Some(x.as_str().cmp(y.as_str()))
                    }
                    (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
                    (x, y) => match (x.number(), y.number()) {
                        (Some(x), Some(y)) => x.compare(y),
                        _ => return Err(wrong(&args)),
                    },
                };
                Ok(Val::Bool(match (name, order) {
                    (_, None) => false,
                    ("_<_", Some(o)) => o == Less,
                    ("_<=_", Some(o)) => o != Greater,
                    ("_>_", Some(o)) => o == Greater,
                    (_, Some(o)) => o != Less,
                }))
            }
            ("_+_", [a, b]) => self.add(std::mem::replace(a, Val::Null), b),
            ("_-_" | "_*_" | "_/_" | "_%_", [a, b]) => {
                arithmetic(name, a, b).unwrap_or_else(|| Err(wrong(&args)))
            }
            ("-_", [Val::Int(i)]) => i
                .checked_neg()
                .map(Val::Int)
                .ok_or_else(|| EvalError::Failed("integer overflow".into())),
            ("-_", [Val::Double(d)]) => Ok(Val::Double(-*d)),
            ("!_", [Val::Bool(b)]) => Ok(Val::Bool(!*b)),
            ("_[_]", [Val::List(list), index]) => {
                let at = match index.number() {
                    Some(Number::Int(i)) => usize::try_from(i).ok(),
                    Some(Number::UInt(u)) => usize::try_from(u).ok(),
                    Some(Number::Double(d)) if d.fract() == 0.0 && d >= 0.0 => Some(d as usize),
                    _ => return Err(wrong(&args)),
                };
                at.and_then(|i| list.get(i))
                    .ok_or_else(|| EvalError::Failed("index out of range".into()))
            }
            ("_[_]", [Val::Map(map), Val::Str(key)]) => map
                .get(key.as_str())
                .ok_or_else(|| EvalError::Failed(format!("no such key: {}", key.as_str()))),
            ("@in", [item, Val::List(list)]) => {
                let list = list.clone();
                for index in 0..list.len() {
                    let element = list.get(index).unwrap_or(Val::Null);
                    if self.equal(item, &element)? {
                        return Ok(Val::Bool(true));
                    }
                }
                Ok(Val::Bool(false))
            }
            ("@in", [Val::Str(key), Val::Map(map)]) => {
                Ok(Val::Bool(map.get(key.as_str()).is_some()))
            }
            ("size", [Val::Str(s)]) => {
                self.charge(bytes_cost(s.as_str().len()))?;
                Ok(Val::Int(s.as_str().chars().count() as i64))
            }
            ("size", [Val::List(list)]) => Ok(Val::Int(list.len() as i64)),
            ("size", [Val::Map(map)]) => Ok(Val::Int(map.len() as i64)),
            ("string", [value]) => {
                let text = match &*value {
                    Val::Str(s) => return Ok(Val::Str(s.clone())),
                    Val::Int(i) => i.to_string(),
                    Val::UInt(u) => u.to_string(),
                    Val::Double(d) => d.to_string(),
                    Val::Bool(b) => b.to_string(),
                    _ => return Err(wrong(&args)),
                };
                Ok(Val::Str(Text::Owned(Rc::from(text))))
            }
            ("int", [value]) => match &*value {
                Val::Int(i) => Ok(Val::Int(*i)),
                Val::UInt(u) => i64::try_from(*u)
                    .map(Val::Int)
                    .map_err(|_| EvalError::Failed("integer overflow".into())),
                Val::Double(d) if d.is_finite() && d.abs() < 9.2e18 => Ok(Val::Int(*d as i64)),
                Val::Str(s) => s.as_str().trim().parse().map(Val::Int).map_err(|_| {
                    EvalError::Failed(format!("cannot convert `{}` to int", s.as_str()))
                }),
                _ => Err(wrong(&args)),
            },
            ("uint", [value]) => match &*value {
                Val::UInt(u) => Ok(Val::UInt(*u)),
                Val::Int(i) => u64::try_from(*i)
                    .map(Val::UInt)
                    .map_err(|_| EvalError::Failed("integer overflow".into())),
                Val::Double(d) if d.is_finite() && *d >= 0.0 && *d < 1.8e19 => {
                    Ok(Val::UInt(*d as u64))
                }
                Val::Str(s) => s.as_str().trim().parse().map(Val::UInt).map_err(|_| {
                    EvalError::Failed(format!("cannot convert `{}` to uint", s.as_str()))
                }),
                _ => Err(wrong(&args)),
            },
            ("double", [value]) => match &*value {
                Val::Str(s) => s.as_str().trim().parse().map(Val::Double).map_err(|_| {
                    EvalError::Failed(format!("cannot convert `{}` to double", s.as_str()))
                }),
                other => match other.number() {
                    Some(n) => Ok(Val::Double(n.as_f64())),
                    None => Err(wrong(&args)),
                },
            },
            ("bool", [Val::Bool(b)]) => Ok(Val::Bool(*b)),
            ("bool", [Val::Str(s)]) => match s.as_str() {
                "true" => Ok(Val::Bool(true)),
                "false" => Ok(Val::Bool(false)),
                other => fail(format!("cannot convert `{other}` to bool")),
            },
            ("dyn", [value]) => Ok(std::mem::replace(value, Val::Null)),
            ("contains" | "startsWith" | "endsWith", [Val::Str(s), Val::Str(part)]) => {
                let (s, part) = (s.as_str(), part.as_str());
                self.charge(bytes_cost(s.len()))?;
                Ok(Val::Bool(match name {
                    "contains" => s.contains(part),
                    "startsWith" => s.starts_with(part),
                    _ => s.ends_with(part),
                }))
            }
            ("matches", [Val::Str(s), Val::Str(_)]) => {
                let Some(pattern) = self.program.patterns.get(&id) else {
                    return fail("`matches` takes its pattern as a string literal");
                };
                // Paid before it runs: a search cannot be stopped midway.
                let bytes = s.as_str().len() as u64;
                let steps = pattern.states.saturating_mul(bytes);
                self.charge(1 + bytes / 32 + steps / REGEX_STATE_BYTES_PER_UNIT)?;
                Ok(Val::Bool(pattern.regex.is_match(s.as_str())))
            }
            ("lowerAscii" | "upperAscii" | "trim", [Val::Str(s)]) => {
                let s = s.as_str();
                self.charge(bytes_cost(s.len()))?;
                let out = match name {
                    "lowerAscii" => s.to_ascii_lowercase(),
                    "upperAscii" => s.to_ascii_uppercase(),
                    _ => s.trim().to_owned(),
                };
                Ok(Val::Str(Text::Owned(Rc::from(out))))
            }
            ("replace", [Val::Str(s), Val::Str(from), Val::Str(to)]) => {
                let (s, from, to) = (s.as_str(), from.as_str(), to.as_str());
                let count = if from.is_empty() {
                    s.chars().count() + 1
                } else {
                    s.matches(from).count()
                };
                let size = s.len() + count.saturating_mul(to.len());
                self.text_fits(size)?;
                self.charge(bytes_cost(s.len() + size))?;
                Ok(Val::Str(Text::Owned(Rc::from(s.replace(from, to)))))
            }
            ("join", [Val::List(list), rest @ ..]) if rest.len() <= 1 => {
                let separator = match rest {
                    [Val::Str(s)] => s.as_str().to_owned(),
                    [] => String::new(),
                    _ => return Err(wrong(&args)),
                };
                let mut out = String::new();
                for index in 0..list.len() {
                    self.charge(1)?;
                    match list.get(index) {
                        Some(Val::Str(s)) => {
                            if index > 0 {
                                out.push_str(&separator);
                            }
                            out.push_str(s.as_str());
                            self.text_fits(out.len())?;
                        }
                        Some(other) => {
                            return fail(format!("`join` takes strings, not {}", other.kind()))
                        }
                        None => {}
                    }
                }
                self.charge(bytes_cost(out.len()))?;
                Ok(Val::Str(Text::Owned(Rc::from(out))))
            }
            _ => Err(wrong(&args)),
        }
    }

    fn text_fits(&mut self, bytes: usize) -> R<()> {
        if bytes > MAX_OUTPUT_BYTES {
            return Err(EvalError::Budget);
        }
        Ok(())
    }

    fn add(&mut self, a: Val<'a>, b: &Val<'a>) -> R<Val<'a>> {
        match (a, b) {
            (Val::Str(x), Val::Str(y)) => {
                let size = x.as_str().len() + y.as_str().len();
                self.text_fits(size)?;
                self.charge(bytes_cost(size))?;
                let mut out = String::with_capacity(size);
                out.push_str(x.as_str());
                out.push_str(y.as_str());
                Ok(Val::Str(Text::Owned(Rc::from(out))))
            }
            (Val::List(x), Val::List(y)) => {
                let mut items = match x {
                    List::Owned(items) => items,
                    List::Json(items) => {
                        self.charge(items.len() as u64)?;
                        Rc::new(items.iter().map(from_json).collect())
                    }
                };
                // In place when nothing else holds the list (a macro's
                // accumulator); a copy, charged, otherwise.
                if Rc::strong_count(&items) > 1 {
                    self.charge(items.len() as u64)?;
                }
                self.charge(y.len() as u64)?;
                if items.len() + y.len() > MAX_OUTPUT_BYTES / 8 {
                    return Err(EvalError::Budget);
                }
                let owned = Rc::make_mut(&mut items);
                for index in 0..y.len() {
                    owned.extend(y.get(index));
                }
                Ok(Val::List(List::Owned(items)))
            }
            (x, y) => match arithmetic("_+_", &x, y) {
                Some(result) => result,
                None => fail(format!(
                    "no overload of `+` for ({}, {})",
                    x.kind(),
                    y.kind()
                )),
            },
        }
    }

    fn equal(&mut self, a: &Val<'a>, b: &Val<'a>) -> R<bool> {
        self.charge(1)?;
        Ok(match (a, b) {
            (Val::Null, Val::Null) => true,
            (Val::Bool(x), Val::Bool(y)) => x == y,
            (Val::Str(x), Val::Str(y)) => {
                self.charge(bytes_cost(x.as_str().len().min(y.as_str().len())))?;
                x.as_str() == y.as_str()
            }
            (Val::List(x), Val::List(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for index in 0..x.len() {
                    let (l, r) = (x.get(index), y.get(index));
                    if let (Some(l), Some(r)) = (l, r) {
                        if !self.equal(&l, &r)? {
                            return Ok(false);
                        }
                    }
                }
                true
            }
            (Val::Map(x), Val::Map(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for key in x.keys() {
                    let Val::Str(key) = key else { continue };
                    match (x.get(key.as_str()), y.get(key.as_str())) {
                        (Some(l), Some(r)) if self.equal(&l, &r)? => {}
                        _ => return Ok(false),
                    }
                }
                true
            }
            (x, y) => match (x.number(), y.number()) {
                (Some(x), Some(y)) => x.compare(y) == Some(std::cmp::Ordering::Equal),
                _ => false,
            },
        })
    }
}

fn literal_value<'a>(literal: &'a LiteralValue) -> R<Val<'a>> {
    Ok(match literal {
        LiteralValue::Boolean(b) => Val::Bool(*b.inner()),
        LiteralValue::Int(i) => Val::Int(*i.inner()),
        LiteralValue::UInt(u) => Val::UInt(*u.inner()),
        LiteralValue::Double(d) => Val::Double(*d.inner()),
        LiteralValue::String(s) => Val::Str(Text::Borrowed(s.inner())),
        LiteralValue::Null => Val::Null,
        LiteralValue::Bytes(_) => return fail("bytes are not supported (the body is JSON)"),
    })
}

/// `-`, `*`, `/`, `%` (and `+` on numbers): integers stay integers (an
/// overflow is an error), anything with a double is a double. `None`: not
/// numbers.
fn arithmetic<'a>(name: &str, a: &Val<'a>, b: &Val<'a>) -> Option<R<Val<'a>>> {
    let (x, y) = (a.number()?, b.number()?);
    let overflow = || EvalError::Failed("integer overflow".into());
    let zero = || EvalError::Failed("division by zero".into());
    Some(match (x, y) {
        (Number::Int(x), Number::Int(y)) => match name {
            "_+_" => x.checked_add(y).map(Val::Int).ok_or_else(overflow),
            "_-_" => x.checked_sub(y).map(Val::Int).ok_or_else(overflow),
            "_*_" => x.checked_mul(y).map(Val::Int).ok_or_else(overflow),
            "_/_" if y == 0 => Err(zero()),
            "_/_" => x.checked_div(y).map(Val::Int).ok_or_else(overflow),
            _ if y == 0 => Err(zero()),
            _ => x.checked_rem(y).map(Val::Int).ok_or_else(overflow),
        },
        (Number::UInt(x), Number::UInt(y)) => match name {
            "_+_" => x.checked_add(y).map(Val::UInt).ok_or_else(overflow),
            "_-_" => x.checked_sub(y).map(Val::UInt).ok_or_else(overflow),
            "_*_" => x.checked_mul(y).map(Val::UInt).ok_or_else(overflow),
            _ if y == 0 => Err(zero()),
            "_/_" => Ok(Val::UInt(x / y)),
            _ => Ok(Val::UInt(x % y)),
        },
        (x, y) => {
            let (x, y) = (x.as_f64(), y.as_f64());
            match name {
                "_+_" => Ok(Val::Double(x + y)),
                "_-_" => Ok(Val::Double(x - y)),
                "_*_" => Ok(Val::Double(x * y)),
                "_/_" => Ok(Val::Double(x / y)),
                _ => return None,
            }
        }
    })
}
