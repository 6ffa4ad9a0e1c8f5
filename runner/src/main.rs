//! The `hybox` command: a thin layer over the library (see `hybox::cli` for the flags).

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use hybox::cli::{
    BenchArgs, BenchServeArgs, CacheCommand, Cli, Command, ConformanceArgs, ExplainArgs,
    PolicyCommand, RunArgs, ServeArgs,
};
use hybox::host::WorkerStart;
use hybox::policy::Policy;
use hybox::workload::Workload;
use hybox::{exit, HostConfig, RunOptions, Sandbox, Stdio};

// The static (musl) build allocates with mimalloc: musl's own allocator made Cranelift compile a
// guest ~40% slower (docs/design.md, "The static build").
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Where this process's time went before `main` (the report's `phases.process_us`) and when
    // `main` began (`phases.cli_us` runs from here to the run), taken first: both keep growing.
    let t_main = std::time::Instant::now();
    // This executable dispatches the wasm worker below: wasm runs re-execute it by fd
    // (`/proc/self/exe`, opened now), whatever it is called and whatever replaces it on disk.
    hybox::backend::wasm::this_executable_runs_the_worker();
    // The wasm backend re-executes this binary as its worker process (inside the run's envelope);
    // that hidden entry point takes no flags, so it is dispatched before clap.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == hybox::backend::wasm::WORKER_SUBCOMMAND)
    {
        return ExitCode::from(hybox::backend::wasm::worker_main() as u8);
    }
    // Called as `hybox-runc` (a link to this binary, as containerd's BinaryName or Docker's runtime
    // path), or with HYBOX_RUNC=1: runc's command line, whose `run`/`list`/`spec` are not hybox's.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "hybox-runc")
        || std::env::var_os("HYBOX_RUNC").is_some_and(|v| v == "1")
    {
        return ExitCode::from(hybox::oci::cli::main(std::env::args_os()) as u8);
    }
    let before_main = hybox::host::kernel::runnable_since_fork().unwrap_or_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap uses 0 for --help/--version and 2 for usage errors, as documented.
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    init_tracing(cli.verbose, cli.quiet);
    // `hybox serve` handles SIGTERM/SIGINT itself: drain first, then tear down.
    if let Command::Serve(args) = cli.command {
        return ExitCode::from(serve(args) as u8);
    }
    // SIGINT/SIGTERM to hybox: kill and remove every live envelope before exiting (128+signo).
    if let Err(e) = hybox::cli::signals::install_signal_teardown() {
        eprintln!("hybox: error: cannot install the signal teardown: {e}");
        return ExitCode::from(exit::RUNNER_FAILED as u8);
    }
    let status = match cli.command {
        Command::Run(args) => run(args, (before_main, t_main)),
        Command::Explain(args) => explain(args),
        Command::Policy(PolicyCommand::Check { files }) => policy_check(&files),
        Command::Policy(PolicyCommand::Schema) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&Policy::json_schema()).expect("schema serialises")
            );
            0
        }
        Command::Doctor {
            fix: Some(fix),
            dry_run,
            ..
        } => doctor_fix(fix, dry_run),
        Command::Doctor { json, .. } => doctor(json),
        Command::Bench(args) => bench(args),
        Command::Conformance(args) => conformance(args),
        Command::Serve(args) => serve(args),
        Command::BenchServe(args) => bench_serve(args),
        Command::Gc => gc(),
        Command::Cache(c) => cache(c),
        Command::Image(c) => hybox::cli::image::command(c),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "hybox", &mut std::io::stdout());
            0
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .expect("render man page");
            let _ = std::io::stdout().write_all(&out);
            0
        }
    };
    // A SIGINT/SIGTERM that ended the run ends hybox with 128+signo, not with the run's status.
    hybox::cli::signals::yield_to_signal_teardown();
    ExitCode::from(status as u8)
}

fn init_tracing(verbose: u8, quiet: bool) {
    let level = if quiet {
        "error"
    } else {
        match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("hybox={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Prints an error with its source chain, one line.
fn fail(e: &dyn std::error::Error, status: i32) -> i32 {
    eprintln!("hybox: error: {}", hybox::error_chain(e));
    status
}

/// The policy for a run: `--policy`, else the bundle's own, else the built-in default.
fn load_policy(
    path: Option<&std::path::Path>,
    workload: &Workload,
) -> Result<Policy, hybox::policy::PolicyError> {
    match (path, workload) {
        (Some(p), _) => Policy::from_file(p),
        (None, Workload::Bundle(b)) if b.policy.is_some() => {
            Policy::from_file(b.policy.as_deref().expect("checked"))
        }
        (None, _) => Ok(Policy::default()),
    }
}

fn prepare(
    policy_path: Option<&std::path::Path>,
    artifact: &std::path::Path,
    overrides: &hybox::cli::OverrideArgs,
) -> Result<Sandbox, i32> {
    let workload = Workload::detect(artifact).map_err(|e| fail(&e, e.exit_status()))?;
    let policy = load_policy(policy_path, &workload).map_err(|e| fail(&e, exit::USAGE))?;
    let o = overrides.to_overrides();
    let policy = policy
        .with_overrides(&o)
        .map_err(|e| fail(&e, exit::USAGE))?;
    Sandbox::new(workload, policy, o.backend).map_err(|e| fail(&e, e.exit_status()))
}

/// `hybox run`. `before_main` and `t_main` (from the start of `main`) let the report account for
/// the whole process: `phases.process_us` and `phases.cli_us`.
fn run(args: RunArgs, (before_main, t_main): (std::time::Duration, std::time::Instant)) -> i32 {
    if !args.request.is_empty() {
        return hybox::cli::request::run(&args);
    }
    if let Some(image) = hybox::cli::image::as_image(&args.artifact) {
        return hybox::cli::image::run(args, image);
    }
    if args.workdir.is_some() || args.user.is_some() {
        eprintln!("hybox: error: --workdir and --user apply to images in this version (set filesystem.workdir and native.uid in the policy)");
        return exit::USAGE;
    }
    let sandbox = match prepare(args.policy.as_deref(), &args.artifact, &args.overrides) {
        Ok(s) => s,
        Err(status) => return status,
    };
    let opts = RunOptions {
        args: args.args,
        stdio: Stdio::Inherit,
        host: HostConfig {
            // SAFETY: this process is hybox's own: its memory holds the policy and the paths
            // given, and its only other thread, the signal teardown, holds no lock while it
            // waits for a signal (and ends the process when it has one). (A native run's
            // short-lived shim-copying thread, `shim::prefetch`, exists only in native runs,
            // which fork no worker; this process makes one run.)
            wasm_worker_start: unsafe { WorkerStart::fork() },
            ..HostConfig::default()
        },
        run_id: None,
        detach_teardown: false,
        ..RunOptions::default()
    };
    // The report file is created before the run: a path that cannot be written fails before
    // anything runs, and creating (or truncating) it, which can wait for the filesystem's journal,
    // is counted in `cli_us` instead of falling outside every phase.
    let mut report_file = match &args.report {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some((path, f)),
            Err(e) => {
                eprintln!("hybox: error: cannot write report {}: {e}", path.display());
                return exit::RUNNER_FAILED;
            }
        },
        None => None,
    };
    let cli_us = t_main.elapsed().as_micros() as u64;
    let mut result = match sandbox.run(&opts) {
        Ok(r) => r,
        Err(e) => {
            // No run, no report: the file created for it goes.
            if let Some((path, _)) = &report_file {
                let _ = std::fs::remove_file(path);
            }
            let status = fail(&e, e.exit_status());
            if let Some(hint) = e.hint() {
                eprintln!("hybox: hint: {hint}");
            }
            return status;
        }
    };
    result.report.phases.process_us = before_main.as_micros() as u64;
    result.report.phases.cli_us = cli_us;
    let report = &result.report;
    let json = serde_json::to_string_pretty(report).expect("report serialises");
    if let Some((path, f)) = &mut report_file {
        if let Err(e) = f.write_all(format!("{json}\n").as_bytes()) {
            eprintln!("hybox: error: cannot write report {}: {e}", path.display());
            return exit::RUNNER_FAILED;
        }
    }
    if args.json {
        println!("{json}");
    }
    eprintln!("{}", report.summary());
    report.exit_status
}

fn explain(args: ExplainArgs) -> i32 {
    if let Some(image) = hybox::cli::image::as_image(&args.artifact) {
        return hybox::cli::image::explain(args, image);
    }
    let sandbox = match prepare(Some(&args.policy), &args.artifact, &args.overrides) {
        Ok(s) => s,
        Err(status) => return status,
    };
    let explanation = hybox::explain::explain(&sandbox);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&explanation).expect("explanation serialises")
        );
    } else {
        print!("{}", explanation.render());
    }
    0
}

fn policy_check(files: &[std::path::PathBuf]) -> i32 {
    let mut status = 0;
    for f in files {
        match Policy::from_file(f) {
            Ok(_) => println!("{}: ok", f.display()),
            Err(e) => {
                eprintln!("{e}");
                status = exit::USAGE;
            }
        }
    }
    status
}

fn doctor(json: bool) -> i32 {
    let checks = hybox::doctor::run(&HostConfig::default());
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&checks).expect("checks serialise")
        );
    } else {
        print!("{}", hybox::doctor::render(&checks));
    }
    if checks
        .iter()
        .any(|c| c.status == hybox::doctor::Status::Fail)
    {
        exit::RUNNER_FAILED
    } else {
        0
    }
}

/// `hybox doctor --fix favordynmods [--dry-run]`: says what it will change and that it is host-wide
/// before changing it, and what it changed after; never without being asked.
fn doctor_fix(fix: hybox::cli::Fix, dry_run: bool) -> i32 {
    use hybox::tune::{Plan, FAVORDYNMODS_WARNING};
    let hybox::cli::Fix::Favordynmods = fix;
    let remount = match hybox::tune::plan(hybox::host::kernel::euid()) {
        Ok(Plan::AlreadyOn { target }) => {
            println!(
                "favordynmods: already on ({} has it); nothing to change",
                target.display()
            );
            return 0;
        }
        Ok(Plan::Remount(r)) => r,
        Err(e) => return fail(&e, exit::RUNNER_FAILED),
    };
    println!("warning: {FAVORDYNMODS_WARNING}");
    println!(
        "favordynmods: {} {} (cgroup2): options {} -> {} (mount options {} kept)",
        if dry_run {
            "dry run: would remount"
        } else {
            "remounting"
        },
        remount.target.display(),
        remount.before,
        remount.after,
        remount.mount_options
    );
    if dry_run {
        println!("favordynmods: dry run: nothing changed");
        return 0;
    }
    if let Err(e) = hybox::tune::apply(&remount) {
        return fail(&e, exit::RUNNER_FAILED);
    }
    println!(
        "favordynmods: remounted {}: joining a cgroup no longer waits for an RCU grace period",
        remount.target.display()
    );
    0
}

/// The limits `hybox bench` uses without `--policy`: the shipped benchmark policy's.
const BENCHMARK_POLICY: &str = include_str!("../../policies/benchmark.json");

fn bench(args: BenchArgs) -> i32 {
    let policy = match &args.policy {
        Some(p) => Policy::from_file(p),
        None => Policy::from_json_str(BENCHMARK_POLICY, "policies/benchmark.json"),
    };
    let policy = match policy {
        Ok(p) => p,
        Err(e) => return fail(&e, exit::USAGE),
    };
    let mut workloads = Vec::new();
    for w in &args.workloads {
        match hybox::bench::BenchWorkload::from_path(w) {
            Ok(b) => workloads.push(b),
            Err(e) => return fail(&e, exit::CANNOT_EXECUTE),
        }
    }
    let cfg = hybox::bench::BenchConfig {
        policy,
        workloads,
        runs: args.runs.max(1),
        warmup: args.warmup,
        pacing: hybox::bench::Pacing::from_pause((!args.back_to_back).then(|| args.pause.as_std())),
        host: HostConfig::default(),
        warm: hybox::bench::warm_factory(),
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} bench [{bar:30}] {pos}/{len} samples ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let report = hybox::bench::run(&cfg, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let report = match report {
        Ok(r) => r,
        Err(e) => return fail(&e, exit::RUNNER_FAILED),
    };
    if let Some(path) = &args.svg {
        let written = report
            .svg()
            .and_then(|svg| std::fs::write(path, svg).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("hybox: error: cannot write chart {}: {e}", path.display());
            return exit::RUNNER_FAILED;
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else if args.markdown {
        print!("{}", report.markdown());
    } else {
        print!("{}", report.table());
    }
    0
}

/// `hybox conformance`: the table on stdout; 0 only if no case failed (cases this host cannot run are
/// listed as unsupported with the reason), 1 otherwise.
fn conformance(args: ConformanceArgs) -> i32 {
    let cfg = hybox::conformance::Config {
        examples: args.examples,
        host: HostConfig::default(),
        filter: args.case,
    };
    let report = match hybox::conformance::run(&cfg) {
        Ok(r) => r,
        Err(e @ hybox::conformance::ConformanceError::MissingGuests { .. }) => {
            return fail(&e, exit::NOT_FOUND)
        }
        Err(e) => return fail(&e, exit::RUNNER_FAILED),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        print!("{}", report.table());
    }
    if report.all_passed() && !report.results.is_empty() {
        0
    } else {
        1
    }
}

/// `hybox serve`: every function bundle of a directory over HTTP until SIGTERM/SIGINT.
fn serve(args: ServeArgs) -> i32 {
    let cfg = hybox::serve::ServeConfig {
        functions_dir: args.functions,
        listen: args.listen,
        max_concurrency: args.max_concurrency,
        max_queue: args.max_queue,
        timeout: args.timeout,
        native_pool: args.native_pool,
        max_body: usize::try_from(args.max_body.bytes()).unwrap_or(usize::MAX),
        host: HostConfig {
            cgroup_parent: args.cgroup_parent,
            ..HostConfig::default()
        },
    };
    let stop = match hybox::cli::signals::drain_on_signal() {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("hybox serve: error: cannot install the signal handling: {e}");
            return exit::RUNNER_FAILED;
        }
    };
    match hybox::serve::run(cfg, stop) {
        Ok(()) => 0,
        Err(e) => fail(&e, exit::RUNNER_FAILED),
    }
}

fn bench_serve(args: BenchServeArgs) -> i32 {
    let cfg = hybox::loadgen::LoadConfig {
        target: args.target,
        function: args.function,
        requests: args.requests,
        concurrency: args.concurrency,
        warmup: args.warmup,
        payload: args.payload.into_bytes(),
        path: args.path,
    };
    match hybox::loadgen::run(&cfg) {
        Ok(r) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("result serialises")
                );
            } else {
                println!("{}", r.summary());
            }
            0
        }
        Err(e) => fail(&e, exit::RUNNER_FAILED),
    }
}

fn gc() -> i32 {
    let host = HostConfig::default();
    let mut ok = true;
    // Envelopes first: killing what is left in a dead owner's envelope stops its processes (an
    // orphaned wasm worker) from writing to the scratch directories removed next.
    match hybox::envelope::gc(&host.cgroup_root, &host.cgroup_parent) {
        Ok(r) => {
            for leaf in &r.removed {
                println!("removed {leaf}");
            }
            println!(
                "gc: {} envelope(s) examined, {} removed, {} still owned by a live hybox",
                r.examined,
                r.removed.len(),
                r.live
            );
            for e in &r.errors {
                eprintln!("hybox: gc: {e}");
            }
            ok &= r.errors.is_empty();
        }
        Err(e) => {
            eprintln!("hybox: gc: envelopes: {}", hybox::error_chain(&e));
            ok = false;
        }
    }
    // Scratch directories need no cgroup: they are removed even on a host without one.
    let scratch = hybox::scratch::gc();
    for dir in &scratch.removed {
        println!("removed {}", dir.display());
    }
    println!(
        "gc: {} scratch dir(s) examined, {} removed, {} still owned by a live hybox",
        scratch.examined,
        scratch.removed.len(),
        scratch.live
    );
    for e in &scratch.errors {
        eprintln!("hybox: gc: {e}");
    }
    ok &= scratch.errors.is_empty();
    if ok {
        0
    } else {
        exit::RUNNER_FAILED
    }
}

fn cache(c: CacheCommand) -> i32 {
    let host = HostConfig::default();
    match c {
        CacheCommand::List => match hybox::backend::wasm::cache_list(&host) {
            Ok(entries) => {
                for e in &entries {
                    let what = e
                        .header
                        .as_ref()
                        .map(|h| serde_json::to_string(h).unwrap_or_default())
                        .unwrap_or_else(|| "(unreadable header: would be rebuilt)".into());
                    println!("{}\t{} bytes\t{what}", e.path.display(), e.bytes);
                }
                println!(
                    "{} entr{}",
                    entries.len(),
                    if entries.len() == 1 { "y" } else { "ies" }
                );
                0
            }
            Err(e) => fail(&e, exit::RUNNER_FAILED),
        },
        CacheCommand::Clear => match hybox::backend::wasm::cache_clear(&host) {
            Ok(freed) => {
                println!("cache cleared ({freed} bytes freed)");
                0
            }
            Err(e) => fail(&e, exit::RUNNER_FAILED),
        },
    }
}
