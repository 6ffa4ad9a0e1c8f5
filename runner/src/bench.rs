//! `hybox bench`: what each isolation technology costs for a workload, under the same limits, measured
//! in the same run.
//!
//! Modes (each only where the workload has the variant it needs):
//! - `bare`: the native binary spawned with no isolation at all: the baseline every ratio refers to;
//! - `native`: hybox's native sandbox, full isolation, in its envelope;
//! - `wasm-cold`: a one-shot wasm run: worker start, engine, compile-cache lookup, instantiation;
//! - `wasm-warm`: a call into an already-warm engine with a fresh store per call (the serverless case);
//! - `wasm-hardened`: `wasm-cold` with the wasm process also in namespaces + seccomp (`wasm.os_sandbox`).
//!
//! Samples are interleaved (round-robin over workloads and modes) so that drift on a shared, noisy
//! machine hits every mode alike. Medians and p95 are reported, and outliers (beyond Q3 + 1.5 IQR) are
//! counted and shown, never dropped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::backend::wasm::WarmFunction;
use crate::policy::{Backend, Policy};
use crate::report::Outcome;
use crate::workload::{Format, Workload};
use crate::{HostConfig, RunOptions, Sandbox, Stdio};

/// A measurement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Bare,
    Native,
    WasmCold,
    WasmWarm,
    WasmHardened,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::Bare,
        Mode::Native,
        Mode::WasmCold,
        Mode::WasmWarm,
        Mode::WasmHardened,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Bare => "bare",
            Mode::Native => "native",
            Mode::WasmCold => "wasm-cold",
            Mode::WasmWarm => "wasm-warm",
            Mode::WasmHardened => "wasm-hardened",
        }
    }

    fn needs(self) -> Backend {
        match self {
            Mode::Bare | Mode::Native => Backend::Native,
            _ => Backend::Wasm,
        }
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Workload(#[from] crate::workload::WorkloadError),
    #[error(transparent)]
    Sandbox(#[from] crate::Error),
    #[error("{workload}: {mode}: {message}")]
    Sample {
        workload: String,
        mode: &'static str,
        message: String,
    },
    #[error("{0}: no mode applies (it needs a native ELF and/or a wasm variant)")]
    NothingToRun(String),
}

/// One workload to measure.
#[derive(Debug, Clone)]
pub struct BenchWorkload {
    pub name: String,
    pub native: Option<PathBuf>,
    pub wasm: Option<PathBuf>,
    pub args: Vec<String>,
}

impl BenchWorkload {
    /// From a bundle (both variants; its default policy's `args`) or a single native or wasm file.
    pub fn from_path(path: &Path) -> Result<BenchWorkload, BenchError> {
        let w = Workload::detect(path)?;
        let name = match &w {
            Workload::Bundle(b) => b.manifest.name.clone(),
            Workload::Single(a) => a
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let args = match &w {
            Workload::Bundle(b) => match &b.policy {
                Some(p) => Policy::from_file(p).map(|p| p.args).unwrap_or_default(),
                None => Vec::new(),
            },
            Workload::Single(_) => Vec::new(),
        };
        // Scripts cannot be spawned "bare" the same way; only ELF counts as the native variant here.
        let native = w
            .variant(Backend::Native)
            .filter(|a| matches!(a.format, Format::Elf(_)))
            .map(|a| a.path.clone());
        let wasm = w.variant(Backend::Wasm).map(|a| a.path.clone());
        if native.is_none() && wasm.is_none() {
            return Err(BenchError::NothingToRun(path.display().to_string()));
        }
        Ok(BenchWorkload {
            name,
            native,
            wasm,
            args,
        })
    }
}

/// One timed run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub wall_us: u64,
    pub setup_us: u64,
    pub start_us: u64,
    pub run_us: u64,
    pub teardown_us: u64,
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
    pub peak_memory_bytes: u64,
}

/// A warm invoker for `wasm-warm`: created once per workload, called once per sample.
pub trait WarmInvoker {
    fn invoke(&mut self) -> Result<Sample, String>;
}

/// Builds a warm invoker for a wasm file under a policy.
pub type WarmFactory =
    dyn Fn(&Path, &Policy, &[String], &HostConfig) -> Result<Box<dyn WarmInvoker>, String>;

/// The warm invoker of `wasm-warm`: a [`WarmFunction`] (the wasm backend's warm worker).
pub fn warm_factory() -> Option<&'static WarmFactory> {
    Some(&warm_invoker)
}

/// A warm function called with the workload's args and empty stdin, once per sample.
struct WarmFunctionInvoker {
    function: WarmFunction,
    args: Vec<String>,
}

impl WarmInvoker for WarmFunctionInvoker {
    /// One call. `wall_us` is the supervisor's round trip (request written to reply read);
    /// `setup_us` the worker's per-call preparation (WASI context, `/tmp`, store), `start_us` the
    /// instantiation, `run_us` the guest, `teardown_us` the store drop. CPU is 0: the envelope's
    /// counters are cumulative over the worker's life, and cpuacct's per-tick resolution (10 ms on
    /// cgroup v1) cannot attribute a call of tens of microseconds. Peak memory is the warm worker's
    /// peak so far (its envelope's), read after the timed call: what keeping the function warm costs.
    fn invoke(&mut self) -> Result<Sample, String> {
        let call = self
            .function
            .invoke(&self.args, &[])
            .map_err(|e| e.to_string())?;
        if call.outcome != (Outcome::Exited { code: 0 }) {
            return Err(format!(
                "outcome {} (stderr: {})",
                call.outcome,
                String::from_utf8_lossy(&call.stderr).trim()
            ));
        }
        Ok(Sample {
            wall_us: call.round_trip_us,
            setup_us: call.prepare_us,
            start_us: call.instantiate_us,
            run_us: call.run_us,
            teardown_us: call.drop_us,
            peak_memory_bytes: self
                .function
                .envelope()
                .map(|e| e.usage().peak_memory_bytes)
                .unwrap_or(0),
            ..Default::default()
        })
    }
}

/// The [`WarmFactory`] of [`warm_factory`]: loads `path` once into a warm worker.
fn warm_invoker(
    path: &Path,
    policy: &Policy,
    args: &[String],
    host: &HostConfig,
) -> Result<Box<dyn WarmInvoker>, String> {
    let function = WarmFunction::load(path, policy, host).map_err(|e| e.to_string())?;
    Ok(Box::new(WarmFunctionInvoker {
        function,
        args: args.to_vec(),
    }))
}

/// Median, p95 and friends of one quantity.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub median: u64,
    pub p95: u64,
    pub min: u64,
    pub max: u64,
    /// Samples beyond Q3 + 1.5 IQR (or below Q1 - 1.5 IQR); shown, not dropped.
    pub outliers: usize,
}

impl Stats {
    pub fn of(values: &[u64]) -> Stats {
        if values.is_empty() {
            return Stats::default();
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let (q1, q3) = (q(0.25) as f64, q(0.75) as f64);
        let iqr = q3 - q1;
        let outliers = v
            .iter()
            .filter(|&&x| (x as f64) > q3 + 1.5 * iqr || (x as f64) < q1 - 1.5 * iqr)
            .count();
        Stats {
            median: q(0.5),
            p95: q(0.95),
            min: v[0],
            max: v[v.len() - 1],
            outliers,
        }
    }
}

/// The results of one mode on one workload.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub workload: String,
    pub mode: Mode,
    pub wall_us: Stats,
    /// Median wall time divided by `bare`'s median for the same workload, measured in the same run.
    pub ratio_to_bare: Option<f64>,
    /// The median of each quantity (phases, CPU, peak memory) over the measured samples.
    pub median: Sample,
    pub samples: Vec<Sample>,
}

/// How samples follow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Pacing {
    /// Each sample starts as soon as the previous one ended: what most benchmarks measure, and
    /// what a busy server sees.
    BackToBack,
    /// A pause before every sample, as a user who runs one command and waits. A lone run pays what
    /// back to back hides: on cgroup v1 without `favordynmods`, the RCU grace period that moving a
    /// process into a fresh cgroup waits for (back to back, the previous run's often still serves),
    /// and caches gone cold.
    Isolated { pause_ms: u64 },
}

impl Pacing {
    /// `None` or a zero pause: back to back.
    pub fn from_pause(pause: Option<std::time::Duration>) -> Pacing {
        match pause {
            Some(p) if !p.is_zero() => Pacing::Isolated {
                pause_ms: p.as_millis().max(1) as u64,
            },
            _ => Pacing::BackToBack,
        }
    }

    /// The pause before each sample, if any.
    pub fn pause(self) -> Option<std::time::Duration> {
        match self {
            Pacing::BackToBack => None,
            Pacing::Isolated { pause_ms } => Some(std::time::Duration::from_millis(pause_ms)),
        }
    }

    /// One phrase for the output: `back-to-back` or `isolated (200 ms pause before each run)`.
    pub fn describe(self) -> String {
        match self {
            Pacing::BackToBack => "back-to-back".into(),
            Pacing::Isolated { pause_ms } => {
                format!("isolated ({pause_ms} ms pause before each run)")
            }
        }
    }
}

/// A whole benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub hybox_version: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    pub runs: usize,
    pub warmup: usize,
    /// Back to back or isolated (a pause before each sample).
    pub pacing: Pacing,
    pub policy: Policy,
    pub modes: Vec<Mode>,
    /// Modes that could not run on this host or build, and why (e.g. `wasm-hardened` not available).
    pub skipped: Vec<(String, String)>,
    pub results: Vec<ModeResult>,
}

/// What to measure.
pub struct BenchConfig<'a> {
    pub policy: Policy,
    pub workloads: Vec<BenchWorkload>,
    pub runs: usize,
    pub warmup: usize,
    /// Back to back, or a pause before every sample (warm-up included).
    pub pacing: Pacing,
    pub host: HostConfig,
    pub warm: Option<&'a WarmFactory>,
}

/// Runs the benchmark; `progress(done, total)` after each sample.
pub fn run(
    cfg: &BenchConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<BenchReport, BenchError> {
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut skipped = Vec::new();
    // Per workload: the modes that apply, with what they need prepared once.
    struct Plan<'w> {
        w: &'w BenchWorkload,
        modes: Vec<(Mode, Runner)>,
    }
    enum Runner {
        Bare(PathBuf),
        Sandbox(Box<Sandbox>),
        Warm(Box<dyn WarmInvoker>),
    }
    let mut plans = Vec::new();
    for w in &cfg.workloads {
        let mut modes = Vec::new();
        for mode in Mode::ALL {
            let path = match mode.needs() {
                Backend::Native => w.native.clone(),
                Backend::Wasm => w.wasm.clone(),
            };
            let Some(path) = path else { continue };
            let runner = match mode {
                Mode::Bare => Runner::Bare(path),
                Mode::Native | Mode::WasmCold | Mode::WasmHardened => {
                    let mut policy = cfg.policy.clone();
                    policy.wasm.os_sandbox = mode == Mode::WasmHardened;
                    let workload = Workload::detect(&path)?;
                    Runner::Sandbox(Box::new(Sandbox::new(
                        workload,
                        policy,
                        Some(mode.needs()),
                    )?))
                }
                Mode::WasmWarm => match cfg.warm {
                    Some(factory) => match factory(&path, &cfg.policy, &w.args, &cfg.host) {
                        Ok(inv) => Runner::Warm(inv),
                        Err(e) => {
                            skipped.push((format!("{}/{}", w.name, mode.name()), e));
                            continue;
                        }
                    },
                    None => {
                        skipped.push((
                            format!("{}/{}", w.name, mode.name()),
                            "no warm invoker in this build".into(),
                        ));
                        continue;
                    }
                },
            };
            modes.push((mode, runner));
        }
        plans.push(Plan { w, modes });
    }
    let per_round: usize = plans.iter().map(|p| p.modes.len()).sum();
    if per_round == 0 {
        return Err(BenchError::NothingToRun("every workload".into()));
    }
    let total = per_round * (cfg.runs + cfg.warmup);
    let mut samples: Vec<Vec<Vec<Sample>>> = plans
        .iter()
        .map(|p| vec![Vec::new(); p.modes.len()])
        .collect();
    let mut done = 0;
    // A mode that fails once (e.g. the hardened wasm process is not available here) is skipped from
    // then on, with the reason recorded.
    let mut failed: Vec<Vec<bool>> = plans.iter().map(|p| vec![false; p.modes.len()]).collect();
    for round in 0..cfg.runs + cfg.warmup {
        for (pi, plan) in plans.iter_mut().enumerate() {
            for (mi, (mode, runner)) in plan.modes.iter_mut().enumerate() {
                done += 1;
                if failed[pi][mi] {
                    continue;
                }
                if let Some(pause) = cfg.pacing.pause() {
                    std::thread::sleep(pause);
                }
                let sample = match runner {
                    Runner::Bare(path) => bare(path, &plan.w.args),
                    Runner::Sandbox(sb) => sandboxed(sb, &plan.w.args, &cfg.host),
                    Runner::Warm(inv) => inv.invoke(),
                };
                match sample {
                    Ok(s) if round >= cfg.warmup => samples[pi][mi].push(s),
                    Ok(_) => {}
                    Err(message) => {
                        failed[pi][mi] = true;
                        skipped.push((format!("{}/{}", plan.w.name, mode.name()), message));
                    }
                }
                progress(done, total);
            }
        }
    }
    let mut results = Vec::new();
    for (pi, plan) in plans.iter().enumerate() {
        let mut rows: Vec<ModeResult> = Vec::new();
        for (mi, (mode, _)) in plan.modes.iter().enumerate() {
            let s = &samples[pi][mi];
            if s.is_empty() {
                continue;
            }
            let med =
                |f: fn(&Sample) -> u64| Stats::of(&s.iter().map(f).collect::<Vec<_>>()).median;
            rows.push(ModeResult {
                workload: plan.w.name.clone(),
                mode: *mode,
                wall_us: Stats::of(&s.iter().map(|x| x.wall_us).collect::<Vec<_>>()),
                ratio_to_bare: None,
                median: Sample {
                    wall_us: med(|x| x.wall_us),
                    setup_us: med(|x| x.setup_us),
                    start_us: med(|x| x.start_us),
                    run_us: med(|x| x.run_us),
                    teardown_us: med(|x| x.teardown_us),
                    cpu_user_us: med(|x| x.cpu_user_us),
                    cpu_system_us: med(|x| x.cpu_system_us),
                    peak_memory_bytes: med(|x| x.peak_memory_bytes),
                },
                samples: s.clone(),
            });
        }
        if let Some(base) = rows
            .iter()
            .find(|r| r.mode == Mode::Bare)
            .map(|r| r.wall_us.median)
        {
            for r in &mut rows {
                r.ratio_to_bare = (base > 0).then(|| r.wall_us.median as f64 / base as f64);
            }
        }
        results.extend(rows);
    }
    let modes = Mode::ALL
        .into_iter()
        .filter(|m| results.iter().any(|r| r.mode == *m))
        .collect();
    Ok(BenchReport {
        hybox_version: env!("CARGO_PKG_VERSION").into(),
        started_unix,
        runs: cfg.runs,
        warmup: cfg.warmup,
        pacing: cfg.pacing,
        policy: cfg.policy.clone(),
        modes,
        skipped,
        results,
    })
}

/// The baseline: spawn the binary directly, stdout/stderr to pipes read to the end (as the sandboxes
/// capture them), CPU and peak RSS from wait4's rusage.
fn bare(path: &Path, args: &[String]) -> Result<Sample, String> {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let t0 = Instant::now();
    let mut child = std::process::Command::new(path)
        .args(args)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", path.display()))?;
    let spawned = t0.elapsed();
    let mut out = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_end(&mut out);
    }
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own unreaped child; status and ru point to live, writable values.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall = t0.elapsed();
    if r < 0 {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let st = std::process::ExitStatus::from_raw(status);
    if !st.success() {
        return Err(format!("{} exited with {st}", path.display()));
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok(Sample {
        wall_us: wall.as_micros() as u64,
        setup_us: 0,
        start_us: spawned.as_micros() as u64,
        run_us: (wall - spawned).as_micros() as u64,
        teardown_us: 0,
        cpu_user_us: tv(ru.ru_utime),
        cpu_system_us: tv(ru.ru_stime),
        peak_memory_bytes: ru.ru_maxrss as u64 * 1024,
    })
}

fn sandboxed(sb: &Sandbox, args: &[String], host: &HostConfig) -> Result<Sample, String> {
    let t0 = Instant::now();
    let opts = RunOptions {
        args: args.to_vec(),
        stdio: Stdio::Capture { stdin: Vec::new() },
        host: host.clone(),
        run_id: None,
        detach_teardown: false,
        ..RunOptions::default()
    };
    let r = sb.run(&opts).map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    })?;
    let wall = t0.elapsed();
    let rep = &r.report;
    if rep.outcome != (crate::report::Outcome::Exited { code: 0 }) {
        return Err(format!(
            "outcome {} (stderr: {})",
            rep.outcome,
            String::from_utf8_lossy(&r.stderr).trim()
        ));
    }
    Ok(Sample {
        wall_us: wall.as_micros() as u64,
        setup_us: rep.phases.setup_us,
        start_us: rep.phases.start_us,
        run_us: rep.phases.run_us,
        teardown_us: rep.phases.teardown_us,
        cpu_user_us: rep.usage.cpu_user_us,
        cpu_system_us: rep.usage.cpu_system_us,
        peak_memory_bytes: rep.usage.peak_memory_bytes,
    })
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl BenchReport {
    fn rows(&self) -> Vec<[String; 12]> {
        self.results
            .iter()
            .map(|r| {
                [
                    r.workload.clone(),
                    r.mode.name().to_string(),
                    ms(r.wall_us.median),
                    ms(r.wall_us.p95),
                    r.ratio_to_bare
                        .map(|x| format!("{x:.2}x"))
                        .unwrap_or_else(|| "-".into()),
                    ms(r.median.setup_us),
                    ms(r.median.start_us),
                    ms(r.median.run_us),
                    ms(r.median.teardown_us),
                    format!(
                        "{}/{}",
                        ms(r.median.cpu_user_us),
                        ms(r.median.cpu_system_us)
                    ),
                    format!(
                        "{:.1}",
                        r.median.peak_memory_bytes as f64 / (1 << 20) as f64
                    ),
                    r.wall_us.outliers.to_string(),
                ]
            })
            .collect()
    }

    const HEADER: [&'static str; 12] = [
        "workload",
        "mode",
        "wall ms (median)",
        "p95 ms",
        "vs bare",
        "setup",
        "start",
        "run",
        "teardown",
        "cpu user/sys ms",
        "peak MiB",
        "outliers",
    ];

    /// A fixed-width table for the terminal.
    pub fn table(&self) -> String {
        let rows = self.rows();
        let mut widths: Vec<usize> = Self::HEADER.iter().map(|h| h.len()).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.len());
            }
        }
        let line = |cells: Vec<&str>| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut s = line(Self::HEADER.to_vec()) + "\n";
        for r in &rows {
            s += &(line(r.iter().map(String::as_str).collect()) + "\n");
        }
        s += &self.footer();
        s
    }

    /// A Markdown table (for READMEs and closing notes).
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "| {} |\n|{}\n",
            Self::HEADER.join(" | "),
            "---|".repeat(Self::HEADER.len())
        );
        for r in self.rows() {
            s += &format!("| {} |\n", r.join(" | "));
        }
        s += "\n";
        s += &self.footer();
        s
    }

    fn footer(&self) -> String {
        let mut s = format!(
            "{} measured runs per mode after {} warm-up, interleaved, {}; phases are medians in ms.\n",
            self.runs,
            self.warmup,
            self.pacing.describe()
        );
        for (what, why) in &self.skipped {
            s += &format!("skipped {what}: {why}\n");
        }
        s
    }

    /// An SVG chart: median phase breakdown per workload and mode, stacked bars.
    pub fn svg(&self) -> Result<String, String> {
        use plotters::prelude::*;
        let mut buf = String::new();
        {
            let n = self.results.len().max(1);
            let root =
                SVGBackend::with_string(&mut buf, (160 + 90 * n as u32, 480)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let max = self
                .results
                .iter()
                .map(|r| {
                    r.median.setup_us + r.median.start_us + r.median.run_us + r.median.teardown_us
                })
                .max()
                .unwrap_or(1);
            let top = max as f64 / 1000.0 * 1.1;
            let labels: Vec<String> = self
                .results
                .iter()
                .map(|r| format!("{} {}", r.workload, r.mode.name()))
                .collect();
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    "hybox bench: median phases per mode (ms)",
                    ("sans-serif", 18),
                )
                .margin(10)
                .x_label_area_size(60)
                .y_label_area_size(60)
                .build_cartesian_2d(0..n, 0f64..top)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&|i| labels.get(*i).cloned().unwrap_or_default())
                .y_desc("ms")
                .draw()
                .map_err(|e| e.to_string())?;
            type Phase = (&'static str, RGBColor, fn(&ModeResult) -> u64);
            let phases: [Phase; 4] = [
                ("setup", RGBColor(120, 144, 156), |r| r.median.setup_us),
                ("start", RGBColor(66, 133, 244), |r| r.median.start_us),
                ("run", RGBColor(52, 168, 83), |r| r.median.run_us),
                ("teardown", RGBColor(251, 188, 5), |r| r.median.teardown_us),
            ];
            for (pi, &(name, color, get)) in phases.iter().enumerate() {
                let bars = self.results.iter().enumerate().map(|(i, r)| {
                    let below: u64 = phases[..pi].iter().map(|p| (p.2)(r)).sum();
                    let lo = below as f64 / 1000.0;
                    let hi = (below + get(r)) as f64 / 1000.0;
                    Rectangle::new([(i, lo), (i + 1, hi)], color.filled())
                });
                chart
                    .draw_series(bars)
                    .map_err(|e| e.to_string())?
                    .label(name)
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
            root.present().map_err(|e| e.to_string())?;
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_from_pause_and_in_json() {
        use std::time::Duration;
        assert_eq!(Pacing::from_pause(None), Pacing::BackToBack);
        assert_eq!(Pacing::from_pause(Some(Duration::ZERO)), Pacing::BackToBack);
        let p = Pacing::from_pause(Some(Duration::from_millis(200)));
        assert_eq!(p, Pacing::Isolated { pause_ms: 200 });
        assert_eq!(p.pause(), Some(Duration::from_millis(200)));
        assert_eq!(Pacing::BackToBack.pause(), None);
        assert_eq!(p.describe(), "isolated (200 ms pause before each run)");
        assert_eq!(
            serde_json::to_value(p).unwrap(),
            serde_json::json!({"mode": "isolated", "pause_ms": 200})
        );
        assert_eq!(
            serde_json::to_value(Pacing::BackToBack).unwrap(),
            serde_json::json!({"mode": "back-to-back"})
        );
    }

    #[test]
    fn stats_median_p95_and_outliers() {
        let s = Stats::of(&[10, 11, 12, 13, 14, 15, 16, 17, 18, 100]);
        assert_eq!(s.median, 15, "nearest rank, rounding half up");
        assert_eq!(s.p95, 100);
        assert_eq!(s.outliers, 1);
        assert_eq!((s.min, s.max), (10, 100));
        assert_eq!(Stats::of(&[]).median, 0);
    }
}
