//! The `--log` file: what containerd's shim reads back. With `--log-format json` every line is
//! `{"level":"error","msg":"...","time":"..."}` (the shim reports the last line of level "error" as
//! the failure of a call); with `text`, `time level msg`. Without `--log`, lines go to stderr.

use std::io::Write;
use std::path::PathBuf;

/// Where and how `hybox-runc` logs (kept by the monitor process too).
#[derive(Debug, Clone, Default)]
pub struct Log {
    pub path: Option<PathBuf>,
    pub json: bool,
    /// `--debug`: also log the debug lines.
    pub debug: bool,
}

impl Log {
    pub fn error(&self, msg: &str) {
        self.line("error", msg);
    }
    pub fn info(&self, msg: &str) {
        self.line("info", msg);
    }
    pub fn debug(&self, msg: &str) {
        if self.debug {
            self.line("debug", msg);
        }
    }

    fn line(&self, level: &str, msg: &str) {
        let time = crate::oci::time::now_rfc3339();
        let line = if self.json {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        } else {
            format!("{time} {level} {msg}")
        };
        let written = self.path.as_ref().is_some_and(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                // One write per line: concurrent calls (the monitor and a `kill`) never interleave.
                .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
                .is_ok()
        });
        if !written {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
}
