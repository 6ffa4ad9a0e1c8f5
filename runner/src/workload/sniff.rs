//! Sniffing: what a file is from its leading bytes, never its extension. ELF is classified in
//! [`super::elf`], which reads more of the file.

use std::path::PathBuf;

use super::{Format, HYBOX_ARTIFACT_MAGIC};

/// Why the leading bytes are not a format hybox runs: what they look like instead (the `found` of
/// [`super::WorkloadError::Unsupported`], which names the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniffError {
    #[error("empty file")]
    Empty,
    /// `\0asm` with a version/layer other than a core module's (1) or a component's (0x0d, layer 1).
    #[error("wasm binary with unsupported version/layer bytes {}", hex::encode(.bytes))]
    WasmVersion { bytes: [u8; 4] },
    /// `\0asm` cut before its version.
    #[error("truncated wasm header ({len} bytes)")]
    TruncatedWasm { len: usize },
    /// A prefix of the wasm or ELF magic, and nothing more.
    #[error("truncated header ({len} bytes)")]
    Truncated { len: usize },
    #[error("a Windows PE executable (MZ header)")]
    WindowsPe,
    #[error("a Mach-O executable (macOS)")]
    MachO,
    #[error("a Mach-O universal binary or a Java class file (CAFEBABE)")]
    Cafebabe,
    #[error("a zip archive")]
    Zip,
    #[error("gzip-compressed data")]
    Gzip,
    /// Nothing known; `first` holds up to 8 leading bytes.
    #[error("unknown format (first bytes: {})", hex_bytes(.first))]
    Unknown { first: Vec<u8> },
    /// The kernel reads a `#!` line only within its first page.
    #[error("a #! line with no end within 4 KiB")]
    ScriptNoEnd,
    #[error("a #! line that is not UTF-8")]
    ScriptNotUtf8,
    /// The kernel needs an absolute interpreter path (it does not search `PATH`).
    #[error("a #! script whose interpreter is not an absolute path ({interpreter:?})")]
    ScriptInterpreter { interpreter: String },
}

/// `68 65 6c`: bytes as the error shows them.
fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Classifies the leading bytes of a file (everything but ELF, which needs the whole file).
pub fn sniff(head: &[u8]) -> Result<Format, SniffError> {
    if head.is_empty() {
        return Err(SniffError::Empty);
    }
    if head.starts_with(b"\0asm") {
        return match head.get(4..8) {
            Some([1, 0, 0, 0]) => Ok(Format::WasmModule),
            Some([0x0d, 0, 1, 0]) => Ok(Format::WasmComponent),
            Some(v) => Err(SniffError::WasmVersion {
                bytes: v.try_into().unwrap_or_default(),
            }),
            None => Err(SniffError::TruncatedWasm { len: head.len() }),
        };
    }
    if b"\0asm".starts_with(head) || b"\x7fELF".starts_with(head) {
        return Err(SniffError::Truncated { len: head.len() });
    }
    if head.starts_with(HYBOX_ARTIFACT_MAGIC) {
        return Ok(Format::HyboxArtifact);
    }
    if head.starts_with(b"#!") {
        return script(head);
    }
    if head.starts_with(b"MZ") {
        return Err(SniffError::WindowsPe);
    }
    if head.len() >= 4 {
        let m = [head[0], head[1], head[2], head[3]];
        if matches!(
            m,
            [0xfe, 0xed, 0xfa, 0xce | 0xcf] | [0xce | 0xcf, 0xfa, 0xed, 0xfe]
        ) {
            return Err(SniffError::MachO);
        }
        if m == [0xca, 0xfe, 0xba, 0xbe] {
            return Err(SniffError::Cafebabe);
        }
        if m == *b"PK\x03\x04" {
            return Err(SniffError::Zip);
        }
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Err(SniffError::Gzip);
    }
    if let Some(component) = wat_kind(head) {
        return Ok(Format::WasmText { component });
    }
    Err(SniffError::Unknown {
        first: head.iter().take(8).copied().collect(),
    })
}

/// `#!/path/to/interp [arg]`, as the kernel reads it (one optional argument, the rest of the line).
fn script(head: &[u8]) -> Result<Format, SniffError> {
    let line_end = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(SniffError::ScriptNoEnd)?;
    let line = std::str::from_utf8(&head[2..line_end]).map_err(|_| SniffError::ScriptNotUtf8)?;
    let line = line.trim();
    let (interp, arg) = match line.split_once([' ', '\t']) {
        Some((i, a)) => (i, Some(a.trim().to_string()).filter(|a| !a.is_empty())),
        None => (line, None),
    };
    if interp.is_empty() || !interp.starts_with('/') {
        return Err(SniffError::ScriptInterpreter {
            interpreter: interp.to_string(),
        });
    }
    Ok(Format::Script {
        interpreter: PathBuf::from(interp),
        arg,
    })
}

/// Whether text is a `.wat` module or component: the first token after whitespace and comments.
fn wat_kind(head: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(head).ok().or_else(|| {
        // A 4 KiB window can cut a multi-byte character; accept text valid up to that cut.
        let e = std::str::from_utf8(head).unwrap_err();
        std::str::from_utf8(&head[..e.valid_up_to()])
            .ok()
            .filter(|_| e.error_len().is_none())
    })?;
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(";;") {
            rest = r.split_once('\n').map(|x| x.1).unwrap_or("");
        } else if let Some(r) = rest.strip_prefix("(;") {
            rest = r.split_once(";)").map(|x| x.1)?;
        } else {
            break;
        }
    }
    let r = rest.strip_prefix('(')?.trim_start();
    let word: String = r
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    match word.as_str() {
        "module" => Some(false),
        "component" => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_headers() {
        assert_eq!(sniff(b"\0asm\x01\0\0\0rest").unwrap(), Format::WasmModule);
        assert_eq!(
            sniff(b"\0asm\x0d\0\x01\0rest").unwrap(),
            Format::WasmComponent
        );
        assert_eq!(
            sniff(b"\0asm\x02\0\0\0").unwrap_err().to_string(),
            "wasm binary with unsupported version/layer bytes 02000000"
        );
        assert_eq!(
            sniff(b"\0asm\x01").unwrap_err().to_string(),
            "truncated wasm header (5 bytes)"
        );
        assert_eq!(
            sniff(b"\0as").unwrap_err().to_string(),
            "truncated header (3 bytes)"
        );
    }

    #[test]
    fn wat_text_with_comments() {
        assert_eq!(
            sniff(b";; hi\n(; block ;)  (module (func))").unwrap(),
            Format::WasmText { component: false }
        );
        assert_eq!(
            sniff(b"\n( component )").unwrap(),
            Format::WasmText { component: true }
        );
        assert!(sniff(b"(modulex)").is_err());
    }

    #[test]
    fn scripts() {
        assert_eq!(
            sniff(b"#!/bin/sh -e\necho").unwrap(),
            Format::Script {
                interpreter: "/bin/sh".into(),
                arg: Some("-e".into())
            }
        );
        assert!(sniff(b"#!sh\n")
            .unwrap_err()
            .to_string()
            .contains("not an absolute path"));
        assert_eq!(sniff(b"#!/bin/sh").unwrap_err(), SniffError::ScriptNoEnd);
    }
}
