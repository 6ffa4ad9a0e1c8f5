//! `hybox run IMAGE` and `hybox explain POLICY IMAGE`: the image's config applied under the policy
//! and the flags (docs/images.md, "Config precedence"), on the backend its program is built for.
//!
//! The program (`Entrypoint[0]`, else `Cmd[0]`) is resolved inside the mounted root of the image
//! and sniffed by its bytes, like any workload: an ELF runs on the native backend with the merged
//! tree as its root (`policy::Rootfs::Image`); a wasm module or component on the wasm backend,
//! which gets the merged tree as a read-only preopen at `/` (as an OCI bundle's rootfs is given to
//! a wasm guest) and, unless the root is read-only, a directory on the writable layer's tmpfs as
//! its `/tmp`, so what the guest writes is ephemeral and bounded by `filesystem.writable_layer`.

use std::path::{Path, PathBuf};

use super::image::{display_name, fail, open_store, resolve};
use super::{ExplainArgs, OverrideArgs, RunArgs};
use crate::image::{ImageConfig, ImageRecord, ImageRef, RunRoot, User};
use crate::policy::{Access, Backend, Mount, Policy, Rootfs};
use crate::workload::{Artifact, Workload};
use crate::{exit, HostConfig, RunOptions, Sandbox, Stdio};

/// What a run (or an explanation) of an image takes from the command line.
struct Spec<'a> {
    policy: Option<&'a Path>,
    args: &'a [String],
    workdir: Option<&'a Path>,
    user: Option<&'a str>,
    overrides: &'a OverrideArgs,
}

/// A sandbox for one run of an image, with what the report and `explain` say about it.
struct Prepared {
    sandbox: Sandbox,
    argv: Vec<String>,
    /// The program as the container sees it (`/bin/hello`).
    guest_program: PathBuf,
    /// Why this backend: the program's format, found by its bytes.
    why: String,
}

/// The program, `(host, guest)`: a path (relative to the workdir) or a name searched in PATH.
fn find_program(
    root: &RunRoot,
    program: &str,
    workdir: &Path,
    path_var: &str,
) -> Option<(PathBuf, PathBuf)> {
    let is_file = |p: &Path| root.resolve(p).ok().filter(|(h, _)| h.is_file());
    if program.contains('/') {
        return is_file(&workdir.join(program));
    }
    path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .find_map(|d| is_file(&Path::new(d).join(program)))
}

/// `uid` (and `gid`) of a user as the image or `--user` names it.
fn lookup_user(root: &RunRoot, user: &str) -> Result<(u32, Option<u32>), String> {
    let read = |file: &str| {
        root.resolve(Path::new(file))
            .and_then(|(host, _)| std::fs::read_to_string(host))
            .unwrap_or_default()
    };
    let find = |text: &str, name: &str| {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[0] == name).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
    };
    match User::parse(user) {
        User::Id { uid, gid } => Ok((uid, gid)),
        User::Name { user: name, group } => {
            let (uid, gid) = match name.parse::<u32>() {
                Ok(uid) => (Some(uid), None),
                Err(_) => find(&read("/etc/passwd"), &name)
                    .ok_or_else(|| format!("user {name:?} is not in the image's /etc/passwd"))?,
            };
            let gid = match group {
                None => gid,
                Some(g) => match g.parse::<u32>() {
                    Ok(gid) => Some(gid),
                    Err(_) => find(&read("/etc/group"), &g)
                        .and_then(|(gid, _)| gid)
                        .map(Some)
                        .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
                },
            };
            Ok((uid.ok_or_else(|| format!("bad uid for {name:?}"))?, gid))
        }
    }
}

/// Whether the policy file itself sets a field (a JSON pointer): the image's config gives way
/// only to what the policy says, not to the policy's defaults.
fn policy_sets(path: Option<&Path>, pointer: &str) -> bool {
    path.and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.pointer(pointer).is_some())
}

/// The store's record of `image` and its root, mounted for one run.
fn mount(image: &ImageRef, policy: Option<&Path>) -> Result<(ImageRecord, Policy, RunRoot), i32> {
    let store = open_store().map_err(|e| fail(&e, exit::RUNNER_FAILED))?;
    let record = resolve(&store, image).map_err(|e| fail(&e, exit::USAGE))?;
    let policy = match policy {
        Some(p) => Policy::from_file(p).map_err(|e| fail(&e, exit::USAGE))?,
        None => Policy::default(),
    };
    let writable = writable_bytes(&policy);
    let root =
        RunRoot::mount(&store, &record, writable).map_err(|e| fail(&e, exit::RUNNER_FAILED))?;
    Ok((record, policy, root))
}

fn writable_bytes(policy: &Policy) -> Option<u64> {
    policy
        .filesystem
        .writable_layer
        .as_ref()
        .map(|t| t.size.bytes())
}

fn unmount(root: RunRoot, name: &str) {
    if let Err(e) = root.unmount() {
        eprintln!("hybox: warning: the root of image {name} was not fully removed: {e} (hybox image prune retries)");
    }
}

/// `hybox run IMAGE`.
pub fn run(args: RunArgs, image: ImageRef) -> i32 {
    let (record, mut policy, root) = match mount(&image, args.policy.as_deref()) {
        Ok(m) => m,
        Err(status) => return status,
    };
    let name = display_name(&record);
    let spec = Spec {
        policy: args.policy.as_deref(),
        args: &args.args,
        workdir: args.workdir.as_deref(),
        user: args.user.as_deref(),
        overrides: &args.overrides,
    };
    let status = match prepare(&spec, &record, &name, &mut policy, &root) {
        Ok(p) => run_prepared(&args, &record, &name, &root, p),
        Err(status) => status,
    };
    unmount(root, &name);
    status
}

/// `hybox explain POLICY IMAGE`: the decision for the image's program, with the image's config
/// applied as a run would apply it (the root is mounted to find the program, then removed).
pub fn explain(args: ExplainArgs, image: ImageRef) -> i32 {
    let (record, mut policy, root) = match mount(&image, Some(&args.policy)) {
        Ok(m) => m,
        Err(status) => return status,
    };
    let name = display_name(&record);
    let spec = Spec {
        policy: Some(&args.policy),
        args: &[],
        workdir: None,
        user: None,
        overrides: &args.overrides,
    };
    let status = match prepare(&spec, &record, &name, &mut policy, &root) {
        Ok(p) => {
            let mut e = crate::explain::explain(&p.sandbox);
            e.artifact = format!("image {name}: {}", p.guest_program.display());
            e.reasons.insert(0, p.why);
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&e).expect("explanation serialises")
                );
            } else {
                print!("{}", e.render());
            }
            0
        }
        Err(status) => status,
    };
    unmount(root, &name);
    status
}

/// The image's config under the policy and the flags, the program found in the root, and the
/// sandbox on the backend the program is for.
fn prepare(
    spec: &Spec,
    record: &ImageRecord,
    name: &str,
    policy: &mut Policy,
    root: &RunRoot,
) -> Result<Prepared, i32> {
    let writable = writable_bytes(policy);
    let config: &ImageConfig = &record.config;
    let ppath = spec.policy;
    // Precedence, lowest first: the image's config, the policy file, the flags.
    let cmd_args = if spec.args.is_empty() && policy_sets(ppath, "/args") {
        policy.args.clone()
    } else {
        spec.args.to_vec()
    };
    let argv = config.command(&cmd_args);
    let Some(program) = argv.first() else {
        eprintln!("hybox: error: image {name} has no Entrypoint or Cmd: give the command after --");
        return Err(exit::USAGE);
    };
    let workdir = match (
        spec.workdir,
        policy_sets(ppath, "/filesystem/workdir"),
        &config.working_dir,
    ) {
        (Some(w), _, _) => w.to_path_buf(),
        (None, true, _) => policy.filesystem.workdir.clone(),
        (None, false, Some(w)) => PathBuf::from(w),
        (None, false, None) => policy.filesystem.workdir.clone(),
    };
    policy.filesystem.workdir = workdir.clone();
    let user = match (spec.user, policy_sets(ppath, "/native/uid"), &config.user) {
        (Some(u), _, _) => Some(u.to_string()),
        (None, false, Some(u)) => Some(u.clone()),
        _ => None,
    };
    if let Some(u) = &user {
        match lookup_user(root, u) {
            Ok((uid, gid)) => {
                policy.native.uid = uid;
                policy.native.gid = gid.unwrap_or(uid);
            }
            Err(why) => {
                eprintln!("hybox: error: image {name}: --user/User {u:?}: {why}");
                return Err(exit::USAGE);
            }
        }
    }
    for (k, v) in &config.env {
        policy.env.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let path_var = policy
        .env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| config.path());
    let Some((host_program, guest_program)) = find_program(root, program, &workdir, &path_var)
    else {
        eprintln!(
            "hybox: error: image {name}: {program:?} is not a file in the image (PATH {path_var})"
        );
        return Err(exit::NOT_FOUND);
    };
    // Which backend: what the program is, by its bytes (an ELF, a wasm module or component).
    let format = match Artifact::detect(&host_program) {
        Ok(a) => a.format,
        Err(e) => return Err(fail(&e, e.exit_status())),
    };
    let backend = format.backend();
    let why = format!(
        "image {name}: its program {} is, by its bytes, {format}: the image runs on the {backend} backend",
        guest_program.display()
    );
    if backend == Backend::Native {
        let overlay = match root.sandbox_overlay() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("hybox: error: image {name}: read its layers' top-level entries: {e}");
                return Err(exit::RUNNER_FAILED);
            }
        };
        policy.native.rootfs = Rootfs::Image {
            dir: root.dir().to_path_buf(),
            writable: writable.is_some(),
            overlay,
        };
    }
    if backend == Backend::Wasm && root.in_sandbox() {
        // The wasm backend has no mount namespace of its own to mount the overlay in, and without
        // root there is no merged tree on the host to preopen.
        eprintln!(
            "hybox: error: image {name}: {why}; a wasm image runs only as root in this version (its merged root is mounted on the host; docs/images.md, \"Unprivileged runs\")"
        );
        return Err(exit::RUNNER_FAILED);
    }
    let o = spec.overrides.to_overrides();
    let mut policy = match policy.with_overrides(&o) {
        Ok(p) => p,
        Err(e) => return Err(fail(&e, exit::USAGE)),
    };
    if backend == Backend::Wasm {
        // After the policy's own checks, which refuse mounts at `/` and `/tmp` in a policy file:
        // here they are the image's root and its writable layer, which hybox builds itself.
        policy.filesystem.mounts.insert(
            0,
            Mount {
                host: root.dir().to_path_buf(),
                guest: "/".into(),
                mode: Access::Ro,
            },
        );
        if writable.is_some() {
            let tmp = match root.scratch_dir() {
                Ok(t) => t,
                Err(e) => return Err(fail(&e, exit::RUNNER_FAILED)),
            };
            policy.filesystem.tmp = None;
            policy.filesystem.mounts.push(Mount {
                host: tmp,
                guest: "/tmp".into(),
                mode: Access::Rw,
            });
        }
    }
    let workload = match Workload::detect(&host_program) {
        Ok(w) => w,
        Err(e) => return Err(fail(&e, e.exit_status())),
    };
    let sandbox = match Sandbox::new(workload, policy, Some(backend)) {
        Ok(s) => s,
        Err(e) => return Err(fail(&e, e.exit_status())),
    };
    Ok(Prepared {
        sandbox,
        argv,
        guest_program,
        why,
    })
}

fn run_prepared(
    args: &RunArgs,
    record: &ImageRecord,
    name: &str,
    root: &RunRoot,
    p: Prepared,
) -> i32 {
    let opts = RunOptions {
        args: p.argv[1..].to_vec(),
        stdio: Stdio::Inherit,
        host: HostConfig::default(),
        run_id: None,
        detach_teardown: false,
        ..RunOptions::default()
    };
    let result = match p.sandbox.run(&opts) {
        Ok(r) => r,
        Err(e) => return fail(&e, e.exit_status()),
    };
    let policy = p.sandbox.policy();
    let report = &result.report;
    let mut json = serde_json::to_value(report).expect("report serialises");
    let layers = record.layers.len();
    json["image"] = serde_json::json!({
        "name": name,
        "id": record.id,
        "program": p.guest_program,
        "argv": p.argv,
        "env": policy.workload_env(),
        "workdir": policy.filesystem.workdir,
        "uid": policy.native.uid,
        "gid": policy.native.gid,
        "writable_layer": root.writable_usage(),
        "root": match writable_bytes(policy) {
            Some(b) => format!("overlay of {layers} layers, ephemeral writable layer of {b} bytes"),
            None => format!("overlay of {layers} layers, read-only"),
        },
    });
    let text = serde_json::to_string_pretty(&json).expect("report serialises");
    if let Some(path) = &args.report {
        if let Err(e) = std::fs::write(path, format!("{text}\n")) {
            eprintln!("hybox: error: cannot write report {}: {e}", path.display());
            return exit::RUNNER_FAILED;
        }
    }
    if args.json {
        println!("{text}");
    }
    eprintln!("{}", report.summary());
    if let Some(w) = root.writable_usage().filter(|w| w.full) {
        eprintln!(
            "hybox: image {name}: the writable layer is full ({} bytes, filesystem.writable_layer.size): writes beyond it failed with ENOSPC",
            w.size_bytes
        );
    }
    report.exit_status
}
