//! oci-record REPO OUT: drives a private containerd (ctr) and a private dockerd through
//! scripts/oci-log-runtime, one scenario at a time, and writes to OUT the sanitised record of every
//! runtime call (calls/SCENARIO.log), the config.json and process.json fixtures, and calls.txt (the
//! argv sequence of each scenario). Then times `ctr run --rm` of a static hello, runc and crun
//! alternated. Uses the test helpers of tests/common/ as they are.

#[path = "../../tests/common/containerd.rs"]
mod containerd;
#[path = "../../tests/common/dockerd.rs"]
mod dockerd;
#[path = "../../tests/common/oci_image.rs"]
mod oci_image;
#[path = "../../tests/common/procs.rs"]
mod procs;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const BB: &str = "hybox.test/busybox:latest";
const HELLO: &str = "hybox.test/hello:latest";

struct Recorder {
    log_dir: PathBuf,
    out: PathBuf,
    /// (from, to) replacements that make the record independent of this run.
    subst: Vec<(String, String)>,
    calls: String,
    /// The wrapper's files of the last scenario, to pick fixtures from.
    keep: Vec<PathBuf>,
}

impl Recorder {
    /// Moves what the wrapper logged since the last scenario into the record of `name`.
    fn scenario(&mut self, name: &str, what: &str) {
        let mut records: Vec<PathBuf> = std::fs::read_dir(&self.log_dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        records.sort();
        let mut log = format!("# {name}: {what}\n");
        let _ = writeln!(self.calls, "## {name}: {what}");
        for r in &records {
            let file = r.file_name().unwrap().to_string_lossy().to_string();
            if file.ends_with(".log") && file != "calls.log" {
                let text = std::fs::read_to_string(r).unwrap_or_default();
                log += &format!("\n## {}\n{}", self.clean(&file), self.clean_record(&text));
                if let Some(argv) = text.lines().find_map(|l| l.strip_prefix("argv: ")) {
                    let exit = text
                        .lines()
                        .find_map(|l| l.strip_prefix("exit: "))
                        .unwrap_or("?");
                    let argv = argv.split_once(' ').map(|(_, a)| a).unwrap_or("");
                    let _ = writeln!(self.calls, "runc {}   => exit {exit}", self.clean(argv));
                }
            }
        }
        let _ = writeln!(self.calls);
        std::fs::create_dir_all(self.out.join("calls")).unwrap();
        std::fs::write(self.out.join("calls").join(format!("{name}.log")), log).unwrap();
        self.keep = records;
    }

    fn clean(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (a, b) in &self.subst {
            s = s.replace(a, b);
        }
        // The cgroups the recorder itself was started in (the runtime calls inherit them).
        for line in std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
        {
            if let Some(path) = line.splitn(3, ':').nth(2).filter(|p| p.len() > 1) {
                s = s.replace(&format!(":{path} "), ":/CALLER-CGROUP ");
            }
        }
        s
    }

    /// The environment shrinks to the variables a runtime may care about; the rest came from
    /// whatever started the recorder.
    fn clean_record(&self, text: &str) -> String {
        const KEEP: &[&str] = &[
            "PATH",
            "TTRPC_ADDRESS",
            "GOMAXPROCS",
            "LD_LIBRARY_PATH",
            "HYBOX_OCI_LOG_DIR",
            "NOTIFY_SOCKET",
            "XDG_RUNTIME_DIR",
            "PWD",
            "HOME",
            "LISTEN_FDS",
            "LISTEN_PID",
            "TMPDIR",
            "container",
        ];
        let mut out = String::new();
        let mut dropped = 0;
        let mut in_env = false;
        for line in text.lines() {
            if line == "env:" {
                in_env = true;
                out += "env:\n";
                continue;
            }
            if in_env {
                if let Some(kv) = line.strip_prefix("  ") {
                    let key = kv.split('=').next().unwrap_or("");
                    if KEEP.contains(&key) || key.starts_with("_LIBCONTAINER") {
                        out += &self.clean(line);
                        out.push('\n');
                    } else {
                        dropped += 1;
                    }
                    continue;
                }
                out += &format!(
                    "  ({dropped} more variables inherited from the recorder's environment)\n"
                );
                in_env = false;
            }
            out += &self.clean(line);
            out.push('\n');
        }
        out
    }
}

trait Keep {
    fn pick(&self, suffix: &str, nth: usize) -> Option<PathBuf>;
}
impl Keep for Vec<PathBuf> {
    fn pick(&self, suffix: &str, nth: usize) -> Option<PathBuf> {
        self.iter()
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .nth(nth)
            .cloned()
    }
}

struct Rec {
    r: Recorder,
}

fn sh_quote(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command under `script` (a pty as its stdin/stdout), for `-t`.
fn with_tty(cmd: &Command) -> std::process::Output {
    let mut argv = vec![cmd.get_program().to_string_lossy().to_string()];
    argv.extend(cmd.get_args().map(|a| a.to_string_lossy().to_string()));
    Command::new("script")
        .args(["-qec", &sh_quote(&argv), "/dev/null"])
        .output()
        .expect("script")
}

fn show(what: &str, o: &std::process::Output) {
    eprintln!(
        "oci-record: {what}: {} stdout {:?} stderr {:?}",
        o.status,
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    );
}

impl Rec {
    fn fixture(&self, name: &str, from: Option<PathBuf>) {
        let Some(from) = from else {
            eprintln!("oci-record: no file for fixture {name}");
            return;
        };
        let text = std::fs::read_to_string(&from).unwrap();
        let v: serde_json::Value = serde_json::from_str(&self.r.clean(&text)).expect("json");
        std::fs::write(
            self.r.out.join(name),
            serde_json::to_string_pretty(&v).unwrap() + "\n",
        )
        .unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let repo = PathBuf::from(&args[1]);
    let out = PathBuf::from(&args[2]);
    std::fs::create_dir_all(&out).unwrap();
    if args.get(3).map(String::as_str) == Some("--cri") {
        return record_cri(&repo, &out, &args[4], &args[5]);
    }
    let wrapper = repo.join("scripts/oci-log-runtime");
    let w = wrapper.display().to_string();
    let work = tempfile::Builder::new()
        .prefix("hybox-rec-")
        .tempdir()
        .unwrap();
    let log_dir = work.path().join("log");

    // Images: busybox, and the static hello of examples/ (or busybox's echo).
    let mut bb = oci_image::Image::busybox(
        BB,
        &["echo", "cat", "sleep", "true", "ls", "id", "env", "tty"],
    )
    .unwrap();
    bb.config.working_dir = Some("/tmp".into());
    bb.config
        .labels
        .insert("org.hybox.test".into(), "busybox".into());
    let hello_bin = std::env::var_os("HYBOX_HELLO")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("examples/out/native/hello"));
    let hello = match std::fs::read(&hello_bin) {
        Ok(bytes) => oci_image::Image::new(HELLO)
            .file("hello", bytes, 0o755)
            .config(oci_image::Config {
                entrypoint: vec!["/hello".into()],
                ..Default::default()
            }),
        Err(_) => {
            let mut h = bb.clone();
            h.name = HELLO.into();
            h.config.entrypoint = vec!["/bin/echo".into(), "hello".into()];
            h
        }
    };
    for (img, base) in [(&bb, "bb"), (&hello, "hello")] {
        img.write_oci_archive(&work.path().join(format!("{base}.oci.tar")))
            .unwrap();
        img.write_docker_archive(&work.path().join(format!("{base}.docker.tar")))
            .unwrap();
    }
    let volume = work.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("file"), "from the host\n").unwrap();

    let census_before = procs::Census::take();
    let env = vec![(
        "HYBOX_OCI_LOG_DIR".to_string(),
        log_dir.display().to_string(),
    )];
    let ctd = containerd::Containerd::start_with(containerd::Options {
        env: env.clone(),
        ..Default::default()
    })
    .unwrap();
    let mut rec = Rec {
        r: Recorder {
            log_dir: log_dir.clone(),
            out: out.clone(),
            subst: vec![
                (ctd.dir.display().to_string(), "/tmp/hybox-ctd".into()),
                (ctd.namespace.clone(), "hybox-test".into()),
                (work.path().display().to_string(), "/tmp/hybox-rec".into()),
                (repo.display().to_string(), "/src/hybox".into()),
            ],
            calls: String::new(),
            keep: Vec::new(),
        },
    };
    ctd.import(&ctd.namespace, &work.path().join("bb.oci.tar"))
        .unwrap();
    ctd.import(&ctd.namespace, &work.path().join("hello.oci.tar"))
        .unwrap();
    let ra = ctd.run_args();
    let ctr = |a: &[&str]| {
        let mut c = ctd.ctr();
        c.args(a);
        c
    };
    let run = |extra: &[&str], id: &str, argv: &[&str]| {
        let mut c = ctd.ctr();
        c.arg("run")
            .args(&ra)
            .args(["--runc-binary", &w])
            .args(extra)
            .arg(BB)
            .arg(id)
            .args(argv);
        c
    };
    let clear = |d: &Path| {
        let _ = std::fs::remove_dir_all(d);
    };

    clear(&log_dir);
    show(
        "ctr run",
        &run(&["--rm"], "ctr-run", &["/bin/echo", "hello"])
            .output()
            .unwrap(),
    );
    rec.r
        .scenario("ctr-run", "ctr run --rm IMAGE ID /bin/echo hello");
    rec.fixture("ctr-run.json", rec.r.keep.pick("-create.config.json", 0));

    clear(&log_dir);
    show(
        "ctr run -t",
        &with_tty(&run(
            &["--rm", "-t"],
            "ctr-run-tty",
            &["/bin/sh", "-c", "tty"],
        )),
    );
    rec.r.scenario(
        "ctr-run-tty",
        "ctr run --rm -t IMAGE ID /bin/sh -c tty (under script, a pty)",
    );
    rec.fixture(
        "ctr-run-tty.json",
        rec.r.keep.pick("-create.config.json", 0),
    );

    clear(&log_dir);
    show(
        "ctr run exit 7",
        &run(&["--rm"], "ctr-exit", &["/bin/sh", "-c", "exit 7"])
            .output()
            .unwrap(),
    );
    rec.r.scenario(
        "ctr-run-exit-7",
        "ctr run --rm IMAGE ID /bin/sh -c 'exit 7' (ctr exits 7)",
    );

    clear(&log_dir);
    show(
        "ctr run missing",
        &run(&["--rm"], "ctr-missing", &["/nonexistent"])
            .output()
            .unwrap(),
    );
    rec.r.scenario(
        "ctr-run-missing-binary",
        "ctr run --rm IMAGE ID /nonexistent (what runc's --log says)",
    );

    clear(&log_dir);
    let limits = [
        "--rm",
        "--memory-limit",
        "67108864",
        "--cpus",
        "0.5",
        "--env",
        "FOO=bar",
    ];
    show(
        "ctr run limits",
        &run(&limits, "ctr-limits", &["/bin/true"]).output().unwrap(),
    );
    rec.r.scenario(
        "ctr-run-limits",
        "ctr run --rm --memory-limit 67108864 --cpus 0.5 --env FOO=bar IMAGE ID /bin/true",
    );
    rec.fixture(
        "ctr-run-limits.json",
        rec.r.keep.pick("-create.config.json", 0),
    );

    clear(&log_dir);
    show(
        "ctr run -d",
        &run(&["-d"], "c", &["/bin/sleep", "1000"]).output().unwrap(),
    );
    rec.r
        .scenario("ctr-run-detached", "ctr run -d IMAGE c /bin/sleep 1000");
    // What runc itself answers to `state` and `features` (the shims of this containerd never ask).
    let runc_root = format!("{}/{}", ra[3], ctd.namespace);
    for (sub, file) in [
        ("state", "runc-state.json"),
        ("features", "runc-features.json"),
    ] {
        let mut c = Command::new("runc");
        c.args(["--root", &runc_root, sub]);
        if sub == "state" {
            c.arg("c");
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "runc {sub}: {o:?}");
        let v: serde_json::Value =
            serde_json::from_str(&rec.r.clean(&String::from_utf8_lossy(&o.stdout))).unwrap();
        std::fs::write(
            out.join(file),
            serde_json::to_string_pretty(&v).unwrap() + "\n",
        )
        .unwrap();
    }

    clear(&log_dir);
    let fifo = ["--fifo-dir", &ra[1]];
    let mut e = ctr(&["task", "exec"]);
    e.args(fifo)
        .args(["--exec-id", "e1", "c", "/bin/echo", "exec-hello"]);
    show("ctr task exec", &e.output().unwrap());
    rec.r.scenario(
        "ctr-exec",
        "ctr task exec --exec-id e1 c /bin/echo exec-hello",
    );
    rec.fixture(
        "ctr-exec-process.json",
        rec.r.keep.pick("-exec.process.json", 0),
    );

    clear(&log_dir);
    let mut e = ctr(&["task", "exec"]);
    e.args(fifo)
        .args(["-t", "--exec-id", "e2", "c", "/bin/sh", "-c", "tty; exit 3"]);
    show("ctr task exec -t", &with_tty(&e));
    rec.r.scenario(
        "ctr-exec-tty",
        "ctr task exec -t --exec-id e2 c /bin/sh -c 'tty; exit 3' (under script)",
    );
    rec.fixture(
        "ctr-exec-tty-process.json",
        rec.r.keep.pick("-exec.process.json", 0),
    );

    clear(&log_dir);
    let mut e = ctr(&["task", "exec"]);
    e.args(fifo)
        .args(["-d", "--exec-id", "e3", "c", "/bin/sleep", "500"]);
    show("ctr task exec -d", &e.output().unwrap());
    show("ctr task ps", &ctr(&["task", "ps", "c"]).output().unwrap());
    show(
        "ctr task kill exec",
        &ctr(&["task", "kill", "--exec-id", "e3", "-s", "KILL", "c"])
            .output()
            .unwrap(),
    );
    rec.r.scenario("ctr-exec-detached-ps-kill", "ctr task exec -d --exec-id e3 c sleep 500; ctr task ps c; ctr task kill --exec-id e3 -s KILL c");

    clear(&log_dir);
    show("pause", &ctr(&["task", "pause", "c"]).output().unwrap());
    show("ls", &ctr(&["task", "ls"]).output().unwrap());
    show("resume", &ctr(&["task", "resume", "c"]).output().unwrap());
    rec.r.scenario(
        "ctr-pause-resume",
        "ctr task pause c; ctr task ls; ctr task resume c",
    );

    clear(&log_dir);
    show("metrics", &ctr(&["task", "metrics", "c"]).output().unwrap());
    rec.r.scenario(
        "ctr-metrics",
        "ctr task metrics c (the shim reads the cgroup itself: no runtime call expected)",
    );

    clear(&log_dir);
    show("kill TERM", &ctr(&["task", "kill", "c"]).output().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(500));
    show("ls", &ctr(&["task", "ls"]).output().unwrap());
    rec.r.scenario(
        "ctr-kill-term",
        "ctr task kill c (SIGTERM; sleep as PID 1 has no handler, so it stays)",
    );

    clear(&log_dir);
    show(
        "kill -a KILL",
        &ctr(&["task", "kill", "-a", "-s", "KILL", "c"])
            .output()
            .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    show("delete", &ctr(&["task", "delete", "c"]).output().unwrap());
    show("rm", &ctr(&["containers", "rm", "c"]).output().unwrap());
    rec.r.scenario(
        "ctr-kill-all-delete",
        "ctr task kill -a -s KILL c; ctr task delete c; ctr containers rm c",
    );

    // Timing: ctr run --rm of the static hello, runc and crun alternated.
    let mut timing = String::new();
    // crun 1.8.1 refuses this host ("cgroups in hybrid mode not supported, drop all controllers
    // from cgroupv2") although cgroup2 has no controllers here: runc alternates with runc behind
    // the logging wrapper instead (what the wrapper costs).
    let mut crun = ctd.ctr();
    crun.args(["run", "--rm"]).args(&ra).args([
        "--runc-binary",
        "/usr/bin/crun",
        HELLO,
        "crun-probe",
    ]);
    let o = crun.output().unwrap();
    let _ = writeln!(
        timing,
        "crun 1.8.1: {}",
        if o.status.success() {
            "works".to_string()
        } else {
            String::from_utf8_lossy(&o.stderr).trim().to_string()
        }
    );
    let mut times: Vec<(String, Vec<f64>)> =
        vec![("/usr/bin/runc".into(), vec![]), (w.clone(), vec![])];
    let runs = 20;
    for i in 0..runs {
        for (rt, v) in times.iter_mut() {
            let id = format!("t{i}");
            let mut c = ctd.ctr();
            c.arg("run")
                .arg("--rm")
                .args(&ra)
                .args(["--runc-binary", rt])
                .arg(HELLO)
                .arg(&id);
            let t = Instant::now();
            let o = c.output().unwrap();
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert!(o.status.success(), "{rt}: {o:?}");
            v.push(ms);
        }
    }
    let cmd = format!(
        "ctr --address SOCK --namespace NS run --rm --fifo-dir DIR/fifo --runc-root DIR/runc --runc-binary RUNTIME {HELLO} tN"
    );
    let _ = writeln!(
        timing,
        "command: {cmd}\n{runs} runs of each runtime, alternated; image: {} ",
        if hello_bin.exists() {
            "examples/out/native/hello (static-pie)"
        } else {
            "busybox echo"
        }
    );
    let _ = writeln!(
        timing,
        "loadavg at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for (rt, v) in &mut times {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let _ = writeln!(
            timing,
            "{}: median {:.1} ms, min {:.1}, max {:.1}",
            rec.r.clean(rt),
            v[v.len() / 2 - 1] / 2.0 + v[v.len() / 2] / 2.0,
            v[0],
            v[v.len() - 1]
        );
    }
    print!("{timing}");
    std::fs::write(out.join("ctr-run-timing.txt"), &timing).unwrap();

    let left = ctd.stop();
    assert!(left.is_empty(), "containerd left {left:?}");

    // Docker.
    let dkd = dockerd::Dockerd::start_with(dockerd::Options {
        runtimes: vec![("logged".into(), wrapper.clone())],
        env: env.clone(),
        ..Default::default()
    })
    .unwrap();
    rec.r
        .subst
        .insert(0, (dkd.dir.display().to_string(), "/tmp/hybox-dkd".into()));
    rec.r
        .subst
        .insert(0, (dkd.cgroup_parent.clone(), "hybox-docker-test".into()));
    rec.r.subst.push((
        format!("/proc/{}/exe", dkd.pid()),
        "/proc/DOCKERD_PID/exe".into(),
    ));
    dkd.load(&work.path().join("bb.docker.tar")).unwrap();
    let d = |a: &[&str]| {
        let mut c = dkd.docker();
        c.args(a);
        c
    };
    let vol = format!("{}:/data", volume.display());

    clear(&log_dir);
    show(
        "docker run",
        &d(&[
            "run",
            "--rm",
            "--runtime",
            "logged",
            "-e",
            "FOO=bar",
            "-v",
            &vol,
            BB,
            "/bin/sh",
            "-c",
            "echo $FOO; cat /data/file",
        ])
        .output()
        .unwrap(),
    );
    rec.r.scenario("docker-run", "docker run --rm --runtime logged -e FOO=bar -v HOSTDIR:/data IMAGE /bin/sh -c 'echo $FOO; cat /data/file'");
    rec.fixture("docker-run.json", rec.r.keep.pick("-create.config.json", 0));

    clear(&log_dir);
    show(
        "docker run -m",
        &d(&[
            "run",
            "--rm",
            "--runtime",
            "logged",
            "-m",
            "64m",
            "-e",
            "FOO=bar",
            "-v",
            &vol,
            BB,
            "/bin/true",
        ])
        .output()
        .unwrap(),
    );
    rec.r.scenario(
        "docker-run-memory",
        "docker run --rm --runtime logged -m 64m -e FOO=bar -v HOSTDIR:/data IMAGE /bin/true",
    );
    rec.fixture(
        "docker-run-memory.json",
        rec.r.keep.pick("-create.config.json", 0),
    );

    clear(&log_dir);
    show(
        "docker run -t",
        &with_tty(&d(&[
            "run",
            "--rm",
            "-t",
            "--runtime",
            "logged",
            BB,
            "/bin/sh",
            "-c",
            "tty",
        ])),
    );
    rec.r.scenario(
        "docker-run-tty",
        "docker run --rm -t --runtime logged IMAGE /bin/sh -c tty (under script)",
    );
    rec.fixture(
        "docker-run-tty.json",
        rec.r.keep.pick("-create.config.json", 0),
    );

    clear(&log_dir);
    show(
        "docker run exit 7",
        &d(&[
            "run",
            "--rm",
            "--runtime",
            "logged",
            BB,
            "/bin/sh",
            "-c",
            "exit 7",
        ])
        .output()
        .unwrap(),
    );
    rec.r.scenario(
        "docker-run-exit-7",
        "docker run --rm --runtime logged IMAGE /bin/sh -c 'exit 7'",
    );

    clear(&log_dir);
    show(
        "docker run missing",
        &d(&["run", "--rm", "--runtime", "logged", BB, "/nonexistent"])
            .output()
            .unwrap(),
    );
    rec.r.scenario(
        "docker-run-missing-binary",
        "docker run --rm --runtime logged IMAGE /nonexistent",
    );

    clear(&log_dir);
    show(
        "docker run -d",
        &d(&[
            "run",
            "-d",
            "--runtime",
            "logged",
            "--name",
            "sleeper",
            BB,
            "/bin/sleep",
            "1000",
        ])
        .output()
        .unwrap(),
    );
    rec.r.scenario(
        "docker-run-detached",
        "docker run -d --runtime logged --name sleeper IMAGE /bin/sleep 1000",
    );

    clear(&log_dir);
    show(
        "docker exec",
        &d(&[
            "exec",
            "-e",
            "BAR=baz",
            "-w",
            "/",
            "sleeper",
            "/bin/sh",
            "-c",
            "echo exec-hello $BAR",
        ])
        .output()
        .unwrap(),
    );
    rec.r.scenario(
        "docker-exec",
        "docker exec -e BAR=baz -w / sleeper /bin/sh -c 'echo exec-hello $BAR'",
    );
    rec.fixture(
        "docker-exec-process.json",
        rec.r.keep.pick("-exec.process.json", 0),
    );

    clear(&log_dir);
    show(
        "docker exec -t",
        &with_tty(&d(&["exec", "-t", "sleeper", "/bin/sh", "-c", "tty"])),
    );
    rec.r.scenario(
        "docker-exec-tty",
        "docker exec -t sleeper /bin/sh -c tty (under script)",
    );

    clear(&log_dir);
    show(
        "docker update",
        &d(&[
            "update",
            "--memory",
            "128m",
            "--memory-swap",
            "256m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "64",
            "sleeper",
        ])
        .output()
        .unwrap(),
    );
    rec.r.scenario(
        "docker-update",
        "docker update --memory 128m --memory-swap 256m --cpus 0.5 --pids-limit 64 sleeper",
    );
    if let Some(p) = rec.r.keep.pick("-update.resources.json", 0) {
        rec.fixture("docker-update-resources.json", Some(p));
    }

    clear(&log_dir);
    show("docker pause", &d(&["pause", "sleeper"]).output().unwrap());
    show(
        "docker unpause",
        &d(&["unpause", "sleeper"]).output().unwrap(),
    );
    rec.r.scenario(
        "docker-pause-unpause",
        "docker pause sleeper; docker unpause sleeper",
    );

    clear(&log_dir);
    show("docker top", &d(&["top", "sleeper"]).output().unwrap());
    show(
        "docker stats",
        &d(&["stats", "--no-stream", "sleeper"]).output().unwrap(),
    );
    rec.r.scenario(
        "docker-top-stats",
        "docker top sleeper; docker stats --no-stream sleeper",
    );

    clear(&log_dir);
    let t = Instant::now();
    show(
        "docker stop",
        &d(&["stop", "-t", "1", "sleeper"]).output().unwrap(),
    );
    let stop_ms = t.elapsed().as_millis();
    show("docker rm", &d(&["rm", "sleeper"]).output().unwrap());
    rec.r.scenario(
        "docker-stop-rm",
        &format!("docker stop -t 1 sleeper (took {stop_ms} ms: SIGTERM, 1 s, SIGKILL); docker rm sleeper"),
    );

    clear(&log_dir);
    show(
        "docker run -d (kill)",
        &d(&[
            "run",
            "-d",
            "--runtime",
            "logged",
            "--name",
            "killme",
            BB,
            "/bin/sleep",
            "1000",
        ])
        .output()
        .unwrap(),
    );
    show("docker kill", &d(&["kill", "killme"]).output().unwrap());
    show("docker rm", &d(&["rm", "killme"]).output().unwrap());
    rec.r.scenario(
        "docker-kill",
        "docker run -d --name killme ...; docker kill killme; docker rm killme",
    );

    let left = dkd.stop();
    assert!(left.is_empty(), "dockerd left {left:?}");
    let census_after = procs::Census::take();
    // Other work on this machine may add or remove cgroups meanwhile: shown, not asserted.
    eprintln!(
        "oci-record: census changes: {:?}",
        census_before.diff(&census_after)
    );
    std::fs::write(out.join("calls.txt"), &rec.r.calls).unwrap();
}

/// CRI: containerd's CRI plugin with the `hybox` handler = scripts/oci-log-runtime over runc, driven
/// by scripts/oci-cri-client.py (PYTHON with the generated stubs on PYTHONPATH): a hostNetwork pod,
/// then a pod with its own network namespace (scripts/oci-cni-dummy: a portless bridge, nothing leaves).
fn record_cri(repo: &Path, out: &Path, python: &str, pythonpath: &str) {
    let wrapper = repo.join("scripts/oci-log-runtime");
    let work = tempfile::Builder::new()
        .prefix("hybox-rec-")
        .tempdir()
        .unwrap();
    let log_dir = work.path().join("log");
    let mut pause = oci_image::Image::busybox("hybox.test/pause:latest", &["sleep"]).unwrap();
    pause.config.cmd = vec![];
    pause.config.entrypoint = vec!["/bin/sleep".into(), "2147483647".into()];
    pause
        .write_oci_archive(&work.path().join("pause.oci.tar"))
        .unwrap();
    let bb = oci_image::Image::busybox(BB, &["echo", "sleep"]).unwrap();
    bb.write_oci_archive(&work.path().join("bb.oci.tar"))
        .unwrap();
    let conf = work.path().join("cni/conf");
    let bin = work.path().join("cni/bin");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        conf.join("10-hybox.conflist"),
        r#"{"cniVersion":"1.0.0","name":"hybox-dummy","plugins":[{"type":"oci-cni-dummy"}]}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(
        repo.join("scripts/oci-cni-dummy"),
        bin.join("oci-cni-dummy"),
    )
    .unwrap();
    // containerd's CRI always adds a loopback network of its own: it needs the loopback plugin.
    std::os::unix::fs::symlink("/usr/lib/cni/loopback", bin.join("loopback")).unwrap();

    let census_before = procs::Census::take();
    let ctd = containerd::Containerd::start_with(containerd::Options {
        cri: true,
        hybox_binary: Some(wrapper),
        cni: Some((conf, bin)),
        env: vec![("HYBOX_OCI_LOG_DIR".into(), log_dir.display().to_string())],
        ..Default::default()
    })
    .unwrap();
    ctd.import("k8s.io", &work.path().join("pause.oci.tar"))
        .unwrap();
    ctd.import("k8s.io", &work.path().join("bb.oci.tar"))
        .unwrap();
    let parent = ctd.cri_cgroup_parent();
    let rec = Rec {
        r: Recorder {
            log_dir: log_dir.clone(),
            out: out.to_path_buf(),
            subst: vec![
                (ctd.dir.display().to_string(), "/tmp/hybox-ctd".into()),
                (parent.clone(), "hybox-test-pods".into()),
                (work.path().display().to_string(), "/tmp/hybox-rec".into()),
                (repo.display().to_string(), "/src/hybox".into()),
            ],
            calls: String::new(),
            keep: Vec::new(),
        },
    };
    let mut rec = rec;
    for (name, netns) in [("cri-hostnet", false), ("cri", true)] {
        let _ = std::fs::remove_dir_all(&log_dir);
        let mut c = Command::new(python);
        c.env("PYTHONPATH", pythonpath)
            .env(
                "HYBOX_CRI_LOG_DIR",
                work.path().join(format!("{name}-logs")),
            )
            .arg(repo.join("scripts/oci-cri-client.py"))
            .arg(&ctd.address)
            .arg(format!("/{parent}"))
            .arg("hybox")
            .arg(BB);
        if netns {
            c.arg("--netns");
        }
        let o = c.output().unwrap();
        show(name, &o);
        assert!(o.status.success(), "{name}: {}", ctd.log_tail());
        let what = format!(
            "scripts/oci-cri-client.py: RunPodSandbox ({}), CreateContainer, StartContainer, ExecSync, \
             UpdateContainerResources, StopContainer (timeout 1), RemoveContainer, StopPodSandbox, RemovePodSandbox",
            if netns { "own network namespace" } else { "hostNetwork" }
        );
        rec.r.scenario(&format!("{name}-pod"), &what);
        rec.fixture(
            &format!("{name}-sandbox.json"),
            rec.r.keep.pick("-create.config.json", 0),
        );
        rec.fixture(
            &format!("{name}-container.json"),
            rec.r.keep.pick("-create.config.json", 1),
        );
        rec.fixture(
            &format!("{name}-exec-process.json"),
            rec.r.keep.pick("-exec.process.json", 0),
        );
        rec.fixture(
            &format!("{name}-update-resources.json"),
            rec.r.keep.pick("-update.resources.json", 0),
        );
    }
    let left = ctd.stop();
    assert!(left.is_empty(), "containerd left {left:?}");
    std::fs::write(out.join("calls-cri.txt"), &rec.r.calls).unwrap();
    eprintln!(
        "oci-record: census changes: {:?}",
        census_before.diff(&procs::Census::take())
    );
}
