//! Payload filters: an endpoint that subscribes to an event type may still want only some of its
//! events (`amount > 100`, `currency in [EUR, USD]`). Ingest evaluates the endpoint's filter
//! against each event's JSON payload and delivers only when it matches.
//!
//! A filter is a MongoDB-like JSON document. Each key of an object is a dotted field path
//! (`"data.object.amount"`; an all-digit segment also indexes arrays, `"items.0.sku"`) or `$and` /
//! `$or` with a non-empty array of filter objects; every key must hold, and `{}` matches
//! everything. A field's value is a literal (implicit `$eq`) or an object of operators, all of
//! which must hold: `$eq $ne $gt $gte $lt $lte $in $nin $exists`.
//!
//! Filters come from tenants and run on every event, so [`Filter::parse`] does all the checking
//! and bounds the filter up front (depth, condition count, list length, path length, document
//! size), splitting paths once. Those limits do not bound the work of one evaluation: it grows
//! with the payload too (a 16 KiB filter of `$nin` lists against an array of 100,000 numbers
//! compares hundreds of millions of pairs). So [`Filter::evaluate`] counts steps as it walks
//! (one per value compared, per path segment followed, per 64 bytes of a string compared)
//! against a [`Budget`], and stops with [`Error::StepBudget`] when the budget runs out: the
//! outcome depends on the filter and the payload only, never on the machine's speed. It never
//! panics and does not allocate.

use std::cmp::Ordering;
use std::io;

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result, invalid};

/// Deepest nesting of a filter: the top-level object is level 1, and each `$and` / `$or` branch
/// and each operator object (`{"$gt": 1}`) is one level below the object that holds it.
pub const MAX_DEPTH: usize = 8;

/// Most conditions in one filter: each operator on a field (a literal counts as one `$eq`) and
/// each `$and` / `$or` is one condition.
pub const MAX_CONDITIONS: usize = 256;

/// Most values in one `$in` / `$nin` list.
pub const MAX_LIST_LEN: usize = 256;

/// Longest field path, in bytes.
pub const MAX_PATH_BYTES: usize = 256;

/// Largest filter document, in bytes of compact JSON.
pub const MAX_FILTER_BYTES: usize = 16 * 1024;

/// The operators a field accepts, as error messages list them.
const FIELD_OPERATORS: &str = "$eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists";

/// How much of a value `explain` and error messages quote.
const SHOW_BYTES: usize = 64;

/// Default budget of one evaluation, in steps (`HERALD_FILTER_STEP_BUDGET`). About as much CPU
/// as parsing a payload at the 256 KiB limit (a few milliseconds), and hundreds of times what a
/// filter within the parse limits takes on a payload of ordinary shape (tens to a few thousand
/// steps).
pub const DEFAULT_STEP_BUDGET: u64 = 1_000_000;

/// Bytes of a string comparison that count as one more step.
const STRING_STEP_BYTES: usize = 64;

/// Steps an evaluation may take. A step is one value compared (each element of an array field,
/// each value of an `$in` list, each member of a nested literal), one path segment followed,
/// or 64 bytes of a string compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    limit: u64,
    left: u64,
}

impl Budget {
    pub fn new(steps: u64) -> Self {
        Self {
            limit: steps,
            left: steps,
        }
    }

    /// Steps taken so far (all of them once it ran out).
    pub fn used(&self) -> u64 {
        self.limit - self.left
    }

    fn charge(&mut self, steps: u64) -> Step<()> {
        match self.left.checked_sub(steps) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => {
                self.left = 0;
                Err(OutOfSteps)
            }
        }
    }

    fn exhausted(&self) -> Error {
        Error::StepBudget { steps: self.limit }
    }
}

/// The budget ran out part-way; the evaluation stops where it is.
struct OutOfSteps;

/// Outcome of one evaluation step.
type Step<T> = std::result::Result<T, OutOfSteps>;

/// A parsed, validated payload filter.
///
/// Semantics, beyond the module summary:
/// - numbers compare numerically (`1 == 1.0`; two integers compare exactly), objects and arrays
///   structurally, and values of different JSON types are never equal;
/// - `$eq` on an array field also matches when any element equals the operand; `$ne` is the
///   negation of `$eq`;
/// - `$gt $gte $lt $lte` compare numbers with numbers and strings with strings (bytewise); any
///   other pair does not match;
/// - `$in` holds when `$eq` holds for any listed value; `$nin` is its negation;
/// - a missing field matches only `$ne`, `$nin` and `$exists: false`; `null` is a present value.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    conditions: Vec<Node>,
    /// Conditions plus `$in` / `$nin` values: what [`Filter::cost_hint`] scales with.
    weight: u64,
}

impl Filter {
    /// Parses and validates a filter document.
    pub fn parse(doc: &Value) -> Result<Filter> {
        let Value::Object(map) = doc else {
            return Err(at(
                "",
                format!(
                    "must be a JSON object of field paths and operators, got {}",
                    kind(doc)
                ),
            ));
        };
        if exceeds_size(doc) {
            return Err(at(
                "",
                format!(
                    "the document is larger than {MAX_FILTER_BYTES} bytes of compact JSON; \
                     simplify it or shorten its values"
                ),
            ));
        }
        let mut parser = Parser {
            conditions: 0,
            values: 0,
        };
        let conditions = parser.object(map, "", 1)?;
        Ok(Filter {
            conditions,
            weight: (parser.conditions + parser.values) as u64,
        })
    }

    /// Parses a filter from JSON text.
    pub fn parse_str(text: &str) -> Result<Filter> {
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| invalid(format!("filter: not valid JSON: {e}")))?;
        Self::parse(&doc)
    }

    /// Whether the payload matches, taking steps from `budget`; [`Error::StepBudget`] when it
    /// runs out first (then `budget.used()` is its whole limit).
    pub fn evaluate(&self, payload: &Value, budget: &mut Budget) -> Result<bool> {
        all_match(&self.conditions, payload, budget).map_err(|OutOfSteps| budget.exhausted())
    }

    /// Explains the first failing condition for a payload (e.g. `amount: 50 is not $gt 100`), or
    /// `None` when the payload matches. The outcome is [`Filter::evaluate`]'s with the same
    /// budget (an error exactly when it runs out); the explanation of a payload that does not
    /// match may take as many steps again.
    pub fn explain_within(&self, payload: &Value, budget: &mut Budget) -> Result<Option<String>> {
        if self.evaluate(payload, budget)? {
            return Ok(None);
        }
        let mut again = Budget::new(budget.limit);
        Ok(Some(
            explain_all(&self.conditions, payload, &mut again)
                .ok()
                .flatten()
                .unwrap_or_else(|| {
                    format!(
                        "the payload does not match (saying which condition fails would take \
                         more than {} steps)",
                        budget.limit
                    )
                }),
        ))
    }

    /// True when the payload matches within [`DEFAULT_STEP_BUDGET`] steps.
    pub fn matches(&self, payload: &Value) -> bool {
        self.evaluate(payload, &mut Budget::new(DEFAULT_STEP_BUDGET))
            .unwrap_or(false)
    }

    /// [`Filter::explain_within`] with [`DEFAULT_STEP_BUDGET`] steps; running out is explained
    /// too, so this is `None` exactly when [`Filter::matches`] is true.
    pub fn explain(&self, payload: &Value) -> Option<String> {
        self.explain_within(payload, &mut Budget::new(DEFAULT_STEP_BUDGET))
            .unwrap_or_else(|e| Some(e.to_string()))
    }

    /// A cheap, generous estimate of the steps an evaluation can take on a payload of
    /// `payload_bytes`, known before parsing it: each condition and listed value may meet each
    /// payload value (at least a byte each) about once. Callers use it to tell evaluations that
    /// are surely short from those that may use their whole budget.
    pub fn cost_hint(&self, payload_bytes: usize) -> u64 {
        (payload_bytes as u64).saturating_mul(self.weight)
    }
}

/// One key of a filter object.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// A field and the operators that must all hold on it.
    Field { path: Path, ops: Vec<Op> },
    /// Every branch must match; a branch is the keys of one filter object.
    And(Vec<Vec<Node>>),
    /// At least one branch must match.
    Or(Vec<Vec<Node>>),
}

impl Node {
    fn matches(&self, payload: &Value, budget: &mut Budget) -> Step<bool> {
        match self {
            Node::Field { path, ops } => {
                let value = path.resolve(payload, budget)?;
                for op in ops {
                    if !op.holds(value, budget)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Node::And(branches) => {
                for branch in branches {
                    if !all_match(branch, payload, budget)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Node::Or(branches) => {
                for branch in branches {
                    if all_match(branch, payload, budget)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// Mirrors [`Node::matches`]: `None` exactly when it matches.
    fn explain(&self, payload: &Value, budget: &mut Budget) -> Step<Option<String>> {
        match self {
            Node::Field { path, ops } => {
                let value = path.resolve(payload, budget)?;
                for op in ops {
                    if !op.holds(value, budget)? {
                        return Ok(Some(op.failure(&path.text, value)));
                    }
                }
                Ok(None)
            }
            Node::And(branches) => {
                for branch in branches {
                    if let Some(reason) = explain_all(branch, payload, budget)? {
                        return Ok(Some(reason));
                    }
                }
                Ok(None)
            }
            Node::Or(branches) => {
                for branch in branches {
                    if all_match(branch, payload, budget)? {
                        return Ok(None);
                    }
                }
                let mut reasons = Vec::with_capacity(branches.len());
                for branch in branches {
                    reasons.extend(explain_all(branch, payload, budget)?);
                }
                Ok(Some(format!(
                    "no $or branch matched ({})",
                    reasons.join("; ")
                )))
            }
        }
    }
}

fn all_match(nodes: &[Node], payload: &Value, budget: &mut Budget) -> Step<bool> {
    for node in nodes {
        if !node.matches(payload, budget)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn explain_all(nodes: &[Node], payload: &Value, budget: &mut Budget) -> Step<Option<String>> {
    for node in nodes {
        if let Some(reason) = node.explain(payload, budget)? {
            return Ok(Some(reason));
        }
    }
    Ok(None)
}

/// A dotted field path, split once at parse time.
#[derive(Clone, Debug, PartialEq)]
struct Path {
    text: String,
    segments: Vec<Segment>,
}

/// One segment of a path: an object key, and the array index it also stands for when it is a
/// canonical non-negative integer (`"0"`, `"12"`, not `"01"`).
#[derive(Clone, Debug, PartialEq)]
struct Segment {
    key: String,
    index: Option<usize>,
}

impl Path {
    fn parse(text: &str, loc: &str) -> Result<Path> {
        if text.is_empty() {
            return Err(at(
                loc,
                "a field path is empty; name a field, e.g. \"data.object.amount\"",
            ));
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(at(
                loc,
                format!(
                    "field path {} is {} bytes long; at most {MAX_PATH_BYTES} are allowed",
                    clip(format!("{text:?}"), SHOW_BYTES),
                    text.len()
                ),
            ));
        }
        let mut segments = Vec::new();
        for key in text.split('.') {
            if key.is_empty() {
                return Err(at(
                    loc,
                    format!(
                        "field path {text:?} has an empty segment; separate names with single \
                         dots, e.g. \"data.object.amount\""
                    ),
                ));
            }
            let canonical =
                key.bytes().all(|b| b.is_ascii_digit()) && (key == "0" || !key.starts_with('0'));
            let index = if canonical { key.parse().ok() } else { None };
            segments.push(Segment {
                key: key.to_owned(),
                index,
            });
        }
        Ok(Path {
            text: text.to_owned(),
            segments,
        })
    }

    /// The value at this path, or `None` when the payload has no such field; one step per
    /// segment.
    fn resolve<'a>(&self, payload: &'a Value, budget: &mut Budget) -> Step<Option<&'a Value>> {
        let mut current = payload;
        for segment in &self.segments {
            budget.charge(1)?;
            let next = match current {
                Value::Object(map) => map.get(segment.key.as_str()),
                Value::Array(items) => segment.index.and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(value) => current = value,
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }
}

/// The ordering operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Bound {
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Bound::Gt => ordering == Ordering::Greater,
            Bound::Gte => ordering != Ordering::Less,
            Bound::Lt => ordering == Ordering::Less,
            Bound::Lte => ordering != Ordering::Greater,
        }
    }
}

/// One operator applied to a field, with its validated operand.
#[derive(Clone, Debug, PartialEq)]
enum Op {
    Eq(Value),
    Ne(Value),
    /// The operand is a number or a string.
    Cmp(Bound, Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
}

impl Op {
    /// Whether the operator holds on a field's value (`None` when the field is missing).
    fn holds(&self, value: Option<&Value>, budget: &mut Budget) -> Step<bool> {
        let Some(v) = value else {
            // A missing field matches only the negations.
            return Ok(matches!(self, Op::Ne(_) | Op::Nin(_) | Op::Exists(false)));
        };
        Ok(match self {
            Op::Eq(operand) => equals_or_contains(v, operand, budget)?,
            Op::Ne(operand) => !equals_or_contains(v, operand, budget)?,
            Op::Cmp(bound, operand) => {
                budget.charge(1 + string_steps(v, operand))?;
                compare(v, operand).is_some_and(|ordering| bound.accepts(ordering))
            }
            Op::In(list) => in_list(v, list, budget)?,
            Op::Nin(list) => !in_list(v, list, budget)?,
            Op::Exists(wanted) => *wanted,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Op::Eq(_) => "$eq",
            Op::Ne(_) => "$ne",
            Op::Cmp(Bound::Gt, _) => "$gt",
            Op::Cmp(Bound::Gte, _) => "$gte",
            Op::Cmp(Bound::Lt, _) => "$lt",
            Op::Cmp(Bound::Lte, _) => "$lte",
            Op::In(_) => "$in",
            Op::Nin(_) => "$nin",
            Op::Exists(_) => "$exists",
        }
    }

    fn operand_text(&self) -> String {
        match self {
            Op::Eq(v) | Op::Ne(v) | Op::Cmp(_, v) => show(v),
            Op::In(list) | Op::Nin(list) => {
                let items: Vec<String> = list.iter().map(Value::to_string).collect();
                clip(format!("[{}]", items.join(",")), SHOW_BYTES)
            }
            Op::Exists(wanted) => wanted.to_string(),
        }
    }

    /// Says why the operator does not hold on `value`, the value at `path`.
    fn failure(&self, path: &str, value: Option<&Value>) -> String {
        let name = self.name();
        let operand = self.operand_text();
        match (self, value) {
            (_, None) => format!("{path}: is missing (needed for {name} {operand})"),
            (Op::Exists(_), Some(v)) => {
                format!("{path}: is present ({}) but {name} is {operand}", show(v))
            }
            (Op::Cmp(_, bound), Some(v)) if compare(v, bound).is_none() => format!(
                "{path}: {} is not {name} {operand} ({} does not compare with {})",
                show(v),
                kind(v),
                kind(bound)
            ),
            (_, Some(v)) => format!("{path}: {} is not {name} {operand}", show(v)),
        }
    }
}

/// `$eq`: the field equals the operand, or the field is an array with an element that does.
fn equals_or_contains(field: &Value, operand: &Value, budget: &mut Budget) -> Step<bool> {
    if values_equal(field, operand, budget)? {
        return Ok(true);
    }
    if let Value::Array(items) = field {
        for item in items {
            if values_equal(item, operand, budget)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// `$in`: `$eq` holds for some value of the list.
fn in_list(field: &Value, list: &[Value], budget: &mut Budget) -> Step<bool> {
    for operand in list {
        if equals_or_contains(field, operand, budget)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// JSON equality with numbers compared by value, so `1` equals `1.0`; one step per pair of
/// values compared (nested ones included).
fn values_equal(a: &Value, b: &Value, budget: &mut Budget) -> Step<bool> {
    budget.charge(1)?;
    Ok(match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for (p, q) in x.iter().zip(y) {
                if !values_equal(p, q, budget)? {
                    return Ok(false);
                }
            }
            true
        }
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for (key, p) in x {
                let Some(q) = y.get(key.as_str()) else {
                    return Ok(false);
                };
                if !values_equal(p, q, budget)? {
                    return Ok(false);
                }
            }
            true
        }
        (Value::String(x), Value::String(y)) => {
            // Only strings of one length are compared byte by byte.
            if x.len() == y.len() {
                budget.charge(string_steps(a, b))?;
            }
            x == y
        }
        // Null and booleans; values of different types are never equal.
        _ => a == b,
    })
}

/// Extra steps of comparing two strings (none for other values).
fn string_steps(a: &Value, b: &Value) -> u64 {
    match (a, b) {
        (Value::String(x), Value::String(y)) => (x.len().min(y.len()) / STRING_STEP_BYTES) as u64,
        _ => 0,
    }
}

/// Orders a field against a `$gt`-style operand: numbers with numbers, strings with strings.
fn compare(field: &Value, operand: &Value) -> Option<Ordering> {
    match (field, operand) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => None,
    }
}

/// Compares two integers exactly, anything else as `f64`.
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (as_integer(a), as_integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn as_integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Builds the tree and counts conditions (and listed values) across it.
struct Parser {
    conditions: usize,
    values: usize,
}

impl Parser {
    /// Parses a filter object at `loc`, which sits at nesting level `depth`.
    fn object(&mut self, map: &Map<String, Value>, loc: &str, depth: usize) -> Result<Vec<Node>> {
        if depth > MAX_DEPTH {
            return Err(too_deep(loc));
        }
        let mut nodes = Vec::with_capacity(map.len());
        for (key, value) in map {
            let node = match key.as_str() {
                "$and" => Node::And(self.logical(key, value, loc, depth)?),
                "$or" => Node::Or(self.logical(key, value, loc, depth)?),
                _ if key.starts_with('$') => {
                    return Err(at(
                        loc,
                        format!(
                            "unknown operator {key}; the keys of a filter object are field \
                             paths or $and / $or (field operators go under a field: \
                             {FIELD_OPERATORS})"
                        ),
                    ));
                }
                _ => self.field(key, value, loc, depth)?,
            };
            nodes.push(node);
        }
        Ok(nodes)
    }

    /// Parses the branches of `$and` / `$or` (`op`) in the object at `loc`.
    fn logical(
        &mut self,
        op: &str,
        value: &Value,
        loc: &str,
        depth: usize,
    ) -> Result<Vec<Vec<Node>>> {
        self.count(loc)?;
        let Value::Array(items) = value else {
            return Err(at(
                loc,
                format!(
                    "{op} needs a non-empty array of filter objects, got {}",
                    kind(value)
                ),
            ));
        };
        if items.is_empty() {
            return Err(at(
                loc,
                format!("{op} is empty; give it at least one filter object"),
            ));
        }
        let op_loc = join(loc, op);
        let mut branches = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_loc = format!("{op_loc}[{i}]");
            let Value::Object(map) = item else {
                return Err(at(
                    &item_loc,
                    format!("expected a filter object, got {}", kind(item)),
                ));
            };
            branches.push(self.object(map, &item_loc, depth + 1)?);
        }
        Ok(branches)
    }

    /// Parses the field `key` of the object at `loc`, which sits at nesting level `depth`.
    fn field(&mut self, key: &str, value: &Value, loc: &str, depth: usize) -> Result<Node> {
        let path = Path::parse(key, loc)?;
        let field_loc = join(loc, key);
        let ops = match value {
            Value::Object(map) if map.keys().any(|k| k.starts_with('$')) => {
                if let Some(plain) = map.keys().find(|k| !k.starts_with('$')) {
                    let operators: Vec<&str> = map
                        .keys()
                        .filter(|k| k.starts_with('$'))
                        .map(String::as_str)
                        .collect();
                    return Err(at(
                        &field_loc,
                        format!(
                            "the object mixes operators ({}) with the plain key {plain:?}; use \
                             only operators, or only plain keys to compare with a literal object",
                            operators.join(", ")
                        ),
                    ));
                }
                if depth + 1 > MAX_DEPTH {
                    return Err(too_deep(&field_loc));
                }
                let mut ops = Vec::with_capacity(map.len());
                for (name, operand) in map {
                    ops.push(self.op(name, operand, &field_loc)?);
                }
                ops
            }
            // A literal, including an object without operators (or `{}`): implicit `$eq`.
            _ => {
                self.count(&field_loc)?;
                vec![Op::Eq(value.clone())]
            }
        };
        Ok(Node::Field { path, ops })
    }

    /// Parses the operator `name` applied to the field at `loc`.
    fn op(&mut self, name: &str, operand: &Value, loc: &str) -> Result<Op> {
        self.count(loc)?;
        let op = match name {
            "$eq" => Op::Eq(operand.clone()),
            "$ne" => Op::Ne(operand.clone()),
            "$gt" | "$gte" | "$lt" | "$lte" => {
                if !matches!(operand, Value::Number(_) | Value::String(_)) {
                    return Err(at(
                        loc,
                        format!("{name} needs a number or a string, got {}", kind(operand)),
                    ));
                }
                let bound = match name {
                    "$gt" => Bound::Gt,
                    "$gte" => Bound::Gte,
                    "$lt" => Bound::Lt,
                    _ => Bound::Lte,
                };
                Op::Cmp(bound, operand.clone())
            }
            "$in" | "$nin" => {
                let Value::Array(list) = operand else {
                    return Err(at(
                        loc,
                        format!("{name} needs an array of values, got {}", kind(operand)),
                    ));
                };
                if list.len() > MAX_LIST_LEN {
                    return Err(at(
                        loc,
                        format!(
                            "{name} has {} values; at most {MAX_LIST_LEN} are allowed",
                            list.len()
                        ),
                    ));
                }
                self.values += list.len();
                if name == "$in" {
                    Op::In(list.clone())
                } else {
                    Op::Nin(list.clone())
                }
            }
            "$exists" => match operand {
                Value::Bool(wanted) => Op::Exists(*wanted),
                _ => {
                    return Err(at(
                        loc,
                        format!("$exists needs true or false, got {}", kind(operand)),
                    ));
                }
            },
            "$and" | "$or" => {
                return Err(at(
                    loc,
                    format!(
                        "{name} cannot be used on a field; put it in a filter object, next to \
                         field paths (field operators: {FIELD_OPERATORS})"
                    ),
                ));
            }
            _ => {
                return Err(at(
                    loc,
                    format!("unknown operator {name}; allowed: {FIELD_OPERATORS}"),
                ));
            }
        };
        Ok(op)
    }

    fn count(&mut self, loc: &str) -> Result<()> {
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(at(
                loc,
                format!(
                    "the filter has more than {MAX_CONDITIONS} conditions; at most \
                     {MAX_CONDITIONS} are allowed"
                ),
            ));
        }
        Ok(())
    }
}

/// A parse error at a location such as `$or[1].amount` (empty for the top level).
fn at(loc: &str, msg: impl std::fmt::Display) -> Error {
    if loc.is_empty() {
        invalid(format!("filter: {msg}"))
    } else {
        invalid(format!("filter: at {loc}: {msg}"))
    }
}

fn too_deep(loc: &str) -> Error {
    at(
        loc,
        format!(
            "the filter nests deeper than {MAX_DEPTH} levels (each $and / $or branch and each \
             operator object adds one); flatten it"
        ),
    )
}

fn join(loc: &str, part: &str) -> String {
    if loc.is_empty() {
        part.to_owned()
    } else {
        format!("{loc}.{part}")
    }
}

/// Whether the document's compact JSON is longer than [`MAX_FILTER_BYTES`]; stops writing as
/// soon as it is.
fn exceeds_size(doc: &Value) -> bool {
    struct Budget(usize);

    impl io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.0 {
                return Err(io::Error::other("filter document too large"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    serde_json::to_writer(Budget(MAX_FILTER_BYTES), doc).is_err()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value as compact JSON, cut to a readable length.
fn show(value: &Value) -> String {
    clip(value.to_string(), SHOW_BYTES)
}

fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filter(doc: Value) -> Filter {
        match Filter::parse(&doc) {
            Ok(f) => f,
            Err(e) => panic!("{doc} did not parse: {e}"),
        }
    }

    fn check(doc: Value, payload: Value) -> bool {
        let f = filter(doc);
        let matched = f.matches(&payload);
        assert_eq!(
            f.explain(&payload).is_none(),
            matched,
            "explain disagrees with matches for {payload}"
        );
        matched
    }

    fn parse_error(doc: Value) -> String {
        match Filter::parse(&doc) {
            Ok(f) => panic!("{doc} parsed as {f:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Wraps `inner` in `levels` single-branch `$and`s.
    fn nest(levels: usize, inner: Value) -> Value {
        (0..levels).fold(inner, |acc, _| json!({ "$and": [acc] }))
    }

    fn payload() -> Value {
        json!({
            "type": "invoice.paid",
            "amount": 100,
            "price": 9.5,
            "note": null,
            "paid": true,
            "tags": ["vip", "eu"],
            "data": { "object": { "amount": 2500, "currency": "EUR" } },
            "items": [{ "sku": "a-1" }, { "sku": "b-2" }],
        })
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(check(json!({}), payload()));
        assert!(check(json!({}), json!([1, 2])));
        assert!(check(json!({}), json!(null)));
    }

    #[test]
    fn implicit_eq_and_eq_ne() {
        let p = payload();
        assert!(check(json!({ "type": "invoice.paid" }), p.clone()));
        assert!(!check(json!({ "type": "invoice.failed" }), p.clone()));
        assert!(check(json!({ "amount": 100.0 }), p.clone()));
        assert!(!check(json!({ "amount": "100" }), p.clone()));
        assert!(check(json!({ "note": null }), p.clone()));
        assert!(check(json!({ "paid": true }), p.clone()));
        assert!(!check(json!({ "paid": 1 }), p.clone()));
        assert!(check(
            json!({ "data.object": { "currency": "EUR", "amount": 2500.0 } }),
            p.clone()
        ));
        assert!(!check(
            json!({ "data.object": { "currency": "EUR" } }),
            p.clone()
        ));
        assert!(check(json!({ "amount": { "$eq": 100 } }), p.clone()));
        assert!(!check(json!({ "amount": { "$eq": 101 } }), p.clone()));
        assert!(check(json!({ "amount": { "$ne": 101 } }), p.clone()));
        assert!(!check(json!({ "amount": { "$ne": 100.0 } }), p.clone()));
        assert!(check(
            json!({ "type": "invoice.paid", "amount": 100 }),
            p.clone()
        ));
        assert!(!check(json!({ "type": "invoice.paid", "amount": 1 }), p));
    }

    #[test]
    fn empty_object_value_is_a_literal() {
        assert!(check(json!({ "a": {} }), json!({ "a": {} })));
        assert!(!check(json!({ "a": {} }), json!({ "a": { "b": 1 } })));
        assert!(!check(json!({ "a": {} }), json!({})));
    }

    #[test]
    fn ordering_operators() {
        let p = payload();
        assert!(check(json!({ "amount": { "$gt": 99 } }), p.clone()));
        assert!(!check(json!({ "amount": { "$gt": 100 } }), p.clone()));
        assert!(check(json!({ "amount": { "$gte": 100 } }), p.clone()));
        assert!(!check(json!({ "amount": { "$gte": 100.5 } }), p.clone()));
        assert!(check(json!({ "amount": { "$lt": 100.5 } }), p.clone()));
        assert!(!check(json!({ "amount": { "$lt": 100 } }), p.clone()));
        assert!(check(json!({ "amount": { "$lte": 100 } }), p.clone()));
        assert!(!check(json!({ "amount": { "$lte": 99 } }), p.clone()));
        assert!(check(
            json!({ "price": { "$gt": 9, "$lt": 10 } }),
            p.clone()
        ));
        assert!(!check(
            json!({ "price": { "$gt": 9, "$lt": 9.5 } }),
            p.clone()
        ));

        // Strings compare bytewise.
        assert!(check(json!({ "type": { "$gt": "invoice" } }), p.clone()));
        assert!(check(json!({ "type": { "$lt": "invoice.q" } }), p.clone()));
        assert!(check(json!({ "s": { "$lt": "a" } }), json!({ "s": "B" })));
        assert!(check(json!({ "s": { "$lt": "9" } }), json!({ "s": "10" })));

        // Other type pairs never match, whichever the operator.
        for op in ["$gt", "$gte", "$lt", "$lte"] {
            assert!(
                !check(json!({ "amount": { op: "100" } }), p.clone()),
                "{op}"
            );
            assert!(!check(json!({ "type": { op: 1 } }), p.clone()), "{op}");
            assert!(!check(json!({ "note": { op: 1 } }), p.clone()), "{op}");
            assert!(!check(json!({ "tags": { op: "a" } }), p.clone()), "{op}");
            assert!(!check(json!({ "paid": { op: 0 } }), p.clone()), "{op}");
        }
    }

    #[test]
    fn integers_compare_exactly() {
        let big = json!({ "n": u64::MAX - 1 });
        // As f64 both sides round to 2^64; compared exactly they differ.
        assert!(check(json!({ "n": { "$lt": u64::MAX } }), big.clone()));
        assert!(!check(json!({ "n": u64::MAX }), big.clone()));
        assert!(check(json!({ "n": { "$gt": -1 } }), big));
        assert!(check(
            json!({ "n": { "$lt": u64::MAX } }),
            json!({ "n": i64::MIN })
        ));
        assert!(check(json!({ "n": { "$gt": 1 } }), json!({ "n": 1.5 })));
        assert!(check(json!({ "n": 1 }), json!({ "n": 1.0 })));
    }

    #[test]
    fn in_and_nin() {
        let p = payload();
        assert!(check(
            json!({ "type": { "$in": ["a", "invoice.paid"] } }),
            p.clone()
        ));
        assert!(!check(json!({ "type": { "$in": ["a", "b"] } }), p.clone()));
        assert!(check(json!({ "amount": { "$in": [1, 100.0] } }), p.clone()));
        assert!(!check(json!({ "type": { "$in": [] } }), p.clone()));
        assert!(check(json!({ "type": { "$nin": ["a", "b"] } }), p.clone()));
        assert!(!check(
            json!({ "type": { "$nin": ["invoice.paid"] } }),
            p.clone()
        ));
        assert!(check(json!({ "type": { "$nin": [] } }), p));
    }

    #[test]
    fn exists() {
        let p = payload();
        assert!(check(json!({ "amount": { "$exists": true } }), p.clone()));
        assert!(!check(json!({ "amount": { "$exists": false } }), p.clone()));
        assert!(check(json!({ "nope": { "$exists": false } }), p.clone()));
        assert!(!check(json!({ "nope": { "$exists": true } }), p.clone()));
        // null is a present value.
        assert!(check(json!({ "note": { "$exists": true } }), p));
    }

    #[test]
    fn missing_field_matches_only_ne_nin_and_not_exists() {
        let cases = [
            (json!({ "a": 1 }), false),
            (json!({ "a": null }), false),
            (json!({ "a": { "$eq": 1 } }), false),
            (json!({ "a": { "$ne": 1 } }), true),
            (json!({ "a": { "$ne": null } }), true),
            (json!({ "a": { "$gt": 1 } }), false),
            (json!({ "a": { "$gte": 1 } }), false),
            (json!({ "a": { "$lt": 1 } }), false),
            (json!({ "a": { "$lte": "z" } }), false),
            (json!({ "a": { "$in": [1, null] } }), false),
            (json!({ "a": { "$nin": [1, null] } }), true),
            (json!({ "a": { "$exists": true } }), false),
            (json!({ "a": { "$exists": false } }), true),
        ];
        for (doc, expected) in cases {
            assert_eq!(check(doc.clone(), json!({ "b": 1 })), expected, "{doc}");
            // A payload that is not an object has no fields.
            assert_eq!(check(doc.clone(), json!(1)), expected, "{doc} on a scalar");
        }
        assert!(!check(json!({ "a.b": 1 }), json!({ "a": 5 })));
        assert!(check(
            json!({ "a.b": { "$exists": false } }),
            json!({ "a": "x" })
        ));
        assert!(check(
            json!({ "a.5": { "$exists": false } }),
            json!({ "a": [1] })
        ));
    }

    #[test]
    fn null_is_a_value() {
        let p = json!({ "a": null });
        assert!(check(json!({ "a": null }), p.clone()));
        assert!(!check(json!({ "a": { "$ne": null } }), p.clone()));
        assert!(check(json!({ "a": { "$ne": 1 } }), p.clone()));
        assert!(check(json!({ "a": { "$in": [null] } }), p.clone()));
        assert!(!check(json!({ "a": { "$nin": [null] } }), p));
    }

    #[test]
    fn dotted_paths_and_array_indexes() {
        let p = payload();
        assert!(check(
            json!({ "data.object.amount": { "$gte": 2500 } }),
            p.clone()
        ));
        assert!(check(json!({ "data.object.currency": "EUR" }), p.clone()));
        assert!(!check(json!({ "data.object.currency": "USD" }), p.clone()));
        assert!(check(json!({ "items.0.sku": "a-1" }), p.clone()));
        assert!(check(json!({ "items.1.sku": "b-2" }), p.clone()));
        assert!(!check(
            json!({ "items.2.sku": { "$exists": true } }),
            p.clone()
        ));
        assert!(check(json!({ "tags.1": "eu" }), p.clone()));
        // Only canonical integers index arrays.
        assert!(!check(json!({ "tags.01": { "$exists": true } }), p.clone()));
        // A digit segment is still an object key where the value is an object.
        assert!(check(json!({ "m.0": "x" }), json!({ "m": { "0": "x" } })));
        assert!(check(json!({ "m.01": "x" }), json!({ "m": { "01": "x" } })));
        // Non-digit segments do not reach into arrays.
        assert!(!check(json!({ "items.sku": { "$exists": true } }), p));
    }

    #[test]
    fn array_fields_match_by_membership() {
        let p = payload();
        assert!(check(json!({ "tags": "vip" }), p.clone()));
        assert!(!check(json!({ "tags": "us" }), p.clone()));
        assert!(!check(json!({ "tags": { "$ne": "vip" } }), p.clone()));
        assert!(check(json!({ "tags": { "$ne": "us" } }), p.clone()));
        assert!(check(json!({ "tags": ["vip", "eu"] }), p.clone()));
        assert!(!check(json!({ "tags": ["eu", "vip"] }), p.clone()));
        assert!(!check(json!({ "tags": ["vip"] }), p.clone()));
        assert!(check(json!({ "tags": { "$ne": ["vip"] } }), p.clone()));
        assert!(check(json!({ "tags": { "$in": ["us", "eu"] } }), p.clone()));
        assert!(!check(
            json!({ "tags": { "$in": ["us", "uk"] } }),
            p.clone()
        ));
        assert!(check(
            json!({ "tags": { "$in": [["vip", "eu"]] } }),
            p.clone()
        ));
        assert!(!check(
            json!({ "tags": { "$nin": ["us", "eu"] } }),
            p.clone()
        ));
        assert!(check(
            json!({ "tags": { "$nin": ["us", "uk"] } }),
            p.clone()
        ));
        assert!(check(json!({ "items": { "sku": "b-2" } }), p.clone()));
        // An element that is itself an array matches an equal operand, as in MongoDB.
        assert!(check(json!({ "m": [1] }), json!({ "m": [[1], 2] })));
        assert!(check(
            json!({ "m": { "$in": [[1]] } }),
            json!({ "m": [[1], 2] })
        ));
        // Ordering operators do not look into arrays.
        assert!(!check(json!({ "n": { "$gt": 0 } }), json!({ "n": [1, 2] })));
    }

    #[test]
    fn and_or_nest() {
        let p = payload();
        let doc = json!({
            "type": "invoice.paid",
            "$or": [
                { "amount": { "$gt": 1000 } },
                { "$and": [
                    { "tags": "vip" },
                    { "data.object.currency": { "$in": ["EUR", "GBP"] } },
                ] },
            ],
        });
        assert!(check(doc.clone(), p.clone()));
        assert!(!check(
            doc.clone(),
            json!({ "type": "invoice.paid", "amount": 5, "tags": ["vip"] })
        ));
        assert!(check(
            doc,
            json!({ "type": "invoice.paid", "amount": 5000 })
        ));

        assert!(check(
            json!({ "$and": [{ "amount": 100 }, { "paid": true }] }),
            p.clone()
        ));
        assert!(!check(
            json!({ "$and": [{ "amount": 100 }, { "paid": false }] }),
            p.clone()
        ));
        assert!(check(
            json!({ "$or": [{ "amount": 1 }, { "paid": true }] }),
            p.clone()
        ));
        assert!(!check(
            json!({ "$or": [{ "amount": 1 }, { "paid": false }] }),
            p.clone()
        ));
        assert!(check(json!({ "$or": [{}] }), p.clone()));
        assert!(check(
            json!({ "$or": [{ "$or": [{ "x": 1 }, { "$and": [{ "amount": 100 }] }] }] }),
            p
        ));
    }

    #[test]
    fn parse_str_checks_json_and_shape() {
        let f = match Filter::parse_str(r#"{"amount": {"$gt": 10}}"#) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        assert!(f.matches(&json!({ "amount": 11 })));
        let not_json = Filter::parse_str("{amount: 1}").unwrap_err().to_string();
        assert!(not_json.contains("not valid JSON"), "{not_json}");
        let not_object = Filter::parse_str("[1]").unwrap_err().to_string();
        assert!(not_object.contains("got an array"), "{not_object}");
    }

    #[test]
    fn parse_errors_name_the_location_and_operator() {
        let cases = [
            (json!([]), "filter: must be a JSON object"),
            (json!("x"), "got a string"),
            (
                json!({ "$or": [{ "amount": { "$gt": [1] } }] }),
                "filter: at $or[0].amount: $gt needs a number or a string, got an array",
            ),
            (
                json!({ "a": { "$regex": "x" } }),
                "filter: at a: unknown operator $regex; allowed: $eq, $ne",
            ),
            (json!({ "$nor": [{ "a": 1 }] }), "unknown operator $nor"),
            (
                json!({ "a": { "$or": [] } }),
                "at a: $or cannot be used on a field",
            ),
            (
                json!({ "a": { "$gt": 1, "b": 2 } }),
                "at a: the object mixes operators ($gt)",
            ),
            (
                json!({ "a": { "$gte": true } }),
                "at a: $gte needs a number or a string, got a boolean",
            ),
            (
                json!({ "a": { "$lt": null } }),
                "$lt needs a number or a string, got null",
            ),
            (
                json!({ "a": { "$lte": {} } }),
                "$lte needs a number or a string, got an object",
            ),
            (
                json!({ "a": { "$in": "x" } }),
                "at a: $in needs an array of values, got a string",
            ),
            (
                json!({ "a": { "$nin": 1 } }),
                "at a: $nin needs an array of values, got a number",
            ),
            (
                json!({ "a": { "$exists": 1 } }),
                "at a: $exists needs true or false, got a number",
            ),
            (json!({ "$or": [] }), "filter: $or is empty"),
            (
                json!({ "$and": {} }),
                "$and needs a non-empty array of filter objects, got an object",
            ),
            (
                json!({ "$and": [{ "a": 1 }, 2] }),
                "at $and[1]: expected a filter object, got a number",
            ),
            (
                json!({ "a..b": 1 }),
                "field path \"a..b\" has an empty segment",
            ),
            (json!({ ".a": 1 }), "field path \".a\" has an empty segment"),
            (json!({ "a.": 1 }), "field path \"a.\" has an empty segment"),
            (
                json!({ "$or": [{ "": 1 }] }),
                "at $or[0]: a field path is empty",
            ),
            (
                json!({ "x": 1, "$or": [{ "y": 1 }, { "$and": [{ "z": { "$in": {} } }] }] }),
                "at $or[1].$and[0].z: $in needs an array",
            ),
        ];
        for (doc, expected) in cases {
            let msg = parse_error(doc.clone());
            assert!(msg.contains(expected), "{doc}: {msg}");
        }
    }

    #[test]
    fn depth_is_limited() {
        // Level 1 is the top object; each `$and` adds one, the operator object one more.
        let deepest = nest(MAX_DEPTH - 2, json!({ "a": { "$gt": 1 } }));
        assert!(check(deepest, json!({ "a": 2 })));
        let msg = parse_error(nest(MAX_DEPTH - 1, json!({ "a": { "$gt": 1 } })));
        assert!(msg.contains("deeper than 8 levels"), "{msg}");
        assert!(
            msg.contains(&format!("at {}a:", "$and[0].".repeat(MAX_DEPTH - 1))),
            "{msg}"
        );

        // Literals add no level.
        assert!(check(
            nest(MAX_DEPTH - 1, json!({ "a": 1 })),
            json!({ "a": 1 })
        ));
        let msg = parse_error(nest(MAX_DEPTH, json!({ "a": 1 })));
        assert!(msg.contains("deeper than 8 levels"), "{msg}");
    }

    #[test]
    fn condition_count_is_limited() {
        let fields =
            |n: usize| Value::Object((0..n).map(|i| (format!("f{i}"), json!(i))).collect());
        assert!(Filter::parse(&fields(MAX_CONDITIONS)).is_ok());
        let msg = parse_error(fields(MAX_CONDITIONS + 1));
        assert!(msg.contains("more than 256 conditions"), "{msg}");

        // `$and` itself counts, and so does each operator.
        let mut branches = fields(MAX_CONDITIONS - 1);
        let msg = parse_error(json!({ "$and": [branches.clone(), { "x": 1 }] }));
        assert!(msg.contains("more than 256 conditions"), "{msg}");
        if let Value::Object(map) = &mut branches {
            map.remove("f0");
        }
        assert!(Filter::parse(&json!({ "$and": [branches, { "x": 1 }] })).is_ok());
        let ops = json!({ "a": { "$gt": 1, "$lt": 5, "$ne": 3 } });
        assert!(Filter::parse(&ops).is_ok());
    }

    #[test]
    fn in_list_length_is_limited() {
        let list = |n: usize| Value::Array((0..n).map(|i| json!(i)).collect());
        assert!(Filter::parse(&json!({ "a": { "$in": list(MAX_LIST_LEN) } })).is_ok());
        let msg = parse_error(json!({ "a": { "$in": list(MAX_LIST_LEN + 1) } }));
        assert!(
            msg.contains("at a: $in has 257 values; at most 256"),
            "{msg}"
        );
        let msg = parse_error(json!({ "a": { "$nin": list(MAX_LIST_LEN + 1) } }));
        assert!(msg.contains("$nin has 257 values"), "{msg}");
    }

    #[test]
    fn path_length_is_limited() {
        let ok = "a".repeat(MAX_PATH_BYTES);
        assert!(Filter::parse(&json!({ ok: 1 })).is_ok());
        let long = "a".repeat(MAX_PATH_BYTES + 1);
        let msg = parse_error(json!({ "$or": [{ long: 1 }] }));
        assert!(msg.contains("at $or[0]: field path"), "{msg}");
        assert!(msg.contains("is 257 bytes long; at most 256"), "{msg}");
    }

    #[test]
    fn document_size_is_limited() {
        // `{"a":"…"}` is the string plus 8 bytes.
        let fits = json!({ "a": "x".repeat(MAX_FILTER_BYTES - 8) });
        assert!(Filter::parse(&fits).is_ok());
        let msg = parse_error(json!({ "a": "x".repeat(MAX_FILTER_BYTES - 7) }));
        assert!(msg.contains("larger than 16384 bytes"), "{msg}");
    }

    #[test]
    fn explain_names_the_failing_condition() {
        let f = filter(json!({ "amount": { "$gt": 100 } }));
        assert_eq!(f.explain(&json!({ "amount": 150 })), None);
        assert_eq!(
            f.explain(&json!({ "amount": 50 })).as_deref(),
            Some("amount: 50 is not $gt 100")
        );
        assert_eq!(
            f.explain(&json!({})).as_deref(),
            Some("amount: is missing (needed for $gt 100)")
        );
        assert_eq!(
            f.explain(&json!({ "amount": "150" })).as_deref(),
            Some("amount: \"150\" is not $gt 100 (a string does not compare with a number)")
        );

        let f = filter(json!({ "type": "invoice.paid", "data.object.amount": { "$lte": 10 } }));
        assert_eq!(
            f.explain(&json!({ "type": "invoice.paid", "data": { "object": { "amount": 11 } } }))
                .as_deref(),
            Some("data.object.amount: 11 is not $lte 10")
        );
        assert_eq!(
            f.explain(&json!({ "type": "x", "data": { "object": { "amount": 1 } } }))
                .as_deref(),
            Some("type: \"x\" is not $eq \"invoice.paid\"")
        );

        let f = filter(json!({ "secret": { "$exists": false } }));
        assert_eq!(
            f.explain(&json!({ "secret": 1 })).as_deref(),
            Some("secret: is present (1) but $exists is false")
        );

        let f = filter(json!({ "$or": [{ "a": 1 }, { "b": { "$in": [1, 2] } }] }));
        assert_eq!(
            f.explain(&json!({ "a": 2 })).as_deref(),
            Some("no $or branch matched (a: 2 is not $eq 1; b: is missing (needed for $in [1,2]))")
        );
        assert_eq!(f.explain(&json!({ "b": 2 })), None);

        let f = filter(json!({ "s": "y".repeat(200) }));
        let text = f.explain(&json!({ "s": "x" })).unwrap_or_default();
        assert!(text.ends_with('…') && text.len() < 100, "{text}");
    }

    /// `{"$and": [{"a": {"$nin": [0 × 256]}} × branches]}`: within the parse limits (30
    /// branches are 15.9 KiB), and each branch compares every listed value with every element
    /// of an array `a` that holds none of them.
    fn nin_branches(branches: usize) -> Filter {
        let branch = json!({ "a": { "$nin": vec![0; MAX_LIST_LEN] } });
        filter(json!({ "$and": vec![branch; branches] }))
    }

    fn array_of(n: usize) -> Value {
        json!({ "a": vec![1; n] })
    }

    #[test]
    fn evaluation_counts_one_step_per_value_compared() {
        // Per branch: one path segment, then for each of the 256 values the array itself and
        // its 1,000 elements.
        let f = nin_branches(3);
        let mut budget = Budget::new(u64::MAX);
        assert_eq!(f.evaluate(&array_of(1_000), &mut budget), Ok(true));
        assert_eq!(budget.used(), 3 * (1 + 256 * 1_001));

        // A usual filter on a usual payload takes a handful of steps.
        let f = filter(json!({
            "type": "invoice.paid",
            "data.object.amount": { "$gte": 100 },
            "tags": { "$in": ["vip", "eu"] },
        }));
        let mut budget = Budget::new(DEFAULT_STEP_BUDGET);
        assert_eq!(f.evaluate(&payload(), &mut budget), Ok(true));
        assert_eq!(budget.used(), 9);

        // Long strings cost by their length.
        let long = "x".repeat(64 * 100);
        let f = filter(json!({ "s": long.clone() }));
        let mut budget = Budget::new(u64::MAX);
        assert_eq!(f.evaluate(&json!({ "s": long }), &mut budget), Ok(true));
        assert_eq!(budget.used(), 1 + 1 + 100);
    }

    #[test]
    fn a_pathological_filter_stops_at_its_budget() {
        // The measured case: 30 branches × 256 values × 100,000 elements would be 768 million
        // comparisons (seconds of CPU); it stops after the budget's steps, counted, not timed.
        let f = nin_branches(30);
        let p = array_of(100_000);
        assert!(f.cost_hint(p.to_string().len()) > DEFAULT_STEP_BUDGET);
        let mut budget = Budget::new(DEFAULT_STEP_BUDGET);
        let e = f.evaluate(&p, &mut budget).unwrap_err();
        assert_eq!(
            e,
            Error::StepBudget {
                steps: DEFAULT_STEP_BUDGET
            }
        );
        assert_eq!(budget.used(), DEFAULT_STEP_BUDGET);
        assert!(
            e.to_string()
                .starts_with("filter: ran out of its budget of 1000000 steps on this payload"),
            "{e}"
        );

        let mut budget = Budget::new(DEFAULT_STEP_BUDGET);
        assert_eq!(f.explain_within(&p, &mut budget).unwrap_err(), e);
        assert_eq!(budget.used(), DEFAULT_STEP_BUDGET);

        // The budget-less conveniences treat it as not matching, and say why.
        assert!(!f.matches(&p));
        assert_eq!(f.explain(&p), Some(e.to_string()));

        // The outcome is the filter's and the payload's: just enough steps succeed.
        let f = nin_branches(1);
        let p = array_of(1_000);
        let needed = 1 + 256 * 1_001;
        assert!(f.evaluate(&p, &mut Budget::new(needed)).is_ok());
        assert!(f.evaluate(&p, &mut Budget::new(needed - 1)).is_err());
    }

    #[test]
    fn explaining_has_the_outcome_of_evaluating() {
        // 256,258 steps to find that neither branch matches; saying why takes as many again.
        let f = filter(json!({ "$or": [{ "a": { "$in": vec![0; 256] } }, { "b": 1 }] }));
        let p = array_of(1_000);
        let mut budget = Budget::new(u64::MAX);
        assert_eq!(f.evaluate(&p, &mut budget), Ok(false));
        let needed = budget.used();
        assert_eq!(needed, 1 + 256 * 1_001 + 1);

        let text = f.explain_within(&p, &mut Budget::new(2 * needed)).unwrap();
        let text = text.unwrap_or_default();
        assert!(text.starts_with("no $or branch matched (a: ["), "{text}");
        assert!(
            text.ends_with("b: is missing (needed for $eq 1))"),
            "{text}"
        );
        // Enough to decide, not to explain: still a miss, not an error.
        let text = f.explain_within(&p, &mut Budget::new(needed)).unwrap();
        assert_eq!(
            text.as_deref(),
            Some(
                "the payload does not match (saying which condition fails would take more \
                 than 256258 steps)"
            )
        );
        assert!(f.explain_within(&p, &mut Budget::new(needed - 1)).is_err());
    }

    #[test]
    fn cost_hint_grows_with_conditions_values_and_payload() {
        let small = filter(json!({ "a": 1 }));
        assert_eq!(small.cost_hint(1_000), 1_000);
        let lists = filter(json!({ "a": { "$in": [1, 2, 3] }, "b": { "$nin": [4] } }));
        assert_eq!(lists.cost_hint(10), 10 * (2 + 4));
        assert_eq!(nin_branches(30).cost_hint(usize::MAX), u64::MAX);
    }
}
