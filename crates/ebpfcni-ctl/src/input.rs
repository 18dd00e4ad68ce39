//! Reading an apply file, or stdin for '-', all of it, before any map is
//! touched.

use std::io::Read;
use std::path::Path;

use crate::exit::Failure;

/// What messages call the input: "stdin" for '-', else the path.
pub fn source_name(file: &Path) -> String {
    if file.as_os_str() == "-" {
        "stdin".to_owned()
    } else {
        file.display().to_string()
    }
}

/// Reads `file` ('-' is stdin) as UTF-8 text and parses it with `parse`.
/// An unreadable file is a failure (exit 1); text that is not UTF-8 or
/// that `parse` refuses is bad input (exit 2). Nothing is written either way.
pub fn read_file<T, E: std::fmt::Display>(
    file: &Path,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, Failure> {
    let name = source_name(file);
    let mut bytes = Vec::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().lock().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes))
    };
    read.map_err(|e| Failure::Runtime(format!("failed to read {name}: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Failure::Usage(format!("{name} is not UTF-8 text; nothing was written")))?;
    parse(&text).map_err(|e| Failure::Usage(format!("{name}: {e}; nothing was written")))
}
