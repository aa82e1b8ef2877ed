//! Endpoint filters and transformations: expressions in CEL (the Common
//! Expression Language), safe to take from many tenants.
//!
//! The `cel` crate parses (grammar and macro expansion: `has`, `all`,
//! `exists`, `exists_one`, `map`, `filter`); Herald evaluates the tree
//! itself, in [`eval`], because its cost must be bounded while it runs:
//! every node visited, element iterated and byte copied is charged to a
//! budget ([`BUDGET`]), and an expression that spends it fails with
//! [`EvalError::Budget`] instead of holding a worker. The `cel` crate's own
//! interpreter has no such meter.
//!
//! Compiling checks what can be checked before a message exists: the size
//! of the source, how deeply it nests (the parser recurses, so parsing runs
//! on a thread of its own with a large stack), that every name is one of
//! the message's fields (`type`, `data`, `channels`, `eventId`,
//! `timestamp`) or a macro's variable, that every function is one Herald
//! evaluates, and that `matches` patterns are valid regular expressions.
//!
//! Every evaluation is bounded twice: by its unit budget, and by a
//! wall-clock deadline ([`FILTER_DEADLINE`], [`FANOUT_DEADLINE`],
//! [`TRANSFORMATION_DEADLINE`]) that catches whatever the units
//! under-count (a slow machine, a descheduled thread). `matches` runs on the
//! `regex` crate, whose engines take time linear in the input but also in
//! the size of the pattern's automaton: `1[01]{10000}[^01]` over 150 KB of
//! `0`s and `1`s visits ten thousand states per byte (7 s). A `matches`
//! call is therefore charged, before it runs, for the worst its engine can
//! do: the pattern's automaton states times the input's bytes (see
//! [`REGEX_STATE_BYTES_PER_UNIT`]), so such a call is refused at once.

mod eval;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};

pub use eval::{EvalError, Input};

/// The longest expression accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4096;
/// How deeply brackets may nest in the source (checked before parsing).
const MAX_BRACKETS: usize = 32;
/// How deeply the parsed tree may nest: bounds the evaluator's recursion.
pub const MAX_DEPTH: usize = 64;
/// Cost units a transformation may spend: one per node evaluated and per
/// element iterated or compared, one per 32 bytes of text copied, searched
/// or written. A typical filter spends under 10, the Slack transformation
/// of the docs about 20; the budget stops the worst an expression can do
/// within about 2 ms (measured: ~17 ns a unit, release build).
pub const BUDGET: u64 = 100_000;
/// Cost units one filter may spend. Filters run where messages are
/// written (in SQLite's single writer, in PostgreSQL's batch writers), so
/// theirs is smaller: a predicate needs little, and one tenant's filters
/// must not slow every app's writes.
pub const FILTER_BUDGET: u64 = 10_000;
/// Cost units all the filters of one message's endpoints may spend
/// together: past it, the remaining filters fail (their endpoints do not
/// get the message). Bounds the writer's time per message at ~0.35 ms
/// however many filtered endpoints an app has.
pub const FANOUT_BUDGET: u64 = 20_000;
/// The largest body a transformation may yield, and the largest string or
/// list it may build on the way.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;
/// How many (automaton state × input byte) steps of a regular expression
/// one cost unit pays for. Measured worst case of the `regex` crate when
/// its lazy DFA gives up (its PikeVM): 4.7–6.7 ns per state and byte,
/// release build; a unit is about 17 ns, so 2 steps a unit over-counts a
/// little. `^\+1[0-9]{10}$` has 17 states: matching a 12-byte phone
/// number costs about 100 units; `^\+1\d{10}$` (Unicode digits) has 257.
pub const REGEX_STATE_BYTES_PER_UNIT: u64 = 2;
/// The largest compiled `matches` pattern accepted (the `regex` crate's
/// own measure of its program).
pub const MAX_PATTERN_BYTES: usize = 1 << 20;
/// The longest one filter may run (a filter's budget takes about 0.2 ms;
/// the clock is read every 1,024 units, so a filter spending less never
/// reads it, and no small filter fails because its thread was paused).
#[cfg(not(test))]
pub const FILTER_DEADLINE: std::time::Duration = std::time::Duration::from_millis(5);
/// This crate's unit tests check budgets, which a debug build on a busy
/// machine could otherwise see cut short by the clock (the deadline has a
/// test of its own).
#[cfg(test)]
pub const FILTER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest all the filters of one message may run together, in the
/// writer that stores it; past it, the remaining filters fail (their
/// endpoints do not get the message).
pub const FANOUT_DEADLINE: std::time::Duration = std::time::Duration::from_millis(10);
/// The longest one transformation may run (its budget takes about 2 ms).
#[cfg(not(test))]
pub const TRANSFORMATION_DEADLINE: std::time::Duration = std::time::Duration::from_millis(50);
/// See [`FILTER_DEADLINE`] in tests.
#[cfg(test)]
pub const TRANSFORMATION_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
/// The stack the parser runs on (it recurses once per nesting level).
const PARSER_STACK: usize = 64 << 20;

/// The message fields an expression can read.
pub const VARIABLES: [&str; 5] = ["type", "data", "channels", "eventId", "timestamp"];

/// Functions and operators the evaluator implements.
const FUNCTIONS: &[&str] = &[
    "_&&_",
    "_||_",
    "_?_:_",
    "!_",
    "-_",
    "_==_",
    "_!=_",
    "_<_",
    "_<=_",
    "_>_",
    "_>=_",
    "_+_",
    "_-_",
    "_*_",
    "_/_",
    "_%_",
    "_[_]",
    "@in",
    "@not_strictly_false",
    "size",
    "string",
    "int",
    "uint",
    "double",
    "bool",
    "dyn",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "join",
];

/// Why an expression was refused when saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

/// A compiled expression.
#[derive(Debug)]
pub struct Program {
    source: String,
    root: IdedExpr,
    /// `matches` patterns, compiled once, by the id of their call.
    patterns: HashMap<u64, Pattern>,
    /// Whether it reads the message's `timestamp` (known only once the
    /// message is stored).
    reads_timestamp: bool,
}

/// A compiled `matches` pattern and what one input byte may cost it.
#[derive(Debug)]
struct Pattern {
    regex: regex::Regex,
    /// The states of its automaton (Thompson NFA): the most its engine may
    /// visit per input byte.
    states: u64,
}

impl Program {
    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it reads the message's `timestamp`.
    pub fn reads_timestamp(&self) -> bool {
        self.reads_timestamp
    }
}

/// Compiles `source`, or says what is wrong with it.
pub fn compile(source: &str) -> Result<Program, CompileError> {
    if source.trim().is_empty() {
        return Err(CompileError("is empty".into()));
    }
    if source.len() > MAX_SOURCE_BYTES {
        return Err(CompileError(format!(
            "is {} bytes long; at most {MAX_SOURCE_BYTES} are accepted",
            source.len()
        )));
    }
    let mut depth = 0usize;
    for c in source.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_BRACKETS {
                    return Err(CompileError(format!(
                        "nests brackets more than {MAX_BRACKETS} deep"
                    )));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let owned = source.to_owned();
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("herald-expr-parse".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, move || parse(owned))
            .map_err(|e| CompileError(format!("could not start the parser: {e}")))?
            .join()
            .map_err(|_| CompileError("could not be parsed".into()))?
    })
}

fn parse(source: String) -> Result<Program, CompileError> {
    let root = cel::parser::Parser::new()
        .parse(&source)
        .map_err(|errors| CompileError(describe(&errors)))?;
    let depth = depth_of(&root);
    if depth > MAX_DEPTH {
        return Err(CompileError(format!(
            "nests {depth} levels deep; at most {MAX_DEPTH} are accepted"
        )));
    }
    let mut patterns = HashMap::new();
    check(&root, &mut Vec::new(), &mut patterns)?;
    Ok(Program {
        source,
        reads_timestamp: mentions(&root, "timestamp"),
        root,
        patterns,
    })
}

/// The parser's messages, one per line, without its `ERROR: <input>:`
/// prefix but with line and column.
fn describe(errors: &cel::ParseErrors) -> String {
    let lines: Vec<String> = errors
        .errors
        .iter()
        .take(3)
        .map(|e| {
            let text = e.to_string();
            let text = text.strip_prefix("ERROR: <input>:").unwrap_or(&text);
            // The parser repeats the source with a caret; the position says it.
            text.lines().next().unwrap_or_default().to_owned()
        })
        .collect();
    if lines.is_empty() {
        "could not be parsed".into()
    } else {
        format!("syntax error at {}", lines.join("; "))
    }
}

fn children(expr: &IdedExpr) -> Vec<&IdedExpr> {
    match &expr.expr {
        Expr::Call(call) => call
            .target
            .as_deref()
            .into_iter()
            .chain(&call.args)
            .collect(),
        Expr::Select(select) => vec![&select.operand],
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => entries(&map.entries),
        Expr::Struct(s) => entries(&s.entries),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

/// The keys and values of a map (or struct) literal's entries.
fn entries(entries: &[cel::common::ast::IdedEntryExpr]) -> Vec<&IdedExpr> {
    entries
        .iter()
        .flat_map(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
            EntryExpr::StructField(f) => vec![&f.value],
        })
        .collect()
}

/// Whether `name` appears in `expr` (a macro's variable of that name
/// counts too: the answer errs towards yes).
fn mentions(expr: &IdedExpr, name: &str) -> bool {
    matches!(&expr.expr, Expr::Ident(ident) if ident == name)
        || children(expr)
            .into_iter()
            .any(|child| mentions(child, name))
}

fn depth_of(expr: &IdedExpr) -> usize {
    1 + children(expr).into_iter().map(depth_of).max().unwrap_or(0)
}

/// Names, functions and patterns: what can be refused before a message
/// exists. `bound` holds the macros' variables in scope.
fn check<'a>(
    expr: &'a IdedExpr,
    bound: &mut Vec<&'a str>,
    patterns: &mut HashMap<u64, Pattern>,
) -> Result<(), CompileError> {
    match &expr.expr {
        Expr::Ident(name)
            if !bound.contains(&name.as_str()) && !VARIABLES.contains(&name.as_str()) =>
        {
            return Err(CompileError(format!(
                "unknown name `{name}`: an expression reads {}",
                VARIABLES.join(", ")
            )));
        }
        Expr::Call(call) => {
            if !FUNCTIONS.contains(&call.func_name.as_str()) {
                return Err(CompileError(format!(
                    "unknown function `{}`",
                    call.func_name
                )));
            }
            if call.func_name == "matches" {
                let pattern = match call.args.last().map(|a| &a.expr) {
                    Some(Expr::Literal(LiteralValue::String(p))) => p.inner().to_owned(),
                    _ => {
                        return Err(CompileError(
                            "`matches` takes its pattern as a string literal".into(),
                        ))
                    }
                };
                let regex = regex::RegexBuilder::new(&pattern)
                    .size_limit(MAX_PATTERN_BYTES)
                    .build()
                    .map_err(|e| CompileError(format!("`matches` pattern: {e}")))?;
                let automaton = regex_automata::nfa::thompson::NFA::compiler()
                    .configure(
                        regex_automata::nfa::thompson::Config::new()
                            .nfa_size_limit(Some(MAX_PATTERN_BYTES)),
                    )
                    .build(&pattern)
                    .map_err(|e| CompileError(format!("`matches` pattern: {e}")))?;
                patterns.insert(
                    expr.id,
                    Pattern {
                        regex,
                        states: automaton.states().len() as u64,
                    },
                );
            }
        }
        Expr::Struct(s) => {
            return Err(CompileError(format!(
                "message construction (`{}{{…}}`) is not supported; use a map literal",
                s.type_name
            )))
        }
        Expr::List(list) if !list.optional_indices.is_empty() => {
            return Err(CompileError(
                "optional list elements are not supported".into(),
            ))
        }
        Expr::Comprehension(c) => {
            if c.iter_var2.is_some() {
                return Err(CompileError(
                    "two-variable comprehensions are not supported".into(),
                ));
            }
            check(&c.iter_range, bound, patterns)?;
            check(&c.accu_init, bound, patterns)?;
            let before = bound.len();
            bound.push(&c.iter_var);
            bound.push(&c.accu_var);
            let inner = [&c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .try_for_each(|e| check(e, bound, patterns));
            bound.truncate(before);
            return inner;
        }
        _ => {}
    }
    if let Expr::Map(map) = &expr.expr {
        let mut keys = HashSet::new();
        for entry in &map.entries {
            if let EntryExpr::MapEntry(e) = &entry.expr {
                if e.optional {
                    return Err(CompileError(
                        "optional map entries are not supported".into(),
                    ));
                }
                if let Expr::Literal(LiteralValue::String(key)) = &e.key.expr {
                    if !keys.insert(key.inner().to_owned()) {
                        return Err(CompileError(format!(
                            "the map literal repeats the key `{}`",
                            key.inner()
                        )));
                    }
                }
            }
        }
    }
    for child in children(expr) {
        check(child, bound, patterns)?;
    }
    Ok(())
}

/// A message made ready for expressions: its payload parsed, its time as
/// the body's RFC 3339 text. Built once per message however many
/// endpoints' expressions read it.
#[derive(Debug)]
pub struct Subject<'m> {
    event_type: &'m str,
    data: serde_json::Value,
    channels: &'m [String],
    event_id: Option<&'m str>,
    timestamp: String,
}

impl<'m> Subject<'m> {
    pub fn new(
        event_type: &'m str,
        payload: &str,
        channels: Option<&'m [String]>,
        event_id: Option<&'m str>,
        created_at_ms: i64,
    ) -> Result<Self, EvalError> {
        let data = serde_json::from_str(payload)
            .map_err(|e| EvalError::Failed(format!("the payload is not JSON: {e}")))?;
        Ok(Self {
            event_type,
            data,
            channels: channels.unwrap_or_default(),
            event_id,
            timestamp: timestamp_text(created_at_ms),
        })
    }

    pub fn input(&self) -> Input<'_> {
        Input {
            event_type: self.event_type,
            data: &self.data,
            channels: self.channels,
            event_id: self.event_id,
            timestamp: &self.timestamp,
        }
    }
}

/// A message's time (unix milliseconds) as the body's `timestamp` writes
/// it: RFC 3339 in UTC with milliseconds.
pub fn timestamp_text(ms: i64) -> String {
    use chrono::TimeZone;
    chrono::Utc
        .timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How this process's filters have decided, since it started (for
/// `/metrics`): let through, kept out, failed (a CEL error; kept out too),
/// or stopped by their budget or deadline (kept out too).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FilterCounts {
    pub passed: u64,
    pub filtered_out: u64,
    pub failed: u64,
    pub stopped: u64,
}

static FILTERS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Counts one filter's decision.
pub fn count_filter(outcome: &Result<bool, EvalError>) {
    let slot = match outcome {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(EvalError::Failed(_)) => 2,
        Err(EvalError::Budget | EvalError::Deadline) => 3,
    };
    FILTERS[slot].fetch_add(1, Ordering::Relaxed);
}

pub fn filter_counts() -> FilterCounts {
    let [passed, filtered_out, failed, stopped] = &FILTERS;
    FilterCounts {
        passed: passed.load(Ordering::Relaxed),
        filtered_out: filtered_out.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        stopped: stopped.load(Ordering::Relaxed),
    }
}

/// An endpoint's filter failures seen by this process: how many, and the
/// last one's time (unix milliseconds) and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterFailures {
    pub count: u64,
    pub last_at: i64,
    pub last_error: String,
}

/// Endpoints whose filter failed in this process, by endpoint id (kept
/// for at most [`CACHE_LIMIT`] endpoints; then it starts over).
fn failures() -> &'static Mutex<HashMap<String, FilterFailures>> {
    static FAILURES: OnceLock<Mutex<HashMap<String, FilterFailures>>> = OnceLock::new();
    FAILURES.get_or_init(Default::default)
}

/// Notes that `endpoint`'s filter failed on a message at `at`.
pub fn note_filter_failure(endpoint: &str, error: &EvalError, at: i64) {
    let mut failures = failures().lock().expect("filter failures");
    if failures.len() >= CACHE_LIMIT && !failures.contains_key(endpoint) {
        failures.clear();
    }
    let entry = failures
        .entry(endpoint.to_owned())
        .or_insert_with(|| FilterFailures {
            count: 0,
            last_at: at,
            last_error: String::new(),
        });
    entry.count += 1;
    entry.last_at = at;
    entry.last_error = error.to_string();
}

/// `endpoint`'s filter failures in this process, if any.
pub fn filter_failures(endpoint: &str) -> Option<FilterFailures> {
    failures()
        .lock()
        .expect("filter failures")
        .get(endpoint)
        .cloned()
}

/// Programs compiled so far, by source: an endpoint's expression is parsed
/// once per process, not once per message. Expressions that fail are kept
/// too (they were valid when saved, or the store holds what an older
/// version accepted).
type Compiled = Result<Arc<Program>, CompileError>;

fn cache() -> &'static Mutex<HashMap<String, Compiled>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Compiled>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Entries kept before the cache starts over.
const CACHE_LIMIT: usize = 4096;

/// `source` compiled, from the cache when it was compiled before.
pub fn cached(source: &str) -> Result<Arc<Program>, CompileError> {
    if let Some(found) = cache().lock().expect("expression cache").get(source) {
        return found.clone();
    }
    let compiled = compile(source).map(Arc::new);
    let mut cache = cache().lock().expect("expression cache");
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(source.to_owned(), compiled.clone());
    compiled
}

#[cfg(test)]
mod tests;
