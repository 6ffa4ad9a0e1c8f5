//! A bundle's `config.json` mapped onto a hybox [`Policy`] and the workload to run
//! (docs/oci.md has the field table).
//!
//! Every field is honoured, refused with its JSON path named, or knowingly ignored (listed in
//! [`Container::ignored`] and in docs/oci.md). Refusals are of two kinds: what hybox does not do
//! yet (extra devices, sysctls), and what the runtime policy does not allow
//! (a capability beyond the default set, a host namespace, a host path it grants no access to,
//! resources above its maximum). A refused bundle never runs with the request silently trimmed.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::backend::{JoinKind, NamespaceJoin};
use crate::oci::namespaces;
use crate::oci::runtime_policy::{check_capabilities, RuntimePolicy};
use crate::oci::OciError;
use crate::policy::{Access, Backend, Mount, Policy, Rootfs, Tmp};
use crate::units::Size;
use crate::workload::Artifact;

/// The annotation some shims and CRI setups use to ask for a wasm handler (crun, runwasi).
pub const HANDLER_ANNOTATION: &str = "run.oci.handler";
/// The image annotation of wasm images ("compat" and "compat-smart" variants).
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";

/// The `PATH` searched for a bare `process.args[0]` when `process.env` sets none (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How many symlinks resolving one path may follow (the kernel's limit, `ELOOP`).
const MAX_SYMLINKS: usize = 40;

/// A bundle, ready to run: the policy built from `config.json` and the runtime policy, and the
/// program `process.args[0]` names, found inside the rootfs and detected by its bytes.
#[derive(Debug, Clone)]
pub struct Container {
    /// The bundle directory (absolute).
    pub bundle: PathBuf,
    /// `root.path`, absolute.
    pub rootfs: PathBuf,
    pub policy: Policy,
    /// `process.args[0]` resolved inside the rootfs: a host path inside [`Container::rootfs`].
    pub program: PathBuf,
    /// The name the workload sees as its `argv[0]`: the last component of `process.args[0]`
    /// (busybox's applets dispatch on it).
    pub argv0: String,
    /// What the program is (ELF or wasm), from its bytes.
    pub artifact: Artifact,
    pub annotations: BTreeMap<String, String>,
    /// `linux.cgroupsPath`, as given (recorded; see docs/oci.md for where the envelope is).
    pub cgroups_path: Option<String>,
    /// `process.terminal`: the container's stdio is a pty whose master goes to the console socket.
    pub terminal: bool,
    /// The namespaces joined by path (`linux.namespaces[].path`, a pod's; see [`namespaces`]).
    pub joins: Vec<NamespaceJoin>,
    /// Fields present in `config.json` that hybox accepts without applying them, with why.
    pub ignored: Vec<String>,
}

impl Container {
    /// The backend the program's format runs on.
    pub fn backend(&self) -> Backend {
        self.artifact.format.backend()
    }
}

/// Reads `bundle/config.json` and maps it (see the module docs).
pub fn load(bundle: &Path, runtime: &RuntimePolicy) -> Result<Container, OciError> {
    let bundle = std::fs::canonicalize(bundle)
        .map_err(OciError::io(format!("bundle {}", bundle.display())))?;
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| OciError::ConfigRead {
        path: path.clone(),
        source,
    })?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let spec: Spec =
        serde_path_to_error::deserialize(&mut de).map_err(|e| OciError::ConfigParse {
            path: path.clone(),
            field: match e.path().to_string() {
                p if p == "." || p.is_empty() => "(root)".into(),
                p => p,
            },
            message: e.inner().to_string(),
        })?;
    map(&bundle, &spec, runtime)
}

/// Maps a parsed spec (see the module docs); `bundle` is absolute.
pub fn map(bundle: &Path, spec: &Spec, runtime: &RuntimePolicy) -> Result<Container, OciError> {
    let mut ignored = Vec::new();
    if !spec.version().starts_with("1.") {
        return Err(OciError::refused(
            "ociVersion",
            format!(
                "expected a 1.x runtime spec version, found {:?}",
                spec.version()
            ),
        ));
    }
    let mut policy = runtime.policy.clone();
    // The runtime policy's grants cap binds; they are not mounts of the container.
    policy.filesystem.mounts.clear();
    policy.description = None;

    // root
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| OciError::refused("root", "expected the container's root filesystem"))?;
    let rootfs = std::fs::canonicalize(bundle.join(root.path())).map_err(|e| {
        OciError::refused(
            "root.path",
            format!("{}: {e}", bundle.join(root.path()).display()),
        )
    })?;
    if !rootfs.is_dir() {
        return Err(OciError::refused(
            "root.path",
            format!("{} is not a directory", rootfs.display()),
        ));
    }
    if root.readonly() != Some(true) {
        ignored
            .push("root.readonly=false: the rootfs is always read-only; /tmp is writable".into());
    }

    // hooks run host programs as root around the container: never. One is not run but accepted:
    // Docker's `libnetwork-setkey` prestart hook, which only tells dockerd the container's network
    // namespace so that it can configure its networks; the container keeps hybox's own network
    // namespace with no interface (what `docker run --network none` asks for), so there is nothing
    // to configure, and not running a host program takes nothing from the isolation.
    if let Some(h) = spec.hooks() {
        let all = [
            ("prestart", h.prestart()),
            ("createRuntime", h.create_runtime()),
            ("createContainer", h.create_container()),
            ("startContainer", h.start_container()),
            ("poststart", h.poststart()),
            ("poststop", h.poststop()),
        ];
        let hooks = all
            .iter()
            .flat_map(|(kind, v)| v.iter().flatten().map(move |hook| (*kind, hook)));
        for (kind, hook) in hooks {
            if kind == "prestart" && is_docker_network_hook(hook) {
                ignored.push(format!(
                    "hooks: Docker's network hook ({} libnetwork-setkey) is not run (the container's \
                     network namespace has no interface: --network none)",
                    hook.path().display()
                ));
                continue;
            }
            return Err(OciError::refused(
                "hooks",
                format!(
                    "hooks run host programs outside the sandbox; hybox-runc does not run them \
                     ({kind}: {})",
                    hook.path().display()
                ),
            ));
        }
    }

    // process
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| OciError::refused("process", "expected the container's process"))?;
    // A terminal: the monitor makes a pty and sends its master over `create`'s console socket.
    let terminal = process.terminal() == Some(true);
    let args = process
        .args()
        .as_ref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| OciError::refused("process.args", "expected at least the program to run"))?;
    let cwd = process.cwd();
    if !cwd.is_absolute() || cwd.components().any(|c| c == Component::ParentDir) {
        return Err(OciError::refused(
            "process.cwd",
            format!("expected an absolute path without '..', found {cwd:?}"),
        ));
    }
    policy.filesystem.workdir = cwd.clone();
    let mut env = BTreeMap::new();
    for (i, kv) in process.env().iter().flatten().enumerate() {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            OciError::refused(
                format!("process.env[{i}]"),
                format!("expected NAME=VALUE, found {kv:?}"),
            )
        })?;
        if k.is_empty() || k.contains('\0') || v.contains('\0') {
            return Err(OciError::refused(
                format!("process.env[{i}]"),
                "expected a non-empty name and no NUL bytes",
            ));
        }
        env.insert(k.to_string(), v.to_string());
    }
    let path_var = env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| DEFAULT_PATH.into());
    policy.env = env;
    policy.inherit_env.clear();
    policy.args = args[1..].to_vec();
    let user = process.user();
    policy.native.uid = user.uid();
    policy.native.gid = user.gid();
    if user
        .additional_gids()
        .as_ref()
        .is_some_and(|g| g.iter().any(|&g| g != user.gid()))
    {
        ignored.push(
            "process.user.additionalGids: the sandbox's user namespace maps one group".into(),
        );
    }
    if let Some(caps) = process.capabilities() {
        check_capabilities(caps).map_err(|(field, message)| OciError::refused(field, message))?;
    }
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        let name = serde_json::to_value(r.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if name == "RLIMIT_NOFILE" {
            if !(16..=1 << 20).contains(&r.soft()) {
                return Err(OciError::refused(
                    format!("process.rlimits[{i}].soft"),
                    format!("expected RLIMIT_NOFILE in 16..=1048576, found {}", r.soft()),
                ));
            }
            policy.native.rlimits.nofile = r.soft();
        } else {
            ignored.push(format!(
                "process.rlimits[{i}] ({name}): hybox sets its own limits"
            ));
        }
    }
    if process.oom_score_adj().is_some_and(|a| a != 0) {
        ignored.push("process.oomScoreAdj: not applied yet".into());
    }
    if let Some(h) = spec.hostname().as_ref().filter(|h| !h.is_empty()) {
        if !hostname_ok(h) {
            return Err(OciError::refused(
                "hostname",
                format!("expected letters, digits, '-' and '.', at most 64, found {h:?}"),
            ));
        }
        policy.native.hostname = h.clone();
    }

    // linux
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| OciError::refused("linux", "expected the Linux section (namespaces)"))?;
    let asked = namespaces::read(linux)?;
    for need in ["pid", "mount", "ipc", "uts", "network"] {
        if !asked.kinds.contains(need) {
            return Err(OciError::refused(
                "linux.namespaces",
                format!(
                    "no \"{need}\" namespace requested: the container would share the host's, which the runtime policy does not allow"
                ),
            ));
        }
    }
    if !asked.kinds.contains("user") {
        ignored.push("linux.namespaces: no \"user\" namespace requested; hybox always adds its own (container root is not host root)".into());
    }
    if linux.uid_mappings().is_some() || linux.gid_mappings().is_some() {
        ignored.push(
            "linux.uidMappings/gidMappings: hybox maps the container's one uid and gid to an unprivileged host id".into(),
        );
    }
    if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(OciError::refused(
            "linux.devices",
            "extra device nodes are beyond the runtime policy (the container gets hybox's /dev)",
        ));
    }
    let mut sysctls: Vec<&String> = linux.sysctl().iter().flat_map(|s| s.keys()).collect();
    sysctls.sort();
    for key in sysctls {
        // Docker sets net.ipv4.ip_unprivileged_port_start and ping_group_range: in the
        // container's own network namespace, which hybox leaves without interfaces, they change
        // nothing. Any other sysctl would have to be written, which is not done yet.
        if key.starts_with("net.") {
            ignored.push(format!(
                "linux.sysctl.{key}: the container's network namespace has no interfaces"
            ));
        } else {
            return Err(OciError::refused(
                format!("linux.sysctl.{key}"),
                "setting sysctls is not supported yet",
            ));
        }
    }
    // Narrows hybox's own allow-list, which always applies (`oci::seccomp`).
    let profile = linux
        .seccomp()
        .as_ref()
        .map(|s| crate::oci::seccomp::map(s, &mut ignored))
        .transpose()?;
    if linux.masked_paths().is_some() || linux.readonly_paths().is_some() {
        ignored.push("linux.maskedPaths/readonlyPaths: hybox's /proc is read-only in the container's own pid namespace".into());
    }
    let max = runtime.policy.resources.clone();
    if let Some(r) = linux.resources() {
        if let Some(limit) = r
            .memory()
            .as_ref()
            .and_then(|m| m.limit())
            .filter(|&l| l > 0)
        {
            let limit = limit as u64;
            if limit < crate::policy::MIN_MEMORY.bytes() || limit > max.memory.bytes() {
                return Err(OciError::refused(
                    "linux.resources.memory.limit",
                    format!(
                        "{limit} bytes is outside what the runtime policy allows (4M..={})",
                        max.memory
                    ),
                ));
            }
            policy.resources.memory = Size(limit);
        }
        if r.memory().as_ref().and_then(|m| m.swap()).is_some() {
            ignored.push("linux.resources.memory.swap: hybox's envelope allows no swap".into());
        }
        if let Some(limit) = r.pids().as_ref().map(|p| p.limit()).filter(|&l| l > 0) {
            if limit as u64 > max.pids {
                return Err(OciError::refused(
                    "linux.resources.pids.limit",
                    format!(
                        "{limit} is above the runtime policy's maximum ({})",
                        max.pids
                    ),
                ));
            }
            policy.resources.pids = limit as u64;
        }
        if let Some(cpu) = r.cpu() {
            if let (Some(q), Some(p)) = (cpu.quota().filter(|&q| q > 0), cpu.period()) {
                let cpus = q as f64 / p.max(1) as f64;
                if !(0.001..=max.cpus).contains(&cpus) {
                    return Err(OciError::refused(
                        "linux.resources.cpu.quota",
                        format!(
                            "{q}/{p} is {cpus} cores, outside what the runtime policy allows (0.001..={})",
                            max.cpus
                        ),
                    ));
                }
                policy.resources.cpus = cpus;
            }
            if cpu.shares().is_some() || cpu.cpus().is_some() || cpu.mems().is_some() {
                ignored
                    .push("linux.resources.cpu.shares/cpus/mems: hybox sets a quota only".into());
            }
        }
        if let Some(b) = r.block_io() {
            crate::oci::blkio::map(b, &mut policy.resources.io, &mut ignored)?;
        }
        if r.devices().is_some() {
            ignored.push(
                "linux.resources.devices: the container's /dev holds hybox's device nodes only"
                    .into(),
            );
        }
    }
    let cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.display().to_string());

    // mounts
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let dest = m.destination();
        let options = m.options().clone().unwrap_or_default();
        let has = |o: &str| options.iter().any(|x| x == o);
        // Docker's binds say `"type": "bind"`, older bundles `"type": "none"` with a bind option.
        let typ = if has("bind") || has("rbind") {
            "bind"
        } else {
            m.typ().as_deref().unwrap_or("none")
        };
        let d = dest.to_string_lossy();
        let provided = matches!(
            (typ, d.as_ref()),
            ("proc", "/proc")
                | ("sysfs", "/sys")
                | ("tmpfs", "/dev")
                | ("devpts", "/dev/pts")
                | ("tmpfs", "/dev/shm")
                | ("mqueue", "/dev/mqueue")
                | ("cgroup", "/sys/fs/cgroup")
                | ("cgroup2", "/sys/fs/cgroup")
        );
        if provided {
            continue;
        }
        match typ {
            "tmpfs" if d == "/tmp" => {
                let size = options
                    .iter()
                    .find_map(|o| o.strip_prefix("size="))
                    .map(|s| parse_size(s).ok_or(s))
                    .transpose()
                    .map_err(|s| {
                        OciError::refused(
                            format!("mounts[{i}].options"),
                            format!("size={s}: expected a size like 65536k"),
                        )
                    })?;
                policy.filesystem.tmp = Some(Tmp {
                    size: size.map(Size).unwrap_or_else(|| {
                        policy
                            .filesystem
                            .tmp
                            .as_ref()
                            .map_or(Size::mib(64), |t| t.size)
                    }),
                });
            }
            "tmpfs" => policy.native.tmpfs.push(tmpfs_mount(i, dest, &options)?),
            "bind" => {
                let source = m.source().clone().unwrap_or_default();
                if !source.is_absolute() {
                    return Err(OciError::refused(
                        format!("mounts[{i}].source"),
                        format!("expected an absolute host path, found {source:?}"),
                    ));
                }
                check_destination(i, dest, "bind", false)?;
                // What containerd's CRI and kubelet bind under /dev into every container of a pod:
                // the pod's shared /dev/shm and the termination-message file. hybox's /dev holds its
                // own device nodes only (like the `tmpfs` /dev/shm above, skipped): leaving them out
                // loses POSIX shared memory between the pod's containers and the termination
                // message, and lets every pod run.
                if matches!(d.as_ref(), "/dev/shm" | "/dev/termination-log") {
                    ignored.push(format!(
                        "mounts[{i}] (bind at {d} from {}): not mounted, hybox builds /dev itself",
                        source.display()
                    ));
                    continue;
                }
                check_destination(i, dest, "bind", true)?;
                let rw = !has("ro");
                if !runtime.allows_bind(&source, rw) {
                    return Err(OciError::refused(
                        format!("mounts[{i}].source"),
                        format!(
                            "a {} bind of host path {} is beyond the runtime policy {} (no filesystem.mounts grant covers it)",
                            if rw { "writable" } else { "read-only" },
                            source.display(),
                            runtime.origin
                        ),
                    ));
                }
                policy.filesystem.mounts.push(Mount {
                    host: source,
                    guest: dest.clone(),
                    mode: if rw { Access::Rw } else { Access::Ro },
                });
            }
            other => {
                return Err(OciError::refused(
                    format!("mounts[{i}].type"),
                    format!("a {other:?} mount at {d} is not supported"),
                ))
            }
        }
    }

    // The program, found inside the rootfs and detected by its bytes.
    let program = find_program(&rootfs, &args[0], cwd, &path_var)?;
    let artifact = Artifact::detect(&program).map_err(OciError::Workload)?;
    let annotations: BTreeMap<String, String> = spec
        .annotations()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let wants_wasm = annotations
        .get(HANDLER_ANNOTATION)
        .is_some_and(|v| v == "wasm")
        .then_some(HANDLER_ANNOTATION)
        .or_else(|| {
            annotations
                .get(VARIANT_ANNOTATION)
                .is_some_and(|v| v == "compat" || v == "compat-smart")
                .then_some(VARIANT_ANNOTATION)
        });
    if let Some(a) = wants_wasm {
        if artifact.format.backend() != Backend::Wasm {
            return Err(OciError::refused(
                format!("annotations.{a}"),
                format!(
                    "asks for a wasm container, but process.args[0] ({}) is {}",
                    args[0], artifact.format
                ),
            ));
        }
    }
    match artifact.format.backend() {
        Backend::Native => policy.native.rootfs = Rootfs::Dir(rootfs.clone()),
        // The guest sees the image's files as a read-only preopen at `/` (and /tmp, writable).
        Backend::Wasm => {
            // A WASI guest has its scratch `/tmp` only (a preopen of a per-run directory).
            for t in std::mem::take(&mut policy.native.tmpfs) {
                ignored.push(format!(
                    "the tmpfs at {}: a wasm guest has /tmp only",
                    t.guest.display()
                ));
            }
            // WASI preopens are directories: a bind of a single file (Docker's /etc/hosts,
            // /etc/hostname, /etc/resolv.conf) cannot be one, and a wasm guest has no network
            // to use them for. It is left out, which grants less, never more.
            policy.filesystem.mounts.retain(|m| {
                let dir = m.host.is_dir();
                if !dir {
                    ignored.push(format!(
                        "the bind of file {} at {}: a wasm guest's preopens are directories",
                        m.host.display(),
                        m.guest.display()
                    ));
                }
                dir
            });
            policy.filesystem.mounts.insert(
                0,
                Mount {
                    host: rootfs.clone(),
                    guest: "/".into(),
                    mode: Access::Ro,
                },
            )
        }
    }
    let joins = namespaces::for_backend(
        &asked,
        artifact.format.backend(),
        policy.network,
        &mut ignored,
    )?;
    match (profile, artifact.format.backend()) {
        (Some(_), Backend::Wasm) => ignored.push(
            "linux.seccomp: a wasm guest makes no syscalls; the wasm worker's own filter applies"
                .into(),
        ),
        // A runtime policy's own profile is never replaced: that could widen it.
        (Some(_), _) if policy.native.seccomp.profile.is_some() => {
            return Err(OciError::refused(
                "linux.seccomp",
                "the runtime policy sets a seccomp profile of its own",
            ))
        }
        (Some(p), _) => policy.native.seccomp.profile = Some(p),
        (None, _) => {}
    }
    if joins.iter().any(|j| j.kind == JoinKind::Uts) && spec.hostname().is_some() {
        ignored.push("hostname: the joined uts namespace keeps the name its owner gave it".into());
    }
    policy
        .validate("config.json")
        .map_err(|e| OciError::refused("(mapped onto a hybox policy)", e.to_string()))?;
    let argv0 = Path::new(&args[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| args[0].clone());
    Ok(Container {
        bundle: bundle.to_path_buf(),
        rootfs,
        policy,
        program,
        argv0,
        artifact,
        annotations,
        cgroups_path,
        terminal,
        joins,
        ignored,
    })
}

fn hostname_ok(h: &str) -> bool {
    h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// `mounts[i].destination`: absolute without `..`, and (`reserved`) not under a tree hybox builds.
fn check_destination(i: usize, dest: &Path, what: &str, reserved: bool) -> Result<(), OciError> {
    let field = || format!("mounts[{i}].destination");
    if !dest.is_absolute() || dest.components().any(|c| c == Component::ParentDir) {
        return Err(OciError::refused(
            field(),
            format!("expected an absolute path without '..', found {dest:?}"),
        ));
    }
    let trees = ["/proc", "/dev", "/sys", "/tmp", "/.hybox"];
    match trees.iter().find(|r| dest.starts_with(r)) {
        Some(r) if reserved => Err(OciError::refused(
            field(),
            format!("a {what} under {r} is not supported (hybox builds {r} itself)"),
        )),
        _ => Ok(()),
    }
}

/// A tmpfs mount of the bundle other than `/tmp` (Docker's `--tmpfs /run`, an image's `/run`) as a
/// private tmpfs of the native sandbox: `size=` (default 64M, as hybox's `/tmp`), `mode=` (default
/// 1777), `noexec`; nosuid and nodev always; other options (`rw`, `nosuid`, `nodev`, `strictatime`)
/// change nothing, `ro` is refused (an empty read-only tmpfs is of no use and likely a mistake).
fn tmpfs_mount(
    i: usize,
    dest: &Path,
    options: &[String],
) -> Result<crate::policy::TmpfsMount, OciError> {
    let field = format!("mounts[{i}].options");
    check_destination(i, dest, "tmpfs", true)?;
    let mut t = crate::policy::TmpfsMount {
        guest: dest.to_path_buf(),
        size: Size::mib(64),
        mode: "1777".into(),
        noexec: false,
    };
    for o in options {
        if let Some(s) = o.strip_prefix("size=") {
            t.size = parse_size(s).map(Size).ok_or_else(|| {
                OciError::refused(&field, format!("size={s}: expected a size like 65536k"))
            })?;
        } else if let Some(m) = o.strip_prefix("mode=") {
            t.mode = m.to_string();
            if t.mode_bits().is_none() {
                return Err(OciError::refused(
                    &field,
                    format!("mode={m}: expected octal permission bits like 1777"),
                ));
            }
        } else if o == "noexec" {
            t.noexec = true;
        } else if o == "ro" {
            return Err(OciError::refused(
                &field,
                "a read-only tmpfs is not supported (it would always be empty)",
            ));
        }
    }
    Ok(t)
}

/// `65536k`, `64m`, `1g` or bytes (tmpfs's `size=`), in bytes.
fn parse_size(s: &str) -> Option<u64> {
    let (n, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    n.parse::<u64>().ok()?.checked_mul(mult)
}

/// `process.args[0]` as the container would find it: a path (absolute, or relative to `cwd`), or a
/// bare name searched in `path_var`; every symlink resolved inside `rootfs` (an absolute link is
/// relative to the container's root, `..` never leaves it).
pub fn find_program(
    rootfs: &Path,
    arg0: &str,
    cwd: &Path,
    path_var: &str,
) -> Result<PathBuf, OciError> {
    let not_found = |why: String| OciError::refused("process.args[0]", why);
    if arg0.contains('/') {
        let inside = cwd.join(arg0);
        let p = resolve_in_root(rootfs, &inside)
            .map_err(|e| not_found(format!("{arg0}: {e} in the rootfs {}", rootfs.display())))?;
        return if p.is_file() {
            Ok(p)
        } else {
            Err(not_found(format!("{arg0} is not a file in the rootfs")))
        };
    }
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        if let Ok(p) = resolve_in_root(rootfs, &Path::new(dir).join(arg0)) {
            use std::os::unix::fs::PermissionsExt;
            if p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            {
                return Ok(p);
            }
        }
    }
    Err(not_found(format!(
        "{arg0:?} not found in the rootfs's PATH ({path_var})"
    )))
}

/// The host path of `inside` (a path in the container) under `root`, following symlinks as the
/// container would see them: never above `root`.
pub fn resolve_in_root(root: &Path, inside: &Path) -> std::io::Result<PathBuf> {
    let mut todo: Vec<std::ffi::OsString> = inside
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut cur: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            cur.pop();
            continue;
        }
        if part == "." {
            continue;
        }
        cur.push(part);
        let host = cur.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let meta = std::fs::symlink_metadata(&host)?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = std::fs::read_link(&host)?;
            cur.pop();
            if target.is_absolute() {
                cur.clear();
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => todo.push(n.to_os_string()),
                    Component::ParentDir => todo.push("..".into()),
                    _ => {}
                }
            }
        }
    }
    Ok(cur.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;

/// Docker's prestart hook: dockerd's own binary with `args` `libnetwork-setkey -exec-root=... ID
/// CONTROLLER` (argv[0] is the subcommand), the only hook
/// [`load`] accepts, without running it.
fn is_docker_network_hook(h: &oci_spec::runtime::Hook) -> bool {
    h.args()
        .as_ref()
        .is_some_and(|a| a.first().map(String::as_str) == Some("libnetwork-setkey"))
}
