//! Workload detection: what an artifact *is*, from its bytes (never its extension).
//!
//! ```no_run
//! use hybox::workload::Workload;
//! let w = Workload::detect("examples/out/wasm/hello.wasm".as_ref()).unwrap();
//! println!("{}", w.describe());
//! ```

use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::Backend;

/// Why an artifact was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a format hybox runs; `found` says what they look like.
    #[error("{path}: cannot run this artifact: {found}")]
    Unsupported { path: String, found: String },
    /// A function bundle's manifest is missing or wrong.
    #[error("{path}: invalid bundle manifest: {message}")]
    Manifest { path: String, message: String },
    /// A file named by a bundle manifest is not what the manifest says it is.
    #[error("{bundle}: variant `{variant}` ({path}): {message}")]
    Variant {
        bundle: String,
        variant: String,
        path: String,
        message: String,
    },
}

impl WorkloadError {
    /// The CLI's exit status for this error (see [`crate::exit`]).
    pub fn exit_status(&self) -> i32 {
        match self {
            WorkloadError::NotFound { .. } => crate::exit::NOT_FOUND,
            _ => crate::exit::CANNOT_EXECUTE,
        }
    }
}

/// The leading bytes of hybox's own precompiled artifact (see `backend::wasm::artifact`).
pub const HYBOX_ARTIFACT_MAGIC: &[u8; 8] = b"\0hyboxc1";

/// What one file is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Format {
    /// A WebAssembly core module (binary), run with WASI preview 1.
    WasmModule,
    /// A WebAssembly component, run as `wasi:cli/command` (WASI preview 2).
    WasmComponent,
    /// WebAssembly text (`.wat`) of a module or a component.
    WasmText { component: bool },
    /// A precompiled artifact written by this hybox (authenticated before it is loaded).
    HyboxArtifact,
    /// A native ELF executable for this host.
    Elf(ElfInfo),
    /// A `#!` script; its interpreter must be visible inside the sandbox.
    Script {
        interpreter: PathBuf,
        arg: Option<String>,
    },
}

impl Format {
    /// The backend that can run this format.
    pub fn backend(&self) -> Backend {
        match self {
            Format::WasmModule
            | Format::WasmComponent
            | Format::WasmText { .. }
            | Format::HyboxArtifact => Backend::Wasm,
            Format::Elf(_) | Format::Script { .. } => Backend::Native,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::WasmModule => write!(f, "wasm module"),
            Format::WasmComponent => write!(f, "wasm component"),
            Format::WasmText { component: false } => write!(f, "wasm text (module)"),
            Format::WasmText { component: true } => write!(f, "wasm text (component)"),
            Format::HyboxArtifact => write!(f, "hybox precompiled artifact"),
            Format::Elf(e) => write!(f, "{e}"),
            Format::Script { interpreter, arg } => {
                write!(f, "script for {}", interpreter.display())?;
                if let Some(a) = arg {
                    write!(f, " {a}")?;
                }
                Ok(())
            }
        }
    }
}

/// What hybox needs to know of an ELF before running it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElfInfo {
    pub machine: String,
    /// No program interpreter (`PT_INTERP`): runs without the host's dynamic loader.
    pub is_static: bool,
    /// The dynamic loader the binary asks for, which must be visible in the sandbox.
    pub interpreter: Option<PathBuf>,
}

impl fmt::Display for ElfInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.interpreter {
            None => write!(f, "ELF {} static", self.machine),
            Some(i) => write!(f, "ELF {} dynamic ({})", self.machine, i.display()),
        }
    }
}

/// One detected file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub path: PathBuf,
    pub format: Format,
}

/// What hybox runs: one file, or a bundle with a wasm and/or a native variant of the same program.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per run; boxing would only add noise at every match
pub enum Workload {
    Single(Artifact),
    Bundle(Bundle),
}

/// A directory holding `bundle.json` and the variants it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub wasm: Option<Artifact>,
    pub native: Option<Artifact>,
    /// The bundle's default policy, resolved to a path, if it names one.
    pub policy: Option<PathBuf>,
}

/// The name of a bundle's manifest file.
pub const MANIFEST: &str = "bundle.json";

/// `bundle.json`: names the variants of one program and its default policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must be 1.
    pub version: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Path of the wasm variant, relative to the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<PathBuf>,
    /// Path of the native variant, relative to the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<PathBuf>,
    /// The bundle's default policy, relative to the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PathBuf>,
    /// What the program needs beyond computing and its granted files. Some of these WASI cannot
    /// serve, which sends the bundle to the native backend.
    #[serde(default)]
    pub needs: Vec<Need>,
}

/// A capability a program declares it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// fork/exec of other programs.
    Subprocesses,
    /// Raw or packet sockets.
    RawSockets,
    /// OS threads.
    Threads,
    /// POSIX signals and handlers.
    Signals,
    /// TCP/UDP sockets on the granted network (WASI p2 components can have them; p1 modules cannot).
    Sockets,
}

impl Need {
    /// Whether a WASI guest can have this at all (for the given flavour).
    pub fn wasi_can_serve(self, component: bool) -> bool {
        match self {
            Need::Subprocesses | Need::RawSockets | Need::Threads | Need::Signals => false,
            Need::Sockets => component,
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = serde_json::to_value(self).unwrap_or_default();
        f.write_str(v.as_str().unwrap_or("?"))
    }
}

/// How many leading bytes detection reads.
const SNIFF_LEN: usize = 4096;

impl Workload {
    /// Detects a file or a bundle directory.
    pub fn detect(path: &Path) -> Result<Workload, WorkloadError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WorkloadError::NotFound {
                path: shown.clone(),
            },
            _ => WorkloadError::Read {
                path: shown.clone(),
                source: e,
            },
        })?;
        if meta.is_dir() {
            return Bundle::load(path).map(Workload::Bundle);
        }
        Ok(Workload::Single(Artifact::detect(path)?))
    }

    /// The variant for a backend, if the workload has one.
    pub fn variant(&self, backend: Backend) -> Option<&Artifact> {
        match self {
            Workload::Single(a) => (a.format.backend() == backend).then_some(a),
            Workload::Bundle(b) => match backend {
                Backend::Wasm => b.wasm.as_ref(),
                Backend::Native => b.native.as_ref(),
            },
        }
    }

    /// One line: what was found.
    pub fn describe(&self) -> String {
        match self {
            Workload::Single(a) => a.format.to_string(),
            Workload::Bundle(b) => {
                let mut v = Vec::new();
                if let Some(w) = &b.wasm {
                    v.push(format!("wasm: {}", w.format));
                }
                if let Some(n) = &b.native {
                    v.push(format!("native: {}", n.format));
                }
                format!("bundle `{}` ({})", b.manifest.name, v.join("; "))
            }
        }
    }

    /// The path the user gave (file or bundle directory).
    pub fn path(&self) -> &Path {
        match self {
            Workload::Single(a) => &a.path,
            Workload::Bundle(b) => &b.dir,
        }
    }

    /// The needs declared by a bundle (none for a single file).
    pub fn needs(&self) -> &[Need] {
        match self {
            Workload::Single(_) => &[],
            Workload::Bundle(b) => &b.manifest.needs,
        }
    }
}

impl Artifact {
    /// Sniffs one file.
    pub fn detect(path: &Path) -> Result<Artifact, WorkloadError> {
        let shown = path.display().to_string();
        let mut f = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WorkloadError::NotFound {
                path: shown.clone(),
            },
            _ => WorkloadError::Read {
                path: shown.clone(),
                source: e,
            },
        })?;
        let mut head = Vec::with_capacity(SNIFF_LEN);
        (&mut f)
            .take(SNIFF_LEN as u64)
            .read_to_end(&mut head)
            .map_err(|e| WorkloadError::Read {
                path: shown.clone(),
                source: e,
            })?;
        let unsupported = |found: String| WorkloadError::Unsupported {
            path: shown.clone(),
            found,
        };
        let format = if head.starts_with(b"\x7fELF") {
            // Only the header, the program headers and the interpreter's name are read (with
            // pread, wherever they sit): never the whole binary, which can be huge.
            let at = |offset: u64, len: usize| -> Result<Vec<u8>, String> {
                use std::os::unix::fs::FileExt;
                if len > ELF_READ_MAX {
                    return Err(format!("a malformed ELF file ({len} bytes of headers)"));
                }
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, offset).map_err(|e| {
                    format!("a malformed ELF file (reading {len} bytes at {offset}: {e})")
                })?;
                Ok(buf)
            };
            Format::Elf(elf_info(&head, at).map_err(unsupported)?)
        } else {
            sniff(&head).map_err(unsupported)?
        };
        Ok(Artifact {
            path: path.to_path_buf(),
            format,
        })
    }
}

/// Classifies the leading bytes of a file (everything but ELF, which needs the whole file).
pub fn sniff(head: &[u8]) -> Result<Format, String> {
    if head.is_empty() {
        return Err("empty file".into());
    }
    if head.starts_with(b"\0asm") {
        return match head.get(4..8) {
            Some([1, 0, 0, 0]) => Ok(Format::WasmModule),
            Some([0x0d, 0, 1, 0]) => Ok(Format::WasmComponent),
            Some(v) => Err(format!(
                "wasm binary with unsupported version/layer bytes {}",
                hex::encode(v)
            )),
            None => Err(format!("truncated wasm header ({} bytes)", head.len())),
        };
    }
    if b"\0asm".starts_with(head) || b"\x7fELF".starts_with(head) {
        return Err(format!("truncated header ({} bytes)", head.len()));
    }
    if head.starts_with(HYBOX_ARTIFACT_MAGIC) {
        return Ok(Format::HyboxArtifact);
    }
    if head.starts_with(b"#!") {
        return script(head);
    }
    if head.starts_with(b"MZ") {
        return Err("a Windows PE executable (MZ header)".into());
    }
    if head.len() >= 4 {
        let m = [head[0], head[1], head[2], head[3]];
        if matches!(
            m,
            [0xfe, 0xed, 0xfa, 0xce | 0xcf] | [0xce | 0xcf, 0xfa, 0xed, 0xfe]
        ) {
            return Err("a Mach-O executable (macOS)".into());
        }
        if m == [0xca, 0xfe, 0xba, 0xbe] {
            return Err("a Mach-O universal binary or a Java class file (CAFEBABE)".into());
        }
        if m == *b"PK\x03\x04" {
            return Err("a zip archive".into());
        }
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Err("gzip-compressed data".into());
    }
    if let Some(component) = wat_kind(head) {
        return Ok(Format::WasmText { component });
    }
    let shown: String = head
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    Err(format!("unknown format (first bytes: {shown})"))
}

/// `#!/path/to/interp [arg]`, as the kernel reads it (one optional argument, the rest of the line).
fn script(head: &[u8]) -> Result<Format, String> {
    let line_end = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("a #! line with no end within 4 KiB")?;
    let line = std::str::from_utf8(&head[2..line_end])
        .map_err(|_| "a #! line that is not UTF-8".to_string())?;
    let line = line.trim();
    let (interp, arg) = match line.split_once([' ', '\t']) {
        Some((i, a)) => (i, Some(a.trim().to_string()).filter(|a| !a.is_empty())),
        None => (line, None),
    };
    if interp.is_empty() || !interp.starts_with('/') {
        return Err(format!(
            "a #! script whose interpreter is not an absolute path ({interp:?})"
        ));
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

/// The ELF machine hybox runs natively on this host.
pub fn host_machine() -> (u16, &'static str) {
    #[cfg(target_arch = "x86_64")]
    return (goblin::elf::header::EM_X86_64, "x86_64");
    #[cfg(target_arch = "aarch64")]
    return (goblin::elf::header::EM_AARCH64, "aarch64");
}

/// The most bytes of ELF headers read to classify a file (program headers and the interpreter
/// name; a real executable needs a few KiB).
const ELF_READ_MAX: usize = 1 << 20;

/// Classifies an ELF from its first bytes (`head`); `at(offset, len)` reads more of the file (the
/// program headers and `PT_INTERP` can sit anywhere).
fn elf_info(
    head: &[u8],
    mut at: impl FnMut(u64, usize) -> Result<Vec<u8>, String>,
) -> Result<ElfInfo, String> {
    use goblin::elf::{header, program_header, Elf, ProgramHeader};
    let header_len = if head.get(header::EI_CLASS) == Some(&header::ELFCLASS32) {
        header::header32::SIZEOF_EHDR
    } else {
        header::header64::SIZEOF_EHDR
    };
    if head.len() < header_len {
        return Err(format!("truncated ELF header ({} bytes)", head.len()));
    }
    let malformed = |e: goblin::error::Error| format!("a malformed ELF file ({e})");
    let elf = Elf::parse_header(head)
        .and_then(Elf::lazy_parse)
        .map_err(malformed)?;
    let machine = header::machine_to_str(elf.header.e_machine);
    let (host, host_name) = host_machine();
    if !elf.is_64 || elf.header.e_machine != host {
        let class = if elf.is_64 { "64-bit" } else { "32-bit" };
        return Err(format!(
            "an ELF for {class} {machine}; this host runs 64-bit {host_name}"
        ));
    }
    if !elf.little_endian {
        return Err("a big-endian ELF; this host is little-endian".into());
    }
    match elf.header.e_type {
        header::ET_EXEC | header::ET_DYN => {}
        t => {
            return Err(format!(
                "an ELF that is not an executable (type {})",
                header::et_to_str(t)
            ))
        }
    }
    if elf.entry == 0 {
        return Err("an ELF shared library without an entry point, not an executable".into());
    }
    let phnum = usize::from(elf.header.e_phnum);
    let table = at(
        elf.header.e_phoff,
        phnum.saturating_mul(usize::from(elf.header.e_phentsize)),
    )?;
    // 64-bit little-endian: checked above.
    let ctx = goblin::container::Ctx::new(
        goblin::container::Container::Big,
        goblin::container::Endian::Little,
    );
    let phdrs = ProgramHeader::parse(&table, 0, phnum, ctx).map_err(malformed)?;
    let mut interpreter = None;
    if let Some(ph) = phdrs
        .iter()
        .find(|p| p.p_type == program_header::PT_INTERP && p.p_filesz != 0)
    {
        let len = usize::try_from(ph.p_filesz - 1).unwrap_or(usize::MAX);
        let name = at(ph.p_offset, len)?;
        let name = String::from_utf8(name)
            .map_err(|_| "a malformed ELF file (interpreter name is not UTF-8)".to_string())?;
        interpreter = Some(PathBuf::from(name.trim_end_matches('\0')));
    }
    Ok(ElfInfo {
        machine: host_name.to_string(),
        is_static: interpreter.is_none(),
        interpreter,
    })
}

impl Bundle {
    /// Loads `DIR/bundle.json` and detects each variant it names.
    pub fn load(dir: &Path) -> Result<Bundle, WorkloadError> {
        let manifest_path = dir.join(MANIFEST);
        let shown = manifest_path.display().to_string();
        let text = match std::fs::read_to_string(&manifest_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WorkloadError::Unsupported {
                    path: dir.display().to_string(),
                    found: format!("a directory without a {MANIFEST} (not a function bundle)"),
                })
            }
            Err(e) => {
                return Err(WorkloadError::Read {
                    path: shown,
                    source: e,
                })
            }
        };
        let bad = |message: String| WorkloadError::Manifest {
            path: shown.clone(),
            message,
        };
        let mut de = serde_json::Deserializer::from_str(&text);
        let manifest: Manifest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let inner = e.inner();
            let msg = inner.to_string();
            let msg = msg
                .rfind(" at line ")
                .map(|i| msg[..i].to_string())
                .unwrap_or(msg);
            bad(format!(
                "{}:{}: {}: {}",
                inner.line(),
                inner.column(),
                e.path(),
                msg
            ))
        })?;
        if manifest.version != 1 {
            return Err(bad(format!(
                "version: expected 1, found {}",
                manifest.version
            )));
        }
        if manifest.name.is_empty()
            || !manifest
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(format!(
                "name: expected letters, digits, '-' or '_', found {:?}",
                manifest.name
            )));
        }
        if manifest.wasm.is_none() && manifest.native.is_none() {
            return Err(bad(
                "expected at least one of `wasm` and `native`, found neither".into(),
            ));
        }
        let resolve = |field: &str, rel: &Path| -> Result<PathBuf, WorkloadError> {
            if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(bad(format!(
                    "{field}: expected a relative path inside the bundle, found {:?}",
                    rel.display().to_string()
                )));
            }
            Ok(dir.join(rel))
        };
        let variant = |name: &str,
                       rel: &Option<PathBuf>,
                       want: Backend|
         -> Result<Option<Artifact>, WorkloadError> {
            let Some(rel) = rel else { return Ok(None) };
            let path = resolve(name, rel)?;
            let a = Artifact::detect(&path).map_err(|e| WorkloadError::Variant {
                bundle: dir.display().to_string(),
                variant: name.to_string(),
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            if a.format.backend() != want {
                return Err(WorkloadError::Variant {
                    bundle: dir.display().to_string(),
                    variant: name.to_string(),
                    path: path.display().to_string(),
                    message: format!("expected a {want} artifact, found {}", a.format),
                });
            }
            Ok(Some(a))
        };
        let wasm = variant("wasm", &manifest.wasm, Backend::Wasm)?;
        let native = variant("native", &manifest.native, Backend::Native)?;
        let policy = manifest
            .policy
            .as_ref()
            .map(|p| resolve("policy", p))
            .transpose()?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
            wasm,
            native,
            policy,
        })
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
            sniff(b"\0asm\x02\0\0\0").unwrap_err(),
            "wasm binary with unsupported version/layer bytes 02000000"
        );
        assert_eq!(
            sniff(b"\0asm\x01").unwrap_err(),
            "truncated wasm header (5 bytes)"
        );
        assert_eq!(sniff(b"\0as").unwrap_err(), "truncated header (3 bytes)");
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
            .contains("not an absolute path"));
        assert!(sniff(b"#!/bin/sh").unwrap_err().contains("no end"));
    }
}
