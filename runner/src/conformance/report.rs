//! What the suite hands back: one [`CaseResult`] per case and backend, and the whole [`Report`] with
//! its human-readable table.

use serde::Serialize;

/// A case's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The case cannot run on this host; `detail` says why.
    Unsupported,
}

/// One case on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: String,
    /// The attack this case covers, as `family: what` (e.g. `privilege: setns`); the catalogue is
    /// docs/conformance.md.
    pub catalogue: String,
    /// `native`, `wasm`, `wasm+os` (wasm with `wasm.os_sandbox`), or `both` (equivalence cases).
    pub backend: String,
    /// The expected outcome and mechanism.
    pub expected: String,
    /// What the run report (and the probe) showed.
    pub got: String,
    /// The negative control and what it showed (`n/a: why` where none is safe or meaningful).
    pub control: String,
    pub verdict: Verdict,
    /// Why a case failed or is unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The whole table.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub results: Vec<CaseResult>,
    pub passed: usize,
    pub failed: usize,
    pub unsupported: usize,
}

impl Report {
    /// Whether no case failed. A case this host cannot run is `unsupported`, listed with its reason,
    /// and does not count as a failure (nor as a pass).
    pub fn all_passed(&self) -> bool {
        self.failed == 0
    }

    /// The table for humans.
    pub fn table(&self) -> String {
        let headers = ["case", "backend", "expected", "got", "control", "result"];
        let rows: Vec<[String; 6]> = self
            .results
            .iter()
            .map(|r| {
                [
                    r.case.clone(),
                    r.backend.clone(),
                    r.expected.clone(),
                    clip(&r.got, 70),
                    clip(&r.control, 60),
                    match r.verdict {
                        Verdict::Pass => "PASS".into(),
                        Verdict::Fail => "FAIL".into(),
                        Verdict::Unsupported => "UNSUPPORTED".into(),
                    },
                ]
            })
            .collect();
        let mut width = headers.map(str::len);
        for row in &rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:<w$}  "));
                }
            }
            s.trim_end().to_string()
        };
        let mut out = line(&headers.map(String::from));
        out.push('\n');
        for (row, r) in rows.iter().zip(&self.results) {
            out.push_str(&line(row));
            out.push('\n');
            if let Some(d) = &r.detail {
                out.push_str(&format!("    {}: {d}\n", r.case));
            }
        }
        out.push_str(&format!(
            "{} passed, {} failed, {} unsupported\n",
            self.passed, self.failed, self.unsupported
        ));
        out
    }
}

/// At most `n` characters, with an ellipsis (the JSON keeps the whole text).
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n - 1).collect();
        c.push('…');
        c
    }
}
