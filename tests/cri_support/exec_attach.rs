//! Part of tests/cri.rs: CRI `Exec` (without and with a tty) and `Attach` (to a container's own
//! terminal and to its piped stdin), driven through containerd's streaming server as `kubectl
//! exec -it` and `kubectl attach` drive it (tests/cri_support/stream.rs), into the pod's native
//! container; into its wasm one, what hybox can honestly give.

use std::time::Duration;

use k8s_cri::v1::*;

use crate::cri_support::{Node, BUSYBOX};
use crate::stream::Stream;
use crate::{container_config, create_and_start, running, stop_and_remove, Pod, MIB};

const T: Duration = Duration::from_secs(20);

/// A shell line printing `ctty SESSION TTY_NR PID` from the shell's own /proc/self/stat.
const SHOW_CTTY: &str = "read -r pid _ _ _ _ sid tty _ < /proc/self/stat; echo ctty $sid $tty $pid";

fn exec_url(node: &Node, id: &str, cmd: &[&str], tty: bool) -> Result<String, tonic::Status> {
    node.cri
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin: true,
            stdout: true,
            // With a tty, stderr is the terminal too (the CRI refuses both).
            stderr: !tty,
        })
        .map(|r| r.url)
}

/// CRI `Attach` to container `id`: its stream's URL. With a tty, stderr is the terminal (the CRI
/// refuses both); `what` names the step in a failure.
fn attach_url(node: &Node, id: &str, stdin: bool, tty: bool, what: &str) -> String {
    node.cri
        .attach(AttachRequest {
            container_id: id.into(),
            stdin,
            tty,
            stdout: true,
            stderr: !tty,
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .url
}

/// The first `ctty SESSION TTY_NR PID` line of a terminal's output (a line editor's redraw of
/// the typed command may hold the words too, never three numbers after them).
fn ctty(out: &str) -> Option<[i64; 3]> {
    out.split(['\r', '\n']).find_map(|l| {
        let v: Vec<i64> = l
            .trim()
            .strip_prefix("ctty ")?
            .split_whitespace()
            .map(|w| w.parse().ok())
            .collect::<Option<_>>()?;
        v.try_into().ok()
    })
}

/// tty_nr is a pty's (Unix98 pty slaves: major 136 and up): the controlling terminal is one.
fn assert_pty_is_ctty(what: &str, out: &str) -> [i64; 3] {
    let c = ctty(out).unwrap_or_else(|| panic!("{what}: no ctty line in {out:?}"));
    let major = (c[1] >> 8) & 0xfff;
    assert!(
        (136..144).contains(&major),
        "{what}: the controlling terminal is not a pty (tty_nr {}): {out:?}",
        c[1]
    );
    c
}

/// `Exec` into the native container: stdin piped in, stdout and stderr apart, the exit code on
/// the status channel; then with a tty: the pty is the process's controlling terminal in a
/// session of its own, a resize reaches it, its output and input go through the terminal, `^C`
/// interrupts it.
pub fn exec_native(node: &Node, handler: &str, id: &str) {
    let script = "read l; echo \"in:$l\"; echo err >&2; exit 5";
    let url = exec_url(node, id, &["/bin/sh", "-c", script], false)
        .unwrap_or_else(|e| panic!("Exec on {handler}: {e}\n{}", node.ctd.log_tail()));
    let mut s = Stream::open(&url);
    s.stdin("hello\n");
    let got = s.finish(T);
    assert_eq!(got.out(), "in:hello\n", "Exec on {handler}: {got:?}");
    assert_eq!(got.err(), "err\n", "Exec on {handler}: {got:?}");
    assert_eq!(got.exit_code(), Some(5), "Exec on {handler}: {got:?}");

    // A resize reaches the pty asynchronously (containerd's streaming server applies it on a
    // goroutine of its own): the size is polled for up to 5 s, not read once.
    let script = format!(
        "{SHOW_CTTY}; read l; i=0; while [ \"$(stty size)\" != '30 100' ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; stty size; echo got $l; sleep 30; exit 4"
    );
    let url = exec_url(node, id, &["/bin/sh", "-c", &script], true)
        .unwrap_or_else(|e| panic!("Exec -t on {handler}: {e}\n{}", node.ctd.log_tail()));
    let mut s = Stream::open(&url);
    s.resize(100, 30);
    s.read_until(T, |g| ctty(&g.out()).is_some());
    s.stdin("go\r");
    s.read_until(T, |g| g.out().contains("got go"));
    // ^C typed on the terminal is a SIGINT to its foreground process group: the shell and its
    // sleep end (status 130), where without a controlling terminal nothing would.
    s.stdin("\u{3}");
    let got = s.finish(T);
    let out = got.out();
    let [sid, _, pid] = assert_pty_is_ctty(&format!("Exec -t on {handler}"), &out);
    assert_eq!(
        sid, pid,
        "Exec -t on {handler}: not a session leader: {out:?}"
    );
    assert!(
        out.contains("30 100"),
        "Exec -t on {handler}: resize: {out:?}"
    );
    assert!(
        out.contains("got go"),
        "Exec -t on {handler}: input: {out:?}"
    );
    assert!(got.stderr.is_empty(), "{got:?}");
    assert_eq!(got.exit_code(), Some(130), "Exec -t on {handler}: {got:?}");
}

/// `Exec` into the wasm container: the CRI hands out a URL (it cannot know), and the stream ends
/// with hybox-runc's error as its status; nothing runs.
pub fn exec_wasm(node: &Node, id: &str) {
    for tty in [false, true] {
        let url = exec_url(node, id, &["/ticker.wasm"], tty)
            .unwrap_or_else(|e| panic!("Exec (tty {tty}) into wasm: the CRI itself refused: {e}"));
        let got = Stream::open(&url).finish(T);
        let msg = got.failure().unwrap_or_default();
        assert!(
            msg.contains("not supported for wasm containers"),
            "Exec (tty {tty}) into wasm: {got:?}"
        );
        assert_eq!(got.exit_code(), None, "{got:?}");
    }
}

/// `Attach` to the wasm container: its stdout (the fifo containerd gave it) is attached; the
/// ticker's lines come through while it runs.
pub fn attach_wasm(node: &Node, id: &str) {
    let url = attach_url(node, id, false, false, "Attach to wasm");
    let mut s = Stream::open(&url);
    s.read_until(T, |g| g.out().contains("wasm tick "));
    s.detach();
    assert!(
        running(node, id),
        "the wasm container ended with the attach"
    );
}

/// `Attach` to a container started with `stdin: true, tty: true` (an interactive shell on its
/// own terminal: the pty is its controlling terminal) and to one with `stdin: true` and no tty
/// (a line reader): input reaches each, output comes back, a detach leaves it running.
pub fn attach_native(node: &Node, handler: &str, pod: &Pod) {
    let mut c = container_config("shell", BUSYBOX, &["/bin/sh"], &[], 64 * MIB);
    (c.stdin, c.tty) = (true, true);
    let shell = create_and_start(node, pod, c)
        .unwrap_or_else(|(_, e)| panic!("tty container on {handler}: {e}"));
    let url = attach_url(node, &shell, true, true, &format!("Attach -t on {handler}"));
    let mut s = Stream::open(&url);
    s.stdin(&format!("{SHOW_CTTY}\r"));
    s.read_until(T, |g| ctty(&g.out()).is_some());
    assert_pty_is_ctty(&format!("Attach -t on {handler}"), &s.got.out());
    s.detach();
    assert!(
        running(node, &shell),
        "Attach -t on {handler}: the shell ended"
    );

    let reader = "while read l; do echo \"got $l\"; echo \"err $l\" >&2; done";
    let mut c = container_config("reader", BUSYBOX, &["/bin/sh", "-c", reader], &[], 64 * MIB);
    c.stdin = true;
    let id = create_and_start(node, pod, c)
        .unwrap_or_else(|(_, e)| panic!("stdin container on {handler}: {e}"));
    let url = attach_url(node, &id, true, false, &format!("Attach on {handler}"));
    let mut s = Stream::open(&url);
    s.stdin("ping\n");
    s.read_until(T, |g| g.out() == "got ping\n" && g.err() == "err ping\n");
    s.detach();
    assert!(running(node, &id), "Attach on {handler}: the reader ended");
    stop_and_remove(node, &shell);
    stop_and_remove(node, &id);
}
