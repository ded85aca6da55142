//! Printing results: an aligned table (or a field-per-line record for one detailed result) for
//! people, JSON for programs, one bare field per line (`--get`) for shell variables.
//!
//! Results go to standard output and nothing else does: hints go to standard error, so a
//! captured `--get` value is exactly the value. Rendering is pure (strings in, strings out) and
//! the only write is [`emit`], whose failure (a closed pipe) travels up as an error instead of
//! a panic.

use std::io::{self, Write};

use anyhow::bail;
use serde_json::Value;

use crate::cli::OutputArgs;

/// Widest table cell; longer values end in "...".
const MAX_CELL: usize = 60;

/// The output mode chosen on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    /// Print this field of each result alone.
    Get(String),
}

impl Output {
    pub fn new(args: OutputArgs) -> Self {
        match (args.json, args.get) {
            (_, Some(field)) => Output::Get(field),
            (true, None) => Output::Json,
            (false, None) => Output::Table,
        }
    }

    pub fn is_table(&self) -> bool {
        *self == Output::Table
    }

    /// Prints `rows`: a table of `columns`, JSON (one object for one row), or one field each.
    pub fn rows(&self, rows: &[Value], columns: &[&str]) -> anyhow::Result<()> {
        let text = match self {
            Output::Table => table(rows, columns),
            Output::Json => json(&match rows {
                [one] => one.clone(),
                many => Value::Array(many.to_vec()),
            }),
            Output::Get(field) => fields(rows, field)?,
        };
        emit(&text)
    }

    /// Prints one detailed result: `fields` one per line in table mode, else as [`Self::rows`].
    pub fn record(&self, row: &Value, fields: &[&str]) -> anyhow::Result<()> {
        match self {
            Output::Table => emit(&record(row, fields)),
            _ => self.rows(std::slice::from_ref(row), fields),
        }
    }

    /// Prints one page of a list. JSON gets `{"<key>": [...], "next_cursor": "..."}`; the
    /// other modes get the rows, and the way to the next page as a hint.
    pub fn page(
        &self,
        key: &str,
        rows: Vec<Value>,
        columns: &[&str],
        next: &str,
        flag: &str,
    ) -> anyhow::Result<()> {
        if *self == Output::Json {
            let mut page = serde_json::Map::new();
            page.insert(key.to_owned(), Value::Array(rows));
            page.insert("next_cursor".to_owned(), Value::String(next.to_owned()));
            return emit(&json(&Value::Object(page)));
        }
        self.rows(&rows, columns)?;
        if !next.is_empty() {
            self.hint(&format!("next page: {flag} {next}"));
        }
        Ok(())
    }

    /// A note for the person at the terminal, on standard error; none in JSON mode, whose
    /// output carries what the note would say.
    pub fn hint(&self, text: &str) {
        if *self != Output::Json {
            let _ = writeln!(io::stderr(), "{text}");
        }
    }
}

/// Writes `text` to standard output; a closed pipe comes back as an error, not a panic.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Pretty JSON and a newline.
pub fn json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("a JSON value always prints");
    text.push('\n');
    text
}

/// `field` of each row on a line of its own; an absent value (null) is an empty line.
pub fn fields(rows: &[Value], field: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    for row in rows {
        let Some(value) = row.get(field) else {
            let known: Vec<&str> = row
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            bail!(
                "--get {field}: the result has no such field (it has {})",
                known.join(", ")
            );
        };
        match value {
            Value::String(s) => text.push_str(s),
            Value::Null => {}
            other => text.push_str(&other.to_string()),
        }
        text.push('\n');
    }
    Ok(text)
}

/// An aligned table with upper-case headers; missing values print as `-`.
pub fn table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| clip(cell(&r[*c]))).collect())
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    std::iter::once(&headers)
        .chain(&cells)
        .map(|line| aligned(line, &widths))
        .collect()
}

/// One result as `field  value` lines, the values aligned.
pub fn record(row: &Value, fields: &[&str]) -> String {
    let width = fields.iter().map(|f| f.len()).max().unwrap_or(0);
    fields
        .iter()
        .map(|f| format!("{f:<width$}  {}\n", cell(&row[*f])))
        .collect()
}

fn aligned(values: &[String], widths: &[usize]) -> String {
    let line: Vec<String> = values
        .iter()
        .zip(widths)
        .map(|(v, w)| format!("{v:<w$}"))
        .collect();
    let mut line = line.join("  ").trim_end().to_owned();
    line.push('\n');
    line
}

/// A value as table text: `-` when absent or empty, lists comma-separated, one line.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.replace(['\r', '\n'], " "),
        Value::Array(a) if a.is_empty() => "-".to_owned(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn clip(s: String) -> String {
    if s.chars().count() <= MAX_CELL {
        return s;
    }
    s.chars().take(MAX_CELL - 3).chain("...".chars()).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_table_aligns_columns_under_upper_case_headers() {
        let rows = [
            json!({"id": "a", "url": "http://x/long"}),
            json!({"id": "bbbb", "url": "u"}),
        ];
        assert_eq!(
            table(&rows, &["id", "url"]),
            "ID    URL\na     http://x/long\nbbbb  u\n"
        );
    }

    #[test]
    fn missing_values_print_as_a_dash() {
        let rows = [json!({"a": null, "b": "", "c": [], "d": 0})];
        assert_eq!(
            table(&rows, &["a", "b", "c", "d", "e"]),
            "A  B  C  D  E\n-  -  -  0  -\n"
        );
    }

    #[test]
    fn cells_stay_on_one_line_and_long_ones_are_clipped() {
        assert_eq!(cell(&json!("two\nlines")), "two lines");
        assert_eq!(cell(&json!(["a.*", "b"])), "a.*,b");
        let long = "x".repeat(80);
        let clipped = clip(long);
        assert_eq!(clipped.chars().count(), MAX_CELL);
        assert!(clipped.ends_with("..."));
    }

    #[test]
    fn get_prints_the_bare_field_of_each_row() {
        let rows = [
            json!({"id": "t_1", "n": 3}),
            json!({"id": "t_2", "n": null}),
        ];
        assert_eq!(fields(&rows, "id").unwrap(), "t_1\nt_2\n");
        assert_eq!(fields(&rows, "n").unwrap(), "3\n\n");
    }

    #[test]
    fn get_of_an_unknown_field_says_which_exist() {
        let err = fields(&[json!({"id": "t_1", "name": "acme"})], "secret").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--get secret: the result has no such field (it has id, name)"
        );
    }

    #[test]
    fn a_record_puts_each_field_on_its_line() {
        let row = json!({"id": "e_1", "p50_latency_ms": 12, "filter": ""});
        assert_eq!(
            record(&row, &["id", "p50_latency_ms", "filter"]),
            "id              e_1\np50_latency_ms  12\nfilter          -\n"
        );
    }

    #[test]
    fn json_and_get_take_precedence_over_tables() {
        let json_mode = Output::new(OutputArgs {
            json: true,
            get: None,
        });
        assert_eq!(json_mode, Output::Json);
        let get = Output::new(OutputArgs {
            json: false,
            get: Some("id".into()),
        });
        assert_eq!(get, Output::Get("id".into()));
        assert!(Output::new(OutputArgs::default()).is_table());
    }
}
