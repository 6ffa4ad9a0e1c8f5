//! `hybox image ...` and `hybox run IMAGE`: the image store's commands, and a run of an image on
//! the native backend with the image's config applied under the policy and the flags
//! (docs/images.md, "Config precedence").

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::{ImageCommand, RunArgs};
use crate::image::{ImageConfig, ImageRecord, ImageRef, RunRoot, Selector, Store, User};
use crate::policy::{Backend, Policy, Rootfs};
use crate::workload::Workload;
use crate::{exit, HostConfig, RunOptions, Sandbox, Stdio};

/// The store: `HYBOX_STORE` if set, else [`Store::default_root`].
pub fn open_store() -> Result<Store, crate::image::StoreError> {
    let root = std::env::var_os("HYBOX_STORE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(Store::default_root);
    Store::open(&root)
}

fn fail(e: &dyn std::error::Error, status: i32) -> i32 {
    eprintln!("hybox: error: {}", crate::error_chain(e));
    status
}

/// Whether `hybox run ARTIFACT` names an image: a layout directory, an archive (a tar), a path
/// with `:tag` or `@digest`, or a stored image's name.
pub fn as_image(artifact: &Path) -> Option<ImageRef> {
    let s = artifact.to_str()?;
    let r = ImageRef::parse(s).ok()?;
    match &r {
        ImageRef::Path { path, selector } => {
            let image = if path.is_dir() {
                path.join("index.json").is_file()
            } else {
                is_tar(path)
            };
            (image || *selector != Selector::Only).then_some(r)
        }
        ImageRef::Stored(name) => {
            let store = open_store().ok()?;
            store.find(name).ok().map(|_| r)
        }
    }
}

/// A POSIX tar has `ustar` at offset 257 of its first header.
fn is_tar(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 263];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[257..262] == b"ustar"
}

/// The stored image a reference names, importing a path first (layers already stored are reused).
fn resolve(store: &Store, r: &ImageRef) -> Result<ImageRecord, crate::image::StoreError> {
    match r {
        ImageRef::Path { path, selector } => store.import(path, selector).map(|(rec, _)| rec),
        ImageRef::Stored(name) => store.find(name),
    }
}

fn display_name(r: &ImageRecord) -> String {
    r.names
        .first()
        .cloned()
        .unwrap_or_else(|| r.id.short().to_string())
}

pub fn command(cmd: ImageCommand) -> i32 {
    let store = match open_store() {
        Ok(s) => s,
        Err(e) => return fail(&e, exit::RUNNER_FAILED),
    };
    match cmd {
        ImageCommand::Import { images } => {
            for i in images {
                let r = match ImageRef::parse(&i) {
                    Ok(ImageRef::Path { path, selector }) => (path, selector),
                    Ok(ImageRef::Stored(_)) => {
                        eprintln!("hybox: error: {i}: no such file or directory");
                        return exit::USAGE;
                    }
                    Err(e) => return fail(&e, exit::USAGE),
                };
                match store.import(&r.0, &r.1) {
                    Ok((rec, reused)) => {
                        let shared = reused.iter().filter(|r| **r).count();
                        println!(
                            "{} {} ({} layers, {} already in the store)",
                            rec.id.short(),
                            display_name(&rec),
                            rec.layers.len(),
                            shared
                        );
                    }
                    Err(e) => return fail(&e, exit::RUNNER_FAILED),
                }
            }
            0
        }
        ImageCommand::Ls { json } => match store.images() {
            Ok(all) if json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&all).expect("records serialise")
                );
                0
            }
            Ok(all) => {
                println!("{:<14} {:<40} {:>6} {:>12}", "ID", "NAME", "LAYERS", "SIZE");
                for r in all {
                    println!(
                        "{:<14} {:<40} {:>6} {:>12}",
                        r.id.short(),
                        r.names.join(","),
                        r.layers.len(),
                        r.size
                    );
                }
                0
            }
            Err(e) => fail(&e, exit::RUNNER_FAILED),
        },
        ImageCommand::Inspect { image } => {
            let r = match ImageRef::parse(&image) {
                Ok(r) => r,
                Err(e) => return fail(&e, exit::USAGE),
            };
            let rec = match resolve(&store, &r) {
                Ok(rec) => rec,
                Err(e) => return fail(&e, exit::USAGE),
            };
            let mut layers = Vec::new();
            for l in &rec.layers {
                match store.layer(l) {
                    Ok(Some(lr)) => layers.push(serde_json::to_value(lr).expect("serialises")),
                    Ok(None) => layers.push(serde_json::json!({"diff_id": l, "missing": true})),
                    Err(e) => return fail(&e, exit::RUNNER_FAILED),
                }
            }
            let mut v = serde_json::to_value(&rec).expect("serialises");
            v["layers"] = serde_json::Value::Array(layers);
            println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
            0
        }
        ImageCommand::Rm { images } => {
            for i in images {
                match store.remove(&i) {
                    Ok(r) => println!("removed {} {}", r.id.short(), display_name(&r)),
                    Err(e) => return fail(&e, exit::USAGE),
                }
            }
            0
        }
        ImageCommand::Prune => match store.prune() {
            Ok(r) => {
                println!(
                    "removed {} unused layers, {} abandoned imports, {} dead runs' roots",
                    r.layers.len(),
                    r.tmp,
                    r.runs.len()
                );
                0
            }
            Err(e) => fail(&e, exit::RUNNER_FAILED),
        },
    }
}

/// A path inside the image root, resolved as the container would (`RESOLVE_IN_ROOT`: `..` and
/// absolute symlinks stay in the root), given back as the host path of what it names.
fn resolve_in_root(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let dir = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(&dir, path, how)?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if !real.starts_with(root) {
        return Err(std::io::Error::other(format!(
            "{} resolves outside the image root",
            path.display()
        )));
    }
    Ok(real)
}

/// The host path of the program: a path (relative to the workdir) or a name searched in PATH.
fn find_program(root: &Path, program: &str, workdir: &Path, path_var: &str) -> Option<PathBuf> {
    let is_file = |p: &Path| resolve_in_root(root, p).ok().filter(|h| h.is_file());
    if program.contains('/') {
        return is_file(&workdir.join(program));
    }
    path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .find_map(|d| is_file(&Path::new(d).join(program)))
}

/// `uid` (and `gid`) of a user as the image or `--user` names it.
fn lookup_user(root: &Path, user: &str) -> Result<(u32, Option<u32>), String> {
    let read = |file: &str| {
        resolve_in_root(root, Path::new(file))
            .and_then(std::fs::read_to_string)
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

/// `hybox run IMAGE`.
pub fn run(args: RunArgs, image: ImageRef) -> i32 {
    let store = match open_store() {
        Ok(s) => s,
        Err(e) => return fail(&e, exit::RUNNER_FAILED),
    };
    let record = match resolve(&store, &image) {
        Ok(r) => r,
        Err(e) => return fail(&e, exit::USAGE),
    };
    let name = display_name(&record);
    let mut policy = match &args.policy {
        Some(p) => match Policy::from_file(p) {
            Ok(p) => p,
            Err(e) => return fail(&e, exit::USAGE),
        },
        None => Policy::default(),
    };
    let writable = policy
        .filesystem
        .writable_layer
        .as_ref()
        .map(|t| t.size.bytes());
    let root = match RunRoot::mount(&store, &record, writable) {
        Ok(r) => r,
        Err(e) => return fail(&e, exit::RUNNER_FAILED),
    };
    let status = run_in_root(&args, &record, &name, &mut policy, &root, writable);
    if let Err(e) = root.unmount() {
        eprintln!("hybox: warning: the root of image {name} was not fully removed: {e} (hybox image prune retries)");
    }
    status
}

fn run_in_root(
    args: &RunArgs,
    record: &ImageRecord,
    name: &str,
    policy: &mut Policy,
    root: &RunRoot,
    writable: Option<u64>,
) -> i32 {
    let config: &ImageConfig = &record.config;
    let ppath = args.policy.as_deref();
    // Precedence, lowest first: the image's config, the policy file, the flags.
    let cmd_args = if args.args.is_empty() && policy_sets(ppath, "/args") {
        policy.args.clone()
    } else {
        args.args.clone()
    };
    let argv = config.command(&cmd_args);
    let Some(program) = argv.first() else {
        eprintln!("hybox: error: image {name} has no Entrypoint or Cmd: give the command after --");
        return exit::USAGE;
    };
    let workdir = match (
        &args.workdir,
        policy_sets(ppath, "/filesystem/workdir"),
        &config.working_dir,
    ) {
        (Some(w), _, _) => w.clone(),
        (None, true, _) => policy.filesystem.workdir.clone(),
        (None, false, Some(w)) => PathBuf::from(w),
        (None, false, None) => policy.filesystem.workdir.clone(),
    };
    policy.filesystem.workdir = workdir.clone();
    let user = match (&args.user, policy_sets(ppath, "/native/uid"), &config.user) {
        (Some(u), _, _) => Some(u.clone()),
        (None, false, Some(u)) => Some(u.clone()),
        _ => None,
    };
    if let Some(u) = &user {
        match lookup_user(root.dir(), u) {
            Ok((uid, gid)) => {
                policy.native.uid = uid;
                policy.native.gid = gid.unwrap_or(uid);
            }
            Err(why) => {
                eprintln!("hybox: error: image {name}: --user/User {u:?}: {why}");
                return exit::USAGE;
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
    let Some(host_program) = find_program(root.dir(), program, &workdir, &path_var) else {
        eprintln!(
            "hybox: error: image {name}: {program:?} is not a file in the image (PATH {path_var})"
        );
        return exit::NOT_FOUND;
    };
    policy.native.rootfs = Rootfs::Image {
        dir: root.dir().to_path_buf(),
        writable: writable.is_some(),
    };
    let o = args.overrides.to_overrides();
    let policy = match policy.with_overrides(&o) {
        Ok(p) => p,
        Err(e) => return fail(&e, exit::USAGE),
    };
    let workload = match Workload::detect(&host_program) {
        Ok(w) => w,
        Err(e) => return fail(&e, e.exit_status()),
    };
    // This increment runs images on the native backend only (docs/images.md).
    let sandbox = match Sandbox::new(workload, policy.clone(), Some(Backend::Native)) {
        Ok(s) => s,
        Err(e) => return fail(&e, e.exit_status()),
    };
    let opts = RunOptions {
        args: argv[1..].to_vec(),
        stdio: Stdio::Inherit,
        host: HostConfig::default(),
        run_id: None,
        detach_teardown: false,
        ..RunOptions::default()
    };
    let result = match sandbox.run(&opts) {
        Ok(r) => r,
        Err(e) => return fail(&e, e.exit_status()),
    };
    let report = &result.report;
    let mut json = serde_json::to_value(report).expect("report serialises");
    let guest_program = host_program
        .strip_prefix(root.dir())
        .map(|p| Path::new("/").join(p))
        .unwrap_or_else(|_| PathBuf::from(program));
    json["image"] = serde_json::json!({
        "name": name,
        "id": record.id,
        "program": guest_program,
        "argv": argv,
        "env": policy.workload_env(),
        "workdir": policy.filesystem.workdir,
        "uid": policy.native.uid,
        "gid": policy.native.gid,
        "root": match writable {
            Some(b) => format!("overlay of {} layers, ephemeral writable layer of {b} bytes", record.layers.len()),
            None => format!("overlay of {} layers, read-only", record.layers.len()),
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
    report.exit_status
}
