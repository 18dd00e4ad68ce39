//! What the CLIs print: tables for people, JSON for programs, and the
//! one-line notes that say what a command did. [`Out`] is where it goes;
//! one module per thing shown: `identities` (endpointctl's), `rules`
//! (policyctl's), and `table` (aligned columns, for both; it imports
//! nothing of the others).

mod identities;
mod rules;
mod table;

use std::fmt::Display;
use std::io::{self, BufWriter, StdoutLock, Write};

use clap::ValueEnum;
use serde::Serialize;

use crate::Common;

pub use identities::{IdentityRow, IdentityState};
pub use rules::{reverse_of, PolicyUsage, Reverse, RuleRow};
pub use table::{View, STATE_ROWS};

/// How listings and map states are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns, sorted
    Table,
    /// One JSON document on stdout; the one-line notes go to stderr
    Json,
    /// The Prometheus text format (`policyctl stats` only)
    Prometheus,
}

/// Where a command's output goes, honouring `--quiet` and `-o`.
pub struct Out {
    format: Format,
    quiet: bool,
    stdout: BufWriter<StdoutLock<'static>>,
}

impl Out {
    pub fn new(common: &Common) -> Self {
        Self {
            format: common.output,
            quiet: common.quiet,
            stdout: BufWriter::new(io::stdout().lock()),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// A one-line account of what a command did: on stdout with tables, on
    /// stderr with `-o json` so that stdout stays one JSON document.
    pub fn note(&mut self, note: impl Display) -> io::Result<()> {
        match self.format {
            Format::Table | Format::Prometheus => writeln!(self.stdout, "{note}"),
            Format::Json => {
                self.stdout.flush()?;
                writeln!(io::stderr(), "{note}")
            }
        }
    }

    /// Prints `text` as it is.
    pub fn raw(&mut self, text: &str) -> io::Result<()> {
        self.stdout.write_all(text.as_bytes())
    }

    /// Prints `value` as pretty JSON on stdout.
    pub fn json(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut self.stdout, value)?;
        writeln!(self.stdout)
    }

    /// Prints rows under headers in aligned columns (tables only).
    pub fn table(&mut self, headers: &[&str], rows: Vec<Vec<String>>) -> io::Result<()> {
        let total = rows.len();
        table::write_table(&mut self.stdout, headers, rows.into_iter(), total, View::Full, "")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.stdout.flush()
    }

    fn skips(&self, view: View) -> bool {
        view == View::State && self.quiet
    }
}
