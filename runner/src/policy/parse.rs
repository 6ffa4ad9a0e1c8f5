//! Strict parsing of policy JSON: unknown fields and trailing text are errors, and every error names
//! the file, the line and column, and the JSON path of the field (`resources.cpus`).

use super::{Policy, PolicyError};

/// The policy in `text` (`origin` names it in errors), parsed but not yet validated.
pub(super) fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let policy: Policy =
        serde_path_to_error::deserialize(&mut de).map_err(|e| parse_error(origin, e))?;
    // Trailing garbage after the object is an error too.
    de.end().map_err(|e| PolicyError::Parse {
        file: origin.to_string(),
        path: "(root)".into(),
        line: e.line(),
        column: e.column(),
        message: "expected nothing after the policy object, found more".into(),
    })?;
    Ok(policy)
}

fn parse_error(origin: &str, e: serde_path_to_error::Error<serde_json::Error>) -> PolicyError {
    let path = e.path().to_string();
    let inner = e.inner();
    let (line, column) = (inner.line(), inner.column());
    // serde_json appends " at line L column C"; we print the position up front instead.
    let full = inner.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    let path = if path == "." || path == "?" || path.is_empty() {
        "(root)".to_string()
    } else {
        path
    };
    PolicyError::Parse {
        file: origin.to_string(),
        path,
        line,
        column,
        message,
    }
}
