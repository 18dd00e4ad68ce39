//! Aligned columns, as every table of the CLIs prints them.

use std::io::{self, Write};

/// Rows of the state table printed after a change; `list` prints them all.
pub const STATE_ROWS: usize = 20;

/// How much of a map a printer shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The state after a change: at most [`STATE_ROWS`] rows; nothing with `--quiet`.
    State,
    /// A listing: every row.
    Full,
}

/// ", 1 invalid" (nothing when there are none).
pub(super) fn invalid_count(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {n} invalid")
    }
}

/// Writes aligned columns; a [`View::State`] shows at most [`STATE_ROWS`]
/// rows and then points at the command that lists the rest.
pub(super) fn write_table(
    w: &mut impl Write,
    headers: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
    total: usize,
    view: View,
    list_command: &str,
) -> io::Result<()> {
    let shown: Vec<Vec<String>> = match view {
        View::State => rows.take(STATE_ROWS).collect(),
        View::Full => rows.collect(),
    };
    if shown.is_empty() {
        return writeln!(w, "  (none)");
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &shown {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |w: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(w, "  {}", text.join("  ").trim_end())
    };
    line(w, &mut headers.iter().copied())?;
    for row in &shown {
        line(w, &mut row.iter().map(String::as_str))?;
    }
    if total > shown.len() {
        writeln!(w, "  ... and {} more; see `{list_command}`", total - shown.len())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_table_is_capped() {
        let rows = (0..25).map(|i| vec![i.to_string()]);
        let mut buf = Vec::new();
        write_table(&mut buf, &["N"], rows, 25, View::State, "x list").unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), 1 + STATE_ROWS + 1);
        assert!(text.ends_with("  ... and 5 more; see `x list`\n"), "{text}");
    }
}
