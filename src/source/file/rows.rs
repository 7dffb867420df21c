//! The rows of an export file, JSON Lines or CSV, read one at a time and looked
//! up by column (JSON key) name, so that the user and group readers need not
//! care which format they read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::check_complete;
use super::line_bound::LineBound;
use crate::config::{ExportFile, FileFormat};

/// An export file, read with a bound on its lines.
type Bounded = LineBound<File>;
use crate::source::SourceError;

/// An open export file.
pub struct Rows {
    path: PathBuf,
    format: Format,
    /// The line the last row came from (its first line, for a CSV record).
    line: u64,
}

enum Format {
    JsonLines(Lines<BufReader<Bounded>>),
    Csv {
        records: csv::Reader<Bounded>,
        columns: Arc<HashMap<String, usize>>,
    },
}

/// One user or group.
pub enum Row {
    Json(Map<String, Value>),
    Csv {
        record: csv::StringRecord,
        columns: Arc<HashMap<String, usize>>,
    },
}

impl Rows {
    /// Opens `file` once it is known to be complete.
    /// Opens `file` once it is known to be complete; a line longer than
    /// `max_line_bytes` fails the read.
    pub fn open(file: &ExportFile, max_line_bytes: usize) -> Result<Self, SourceError> {
        check_complete(file)?;
        let broken = |reason: String| SourceError::File {
            path: file.path.display().to_string(),
            reason,
        };
        let opened = File::open(&file.path).map_err(|err| broken(err.to_string()))?;
        let opened = LineBound::new(opened, max_line_bytes);
        let format = match file.format {
            FileFormat::JsonLines => Format::JsonLines(BufReader::new(opened).lines()),
            FileFormat::Csv => csv_columns(opened).map_err(broken)?,
        };
        Ok(Self {
            path: file.path.clone(),
            format,
            line: 0,
        })
    }

    /// The next row; `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<Row>, SourceError> {
        let row = match &mut self.format {
            Format::JsonLines(lines) => next_json(lines, &mut self.line),
            Format::Csv { records, columns } => {
                let mut record = csv::StringRecord::new();
                let more = records.read_record(&mut record);
                self.line = record.position().map_or(self.line, |p| p.line());
                match more {
                    Ok(true) => Ok(Some(Row::Csv {
                        record,
                        columns: columns.clone(),
                    })),
                    Ok(false) => Ok(None),
                    Err(err) => Err(format!("is not valid CSV: {err}")),
                }
            }
        };
        row.map_err(|reason| self.broken(reason))
    }

    pub fn line(&self) -> u64 {
        self.line
    }

    /// The file cannot be trusted, for `reason`, at the current line.
    pub fn broken(&self, reason: String) -> SourceError {
        SourceError::File {
            path: self.path.display().to_string(),
            reason: if self.line == 0 {
                reason
            } else {
                format!("line {}: {reason}", self.line)
            },
        }
    }
}

/// The next non-blank line's object, counting lines in `line`.
fn next_json(lines: &mut Lines<BufReader<Bounded>>, line: &mut u64) -> Result<Option<Row>, String> {
    for text in lines {
        *line += 1;
        let text = text.map_err(|err| err.to_string())?;
        if text.trim().is_empty() {
            continue;
        }
        return match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(object)) => Ok(Some(Row::Json(object))),
            Ok(_) => Err("is not a JSON object".into()),
            Err(err) => Err(format!("is not valid JSON: {err}")),
        };
    }
    Ok(None)
}

/// A CSV reader past its header row, with the columns the header names.
fn csv_columns(opened: Bounded) -> Result<Format, String> {
    let mut records = csv::Reader::from_reader(opened);
    let headers = records
        .headers()
        .map_err(|err| format!("the header row cannot be read: {err}"))?;
    let columns = headers
        .iter()
        .enumerate()
        .map(|(at, name)| (name.trim().to_owned(), at))
        .collect();
    Ok(Format::Csv {
        records,
        columns: Arc::new(columns),
    })
}

impl Row {
    /// A column's text, trimmed; `None` when absent or blank.
    pub fn text(&self, key: &str) -> Option<String> {
        let text = match self {
            Row::Json(object) => match object.get(key)? {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                _ => return None,
            },
            Row::Csv { record, columns } => record.get(*columns.get(key)?)?.to_owned(),
        };
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }

    /// A list column: a JSON array, or names separated by `;`.
    pub fn list(&self, key: &str) -> Vec<String> {
        let items: Vec<String> = match self {
            Row::Json(object) => match object.get(key) {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|item| match item {
                        Value::String(text) => Some(text.clone()),
                        Value::Number(number) => Some(number.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => split(self.text(key)),
            },
            Row::Csv { .. } => split(self.text(key)),
        };
        items
            .into_iter()
            .map(|item| item.trim().to_owned())
            .filter(|item| !item.is_empty())
            .collect()
    }

    /// `active`: true unless it says otherwise; a value that is no yes or no is
    /// an error, not a guess.
    pub fn active(&self) -> Result<bool, String> {
        if let Row::Json(object) = self {
            if let Some(Value::Bool(active)) = object.get("active") {
                return Ok(*active);
            }
        }
        match self
            .text("active")
            .map(|t| t.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("true" | "yes" | "1") => Ok(true),
            Some("false" | "no" | "0") => Ok(false),
            Some(other) => Err(format!("active must be true or false; got {other:?}")),
        }
    }
}

fn split(text: Option<String>) -> Vec<String> {
    text.map(|t| t.split(';').map(str::to_owned).collect())
        .unwrap_or_default()
}
