//! The command line, as clap definitions. Kept in the library so the man page and shell completions
//! are generated from the same definition (`hybox man`, `hybox completions SHELL`).

pub mod image;
mod image_run;
pub mod request;
pub mod signals;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::policy::{Access, Backend, Mount, Network, Overrides};
use crate::units::{Duration, Size};

/// Run untrusted code under one policy and one cgroup envelope, in wasmtime or Linux namespaces.
#[derive(Debug, Parser)]
#[command(name = "hybox", version, about, long_about = None, max_term_width = 100)]
#[command(
    after_help = "Exit status: the workload's own code passes through, 128+N for a signal; \
hybox itself uses 2 (usage/policy), 123 (pids limit), 124 (timeout), 125 (hybox failed), \
126 (cannot execute), 127 (not found), 134 (wasm trap), 137 (oom), 152 (cpu budget), 159 (seccomp). \
See docs/exit-codes.md."
)]
pub struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workload (wasm module/component, ELF, script or function bundle) under a policy.
    Run(RunArgs),
    /// Show which backend a workload would use under a policy, why, and the effective limits.
    Explain(ExplainArgs),
    /// Check or describe policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// What this host supports (cgroups, user namespaces, seccomp, Landlock) and what it means for hybox.
    Doctor {
        /// Machine-readable output.
        #[arg(long, conflicts_with = "fix")]
        json: bool,
        /// Change the host (root): `favordynmods` remounts the cgroup2 mount with the
        /// favordynmods option, its other options kept, so joining a cgroup no longer waits for an
        /// RCU grace period. Host-wide, and on Linux >= 6.18 irreversible until reboot.
        #[arg(long, value_enum, value_name = "WHAT")]
        fix: Option<Fix>,
        /// With --fix: print what would change, change nothing.
        #[arg(long, requires = "fix")]
        dry_run: bool,
    },
    /// Measure isolation overhead side by side: bare, native, wasm cold/warm/hardened, same limits.
    Bench(BenchArgs),
    /// Run the isolation conformance suite on this host: every escape and resource attack of the
    /// catalogue on each backend, with its negative control, and the cross-backend equivalence of the
    /// examples. Exit 0 only if every case passes. Needs root and the built examples.
    Conformance(ConformanceArgs),
    /// Serve every function bundle in a directory over HTTP (loopback by default), each call isolated.
    Serve(ServeArgs),
    /// Load-test a running `hybox serve` on loopback: throughput and latency percentiles.
    BenchServe(BenchServeArgs),
    /// Remove envelopes left behind by a hybox that was killed (owner process dead).
    Gc,
    /// The private compile cache of the wasm backend.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// The local image store (`hybox run IMAGE` runs one; docs/images.md).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List cached compiled guests (size, source hash, age).
    List,
    /// Remove every cached compiled guest.
    Clear,
}

/// The image store is `/var/lib/hybox` as root, `$XDG_DATA_HOME/hybox` otherwise; the
/// environment variable `HYBOX_STORE` names another.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import images: OCI layout directories, oci-archives or docker-archives (PATH[:TAG|@DIGEST]).
    Import {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// List the stored images.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show an image's config, layers and what unpacking them changed.
    Inspect {
        /// A name, tag or id prefix (or a path, which is imported first).
        image: String,
    },
    /// Remove images from the store (their layers go with `prune` unless another image uses them).
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove unused layers, abandoned imports and the roots of runs whose hybox died.
    Prune,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files; prints each error with file, line, column and JSON path.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the policy format.
    Schema,
}

/// Flags that override the policy; each is optional and merged at one point
/// ([`crate::policy::Policy::with_overrides`]).
#[derive(Debug, Args, Clone, Default)]
pub struct OverrideArgs {
    /// Memory limit for the run, e.g. 128M.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<Size>,
    /// CPU bandwidth in cores, e.g. 0.5.
    #[arg(long, value_name = "CORES")]
    pub cpus: Option<f64>,
    /// Maximum processes/threads.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Wall-clock limit, e.g. 10s or 500ms.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// An environment variable for the workload (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Grant a host path: HOST:GUEST, read-only unless :rw is appended (repeatable; `--volume` is
    /// the same, for images).
    #[arg(long = "mount", visible_alias = "volume", value_name = "HOST:GUEST[:ro|rw]", value_parser = parse_mount)]
    pub mounts: Vec<Mount>,
    /// Network access.
    #[arg(long, value_enum)]
    pub network: Option<NetworkArg>,
    /// Force a backend (refused if the policy does not allow it or the workload has no variant).
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NetworkArg {
    None,
    Loopback,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BackendArg {
    Wasm,
    Native,
}

impl OverrideArgs {
    pub fn to_overrides(&self) -> Overrides {
        Overrides {
            backend: self.backend.map(|b| match b {
                BackendArg::Wasm => Backend::Wasm,
                BackendArg::Native => Backend::Native,
            }),
            memory: self.memory,
            cpus: self.cpus,
            pids: self.pids,
            timeout: self.timeout,
            env: self.env.clone(),
            mounts: self.mounts.clone(),
            network: self.network.map(|n| match n {
                NetworkArg::None => Network::None,
                NetworkArg::Loopback => Network::Loopback,
            }),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Policy file. Default: the bundle's own policy, else the built-in deny-all policy.
    #[arg(long, short = 'p', value_name = "FILE")]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Print the run report as JSON on stdout (the workload's stdout still passes through first).
    #[arg(long)]
    pub json: bool,
    /// Write the run report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Working directory inside the sandbox (overrides the policy and an image's WorkingDir).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Images: the user to run as, UID[:GID] or a name of the image's /etc/passwd (overrides the
    /// policy and the image's User).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Serve exactly one HTTP request to a wasi:http/proxy component (no listener) and print
    /// the response: status line, headers, body.
    #[arg(long, num_args = 2, value_names = ["METHOD", "PATH"])]
    pub request: Vec<String>,
    /// With --request: a request header, NAME:VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE", requires = "request")]
    pub headers: Vec<String>,
    /// With --request: the request body, from FILE or `-` (stdin).
    #[arg(long, value_name = "FILE|-", requires = "request")]
    pub body: Option<PathBuf>,
    /// The workload: a file, a bundle directory, or an image (an OCI layout directory, an
    /// oci-archive or docker-archive, PATH:TAG, PATH@sha256:DIGEST, or a stored image's name).
    pub artifact: PathBuf,
    /// Arguments for the workload (after `--`). Default: the policy's `args`; for an image they
    /// replace its Cmd.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Policy for every sandboxed mode (default: policies/benchmark.json's limits, built in).
    #[arg(long, short = 'p', value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Measured runs per mode.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Unmeasured warm-up runs per mode.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Isolated runs: a pause before every run, as a user who runs one command and waits (a lone
    /// run pays what back to back hides, such as cgroup v1's RCU grace period on joining). `0`
    /// is the same as --back-to-back.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "200ms",
        conflicts_with = "back_to_back"
    )]
    pub pause: Duration,
    /// Run each sample as soon as the previous one ended (no pause): what a busy server sees.
    #[arg(long)]
    pub back_to_back: bool,
    /// Print the results as JSON (every sample included).
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print the results as a Markdown table.
    #[arg(long)]
    pub markdown: bool,
    /// Write an SVG chart of the per-phase breakdown to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Workloads: function bundles (both variants), or single native / wasm files.
    #[arg(required = true)]
    pub workloads: Vec<PathBuf>,
}

/// Host tunings `hybox doctor --fix` can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fix {
    /// The cgroup mount option that makes moving a process into a cgroup skip the RCU grace period.
    Favordynmods,
}

#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// The built example guests (`examples/build.sh` output, with native/ and wasm/ inside).
    #[arg(long, value_name = "DIR", default_value = "examples/out")]
    pub examples: PathBuf,
    /// Run only the cases whose name contains this.
    #[arg(long, value_name = "NAME")]
    pub case: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of function bundles (each a subdirectory with a bundle.json); a bad one is reported
    /// and skipped.
    #[arg(long, value_name = "DIR")]
    pub functions: PathBuf,
    /// Address to listen on (loopback by default; port 0 picks a free port, printed at start).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Calls of one function that run at once (wasm: warm workers, each in its own envelope).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub max_concurrency: usize,
    /// Calls of one function that may wait for a slot; beyond that, 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_queue: usize,
    /// Per-call wall-clock limit, overriding each bundle policy's timeout.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Native functions: sandboxes kept pre-built, each used for exactly one call (0: every call
    /// builds its own sandbox).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub native_pool: usize,
    /// Largest request body accepted.
    #[arg(long, value_name = "SIZE", default_value = "8M")]
    pub max_body: Size,
    /// Parent of the function envelopes (cgroup); default `hybox`.
    #[arg(long, value_name = "NAME", default_value = "hybox")]
    pub cgroup_parent: String,
}

#[derive(Debug, Args)]
pub struct BenchServeArgs {
    /// The server, on loopback.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub target: std::net::SocketAddr,
    /// Function to invoke.
    #[arg(long)]
    pub function: String,
    /// Calls to make (after the warm-up).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Connections sending calls at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Unmeasured calls first.
    #[arg(long, default_value_t = 50)]
    pub warmup: usize,
    /// Request body sent with every call.
    #[arg(long, default_value = "")]
    pub payload: String,
    /// POST to this path instead of `/v1/functions/FUNCTION/invoke` (a wasi:http function's
    /// route, or `/` of `wasmtime serve`); FUNCTION then only labels the result.
    #[arg(long)]
    pub path: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Policy file.
    pub policy: PathBuf,
    /// The workload: a file, a bundle directory or an image (docs/images.md).
    pub artifact: PathBuf,
}

/// A flag value clap could not take apart (clap prints it after the flag's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// `--env` without `=`, or with an empty name.
    #[error("expected K=V, found {0:?}")]
    Env(String),
    /// `--mount` not of the form HOST:GUEST[:ro|:rw].
    #[error("expected HOST:GUEST or HOST:GUEST:rw, found {0:?}")]
    Mount(String),
}

fn parse_env(s: &str) -> Result<(String, String), FlagError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(FlagError::Env(s.to_string())),
    }
}

fn parse_mount(s: &str) -> Result<Mount, FlagError> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, guest, mode) = match parts.as_slice() {
        [h, g] => (*h, *g, Access::Ro),
        [h, g, "ro"] => (*h, *g, Access::Ro),
        [h, g, "rw"] => (*h, *g, Access::Rw),
        _ => return Err(FlagError::Mount(s.to_string())),
    };
    if host.is_empty() || guest.is_empty() {
        return Err(FlagError::Mount(s.to_string()));
    }
    Ok(Mount {
        host: host.into(),
        guest: guest.into(),
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn mount_flag_parses() {
        let m = parse_mount("/a:/b:rw").unwrap();
        assert_eq!(m.mode, Access::Rw);
        assert_eq!(parse_mount("/a:/b").unwrap().mode, Access::Ro);
        assert!(parse_mount("/a").is_err());
        assert!(parse_mount("/a:/b:rx").is_err());
    }
}
