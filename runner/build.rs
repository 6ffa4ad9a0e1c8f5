//! Builds the shim that this binary carries: `hybox-shim` (the native sandbox's PID 1), statically
//! linked for `x86_64-unknown-linux-musl`, embedded by `backend::native::shim`.
//!
//! Why embedded and static: a static shim starts without the dynamic loader (about 0.4 ms less per
//! sandbox, on the cold-start path), and the runner executes it from a sealed memory file, so there is
//! no shim on disk that anyone could replace or write to (the CVE-2019-5736 pattern) and no "next to the
//! executable" lookup to go wrong. Cargo cannot build one package of a workspace for another target in
//! the same invocation, so this script runs a second `cargo build` for the shim alone, into its own
//! target directory (kept next to the outer one, so it is built once, not once per profile).
//!
//! Without the musl target (`rustup target add x86_64-unknown-linux-musl`; `scripts/setup` adds it)
//! the shim is built for the host target and linked dynamically, with a warning. `HYBOX_SHIM_TARGET`
//! picks the target explicitly.
//!
//! It also compiles the native sandbox's seccomp programs for the default allow-list (a policy
//! without `native.seccomp.allow` grants nor `native.nested`) with the runner's own compiler,
//! `src/backend/seccomp.rs`, included below: libseccomp's binary-tree compilation of the ~300-rule
//! list is about a millisecond of CPU, paid here once instead of by every one-shot run
//! (`backend::native::plan`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

// The runner's seccomp compiler itself, so the precompiled programs are what a run would compile.
#[path = "src/backend/seccomp.rs"]
#[allow(dead_code)]
mod seccomp;

const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

fn main() {
    for path in ["../shim/src", "../shim/Cargo.toml", "../Cargo.lock"] {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-changed=src/backend/seccomp.rs");
    println!("cargo:rerun-if-env-changed=HYBOX_SHIM_TARGET");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    precompile_seccomp(&out_dir);
    // The hybox binary is a ~45 MB position-independent executable with ~60,000 relative
    // relocations, which the loader (glibc's, or a static musl binary's own start code) applies at
    // every start (a one-shot run, and the wasm worker's exec). Packed (DT_RELR, binutils 2.38+,
    // glibc 2.36+, musl 1.2.4+) their table is a few KB instead of 1.4 MB read at each start.
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux")
        && (target_env == "gnu" || target_env == "musl")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // The static build links Debian's libseccomp.a (.cargo/config.toml), built for glibc: the one
    // glibc-only symbol it needs is defined in src/musl_compat.c. Passed as an object, not an
    // archive, so the linker keeps it wherever libseccomp.a comes in the link order.
    if target_env == "musl" {
        println!("cargo:rerun-if-changed=src/musl_compat.c");
        for object in cc::Build::new()
            .file("src/musl_compat.c")
            .compile_intermediates()
        {
            println!("cargo:rustc-link-arg={}", object.display());
        }
    }
    let host_target = env::var("TARGET").expect("cargo sets TARGET");

    let target = match env::var("HYBOX_SHIM_TARGET") {
        Ok(t) if !t.is_empty() => t,
        _ if host_target.starts_with("x86_64-") && target_installed(STATIC_TARGET) => {
            STATIC_TARGET.to_string()
        }
        _ => {
            println!(
                "cargo:warning=hybox-shim is built for {host_target} and linked dynamically: the {STATIC_TARGET} \
                 target is not installed (rustup target add {STATIC_TARGET}); a static shim starts ~0.4 ms faster"
            );
            host_target.clone()
        }
    };

    let shim_target_dir = shared_target_dir(&out_dir).join("hybox-shim");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "-p",
        "hybox-shim",
        "--bin",
        "hybox-shim",
    ])
    .arg("--target")
    .arg(&target)
    .arg("--target-dir")
    .arg(&shim_target_dir)
    .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
    // Symbols are of no use in a binary nobody sees on disk; stripped it is ~4x smaller.
    .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
    // The outer build's flags and wrappers (clippy's, a coverage run's) are for the runner.
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env_remove("RUSTFLAGS")
    .env_remove("RUSTC_WORKSPACE_WRAPPER")
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("CARGO_BUILD_TARGET");
    // Share the outer build's job slots instead of starting as many jobs again.
    if let Some(flags) = env::var_os("CARGO_MAKEFLAGS") {
        cmd.env("MAKEFLAGS", flags);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build hybox-shim: {e}"));
    assert!(
        status.success(),
        "building hybox-shim for {target} failed ({status}); see the errors above"
    );
    let built = shim_target_dir
        .join(&target)
        .join("release")
        .join("hybox-shim");
    let embedded = out_dir.join("hybox-shim");
    // An earlier build script put the shim's own target directory at this path when it found no
    // shared one: a stale OUT_DIR may still hold it.
    if embedded.is_dir() {
        let _ = std::fs::remove_dir_all(&embedded);
    }
    std::fs::copy(&built, &embedded)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), embedded.display()));
    println!("cargo:rustc-env=HYBOX_SHIM_ELF={}", embedded.display());
    println!("cargo:rustc-env=HYBOX_SHIM_TARGET={target}");
}

/// Writes `seccomp_default.rs`: `Some(programs)` (packed as `hybox_shim::plan::pack_filter` packs
/// them) for the default allow-list, or `None` where this script cannot compile them for the target
/// (libseccomp compiles for the arch it runs on, and the filters are x86_64's): the runner then
/// compiles them at run time as before.
fn precompile_seccomp(out_dir: &Path) {
    let native_x86_64 = cfg!(target_arch = "x86_64")
        && env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "x86_64");
    let text = if native_x86_64 {
        let programs = seccomp::compile(&[], false)
            .unwrap_or_else(|e| panic!("compiling the default seccomp programs: {e}"));
        let mut text = String::from("Some(&[\n");
        for program in &programs {
            text.push_str("    &[");
            for word in hybox_shim::plan::pack_filter(program) {
                text.push_str(&format!("{word:#x},"));
            }
            text.push_str("],\n");
        }
        text.push_str("])\n");
        text
    } else {
        "None\n".to_string()
    };
    let path = out_dir.join("seccomp_default.rs");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Whether rustup (or the toolchain) has the standard library for `target`.
fn target_installed(target: &str) -> bool {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target)
        .join("lib")
        .is_dir()
}

/// The outer build's target directory, so that every profile shares one shim build: the ancestor of
/// OUT_DIR holding cargo's `.rustc_info.json` or `CACHEDIR.TAG` (cargo writes the tag only when it
/// creates the directory itself: not when `scripts/setup` made `target/tools` first). A directory
/// of its own inside OUT_DIR when there is none (never OUT_DIR itself, where the copied shim goes).
fn shared_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|d| d.join(".rustc_info.json").is_file() || d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.join("shim-build"))
}
