//! Workload detection: every format hybox accepts, and a garbage corpus it must refuse with a message
//! naming what it found. Detection sniffs bytes; extensions are never trusted.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;

use hybox::workload::{Format, Workload, WorkloadError};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn detect_err(path: &Path) -> String {
    Workload::detect(path)
        .map(|w| w.describe())
        .unwrap_err()
        .to_string()
}

/// A minimal ELF64 header (no program headers) for a given class/machine/type.
fn elf_header(class64: bool, machine: u16, e_type: u16, entry: u64) -> Vec<u8> {
    let mut h = vec![0x7f, b'E', b'L', b'F', if class64 { 2 } else { 1 }, 1, 1, 0];
    h.resize(16, 0);
    h.extend_from_slice(&e_type.to_le_bytes());
    h.extend_from_slice(&machine.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    if class64 {
        h.extend_from_slice(&entry.to_le_bytes()); // e_entry
        h.extend_from_slice(&0u64.to_le_bytes()); // e_phoff
        h.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        for v in [64u16, 56, 0, 64, 0, 0] {
            h.extend_from_slice(&v.to_le_bytes());
        }
    } else {
        h.extend_from_slice(&(entry as u32).to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        for v in [52u16, 32, 0, 40, 0, 0] {
            h.extend_from_slice(&v.to_le_bytes());
        }
    }
    h
}

#[test]
fn accepted_formats() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (common::wasm_guest("hello"), "wasm module"),
        (write(d, "c.bin", b"\0asm\x0d\0\x01\0"), "wasm component"),
        (
            write(
                d,
                "m.txt",
                b";; a module\n(module (func (export \"_start\")))",
            ),
            "wasm text (module)",
        ),
        (write(d, "c.wat", b"(component)"), "wasm text (component)"),
        (
            write(d, "a.cwasm", b"\0hyboxc1rest-of-artifact"),
            "hybox precompiled artifact",
        ),
        (common::native_guest("hello"), "ELF x86_64 static"),
        (
            write(d, "s", b"#!/bin/sh -eu\necho hi\n"),
            "script for /bin/sh -eu",
        ),
        // The extension lies: detection reads bytes.
        (
            write(d, "really-wasm.exe", b"\0asm\x01\0\0\0"),
            "wasm module",
        ),
    ];
    for (path, want) in cases {
        let w = Workload::detect(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(w.describe(), want, "{}", path.display());
    }
}

#[test]
fn dynamic_elf_names_its_interpreter() {
    let w = Workload::detect(Path::new("/bin/true")).unwrap();
    match w {
        Workload::Single(a) => match a.format {
            Format::Elf(e) => {
                assert!(!e.is_static);
                let interp = e.interpreter.unwrap();
                assert!(
                    interp.to_string_lossy().contains("ld-linux"),
                    "{}",
                    interp.display()
                );
            }
            f => panic!("detected {f}"),
        },
        _ => panic!("not a single file"),
    }
}

#[test]
fn garbage_corpus_is_refused_with_what_was_found() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut pe = b"MZ\x90\0".to_vec();
    pe.resize(128, 0);
    let cases: Vec<(std::path::PathBuf, String)> = vec![
        (write(d, "empty.wasm", b""), "empty file".into()),
        (
            write(d, "pe.exe", &pe),
            "a Windows PE executable (MZ header)".into(),
        ),
        (
            write(d, "macho", b"\xcf\xfa\xed\xfe\x07\0\0\x01"),
            "a Mach-O executable (macOS)".into(),
        ),
        (
            write(d, "fat", b"\xca\xfe\xba\xbe\0\0\0\x02"),
            "a Mach-O universal binary or a Java class file (CAFEBABE)".into(),
        ),
        (
            write(d, "z.wasm", b"PK\x03\x04\x14\0\0\0"),
            "a zip archive".into(),
        ),
        (
            write(d, "g.gz", b"\x1f\x8b\x08\0"),
            "gzip-compressed data".into(),
        ),
        (
            write(d, "trunc.wasm", b"\0asm\x01\0"),
            "truncated wasm header (6 bytes)".into(),
        ),
        (
            write(d, "trunc2", b"\x7fEL"),
            "truncated header (3 bytes)".into(),
        ),
        (
            write(d, "trunc.elf", b"\x7fELF\x02\x01\x01"),
            "truncated ELF header (7 bytes)".into(),
        ),
        (
            write(d, "v2.wasm", b"\0asm\x02\0\0\0"),
            "wasm binary with unsupported version/layer bytes 02000000".into(),
        ),
        (
            write(d, "text.txt", b"hello world\n"),
            "unknown format (first bytes: 68 65 6c 6c 6f 20 77 6f)".into(),
        ),
        (
            write(d, "rel.sh", b"#!sh\n"),
            "a #! script whose interpreter is not an absolute path (\"sh\")".into(),
        ),
        (
            write(d, "arm", &elf_header(true, 183, 2, 0x1000)),
            "an ELF for 64-bit AARCH64; this host runs 64-bit x86_64".into(),
        ),
        (
            write(d, "i386", &elf_header(false, 3, 2, 0x1000)),
            "an ELF for 32-bit 386; this host runs 64-bit x86_64".into(),
        ),
        (
            write(d, "obj.o", &elf_header(true, 62, 1, 0)),
            "an ELF that is not an executable (type REL)".into(),
        ),
        (
            write(d, "lib.so", &elf_header(true, 62, 3, 0)),
            "an ELF shared library without an entry point, not an executable".into(),
        ),
        (
            // An x86_64 executable whose one program header lies past the end of the file.
            write(d, "cut.elf", &{
                let mut h = elf_header(true, 62, 2, 0x1000);
                h[32..40].copy_from_slice(&4096u64.to_le_bytes()); // e_phoff
                h[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
                h
            }),
            "a malformed ELF file (reading 56 bytes at 4096: failed to fill whole buffer)".into(),
        ),
    ];
    for (path, found) in cases {
        let want = format!("{}: cannot run this artifact: {found}", path.display());
        assert_eq!(detect_err(&path), want);
    }
}

#[test]
fn missing_file_and_directory_without_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Workload::detect(&missing).unwrap_err();
    assert!(matches!(err, WorkloadError::NotFound { .. }));
    assert_eq!(err.exit_status(), hybox::exit::NOT_FOUND);
    assert_eq!(
        detect_err(dir.path()),
        format!("{}: cannot run this artifact: a directory without a bundle.json (not a function bundle)", dir.path().display())
    );
}

#[test]
fn bundles() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path();
    std::fs::copy(common::wasm_guest("hello"), b.join("hello.wasm")).unwrap();
    std::fs::copy(common::native_guest("hello"), b.join("hello")).unwrap();
    std::fs::write(b.join("policy.json"), r#"{"version": 1}"#).unwrap();
    let manifest = |m: &str| std::fs::write(b.join("bundle.json"), m).unwrap();

    manifest(
        r#"{"version": 1, "name": "hello", "wasm": "hello.wasm", "native": "hello", "policy": "policy.json", "needs": ["threads"]}"#,
    );
    let w = Workload::detect(b).unwrap();
    assert_eq!(
        w.describe(),
        "bundle `hello` (wasm: wasm module; native: ELF x86_64 static)"
    );
    assert_eq!(w.needs(), [hybox::workload::Need::Threads]);

    let shown = b.join("bundle.json").display().to_string();
    let bad: Vec<(&str, String)> = vec![
        (r#"{"version": 1, "name": "x"}"#, format!("{shown}: invalid bundle manifest: expected at least one of `wasm` and `native`, found neither")),
        (r#"{"version": 1, "name": "x", "wasm": "../hello.wasm"}"#, format!("{shown}: invalid bundle manifest: wasm: expected a relative path inside the bundle, found \"../hello.wasm\"")),
        (r#"{"version": 1, "name": "x", "native": "/bin/true"}"#, format!("{shown}: invalid bundle manifest: native: expected a relative path inside the bundle, found \"/bin/true\"")),
        (r#"{"version": 1, "name": "x y", "wasm": "hello.wasm"}"#, format!("{shown}: invalid bundle manifest: name: expected letters, digits, '-' or '_', found \"x y\"")),
        (r#"{"version": 1, "name": "x", "wasm": "hello.wasm", "extra": 1}"#, format!("{shown}: invalid bundle manifest: 1:57: extra: unknown field `extra`, expected one of `version`, `name`, `description`, `wasm`, `native`, `policy`, `needs`")),
        (r#"{"version": 1, "name": "x", "needs": ["gpu"], "wasm": "hello.wasm"}"#, format!("{shown}: invalid bundle manifest: 1:43: needs[0]: unknown variant `gpu`, expected one of `subprocesses`, `raw_sockets`, `threads`, `signals`, `sockets`")),
        (
            r#"{"version": 1, "name": "x", "wasm": "hello"}"#,
            format!("{}: variant `wasm` ({}): expected a wasm artifact, found ELF x86_64 static", b.display(), b.join("hello").display()),
        ),
        (
            r#"{"version": 1, "name": "x", "native": "missing"}"#,
            format!("{}: variant `native` ({}): {}: not found", b.display(), b.join("missing").display(), b.join("missing").display()),
        ),
    ];
    for (m, want) in bad {
        manifest(m);
        assert_eq!(detect_err(b), want, "{m}");
    }
}

#[test]
fn example_bundles_detect_with_both_variants_and_valid_policies() {
    common::examples_out(); // builds the variants into the bundle directories
    for name in ["hello", "echo", "compute", "alloc", "files", "env"] {
        let dir = common::repo().join("examples").join(name);
        let w = Workload::detect(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Workload::Bundle(b) = &w else {
            panic!("{name}: not a bundle")
        };
        assert!(
            b.wasm.is_some() && b.native.is_some(),
            "{name}: both variants"
        );
        let policy = hybox::policy::Policy::from_file(b.policy.as_ref().unwrap()).unwrap();
        let d = hybox::decide::decide(&w, &policy, None).unwrap();
        assert_eq!(
            d.backend,
            hybox::policy::Backend::Wasm,
            "{name}: untrusted bundles go to wasm"
        );
    }
}
