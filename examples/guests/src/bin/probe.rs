//! The conformance probe (issue 6). Without arguments (Linux): prints the sandbox as seen from inside as
//! one JSON object. `probe attack NAME [ARG]`: runs one attack and prints its result as
//! `{"attack": NAME, "ret": R, "errno": E, "errno_name": "EPERM"}` (R < 0: the attempt failed with E).
//! The portable attacks (`read`, `write`, `connect`, `spin`, `sleep`, `exit`) are built for both x86_64
//! Linux and wasm32-wasip1, so one table of cases runs on both backends; the syscall-level attacks are
//! Linux only (on wasm they answer `errno_name: "not_on_this_target"`).

use std::fmt::Write as _;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("attack") {
        let name = args.get(2).cloned().unwrap_or_default();
        let arg = args.get(3).map(String::as_str);
        let r = match portable(&name, arg) {
            Some(r) => r,
            None => platform::attack(&name, arg),
        };
        println!(
            "{{\"attack\":{},\"ret\":{},\"errno\":{},\"errno_name\":{}}}",
            esc(&name),
            r.ret,
            r.errno,
            esc(&r.name)
        );
        return;
    }
    platform::view(&args);
}

/// One attack's result: the return value, and the error when it failed.
struct Res {
    ret: i64,
    errno: i32,
    name: String,
}

impl Res {
    fn ok(ret: i64) -> Res {
        Res {
            ret,
            errno: 0,
            name: String::new(),
        }
    }
    fn io(r: std::io::Result<i64>) -> Res {
        match r {
            Ok(v) => Res::ok(v),
            Err(e) => Res {
                ret: -1,
                errno: e.raw_os_error().unwrap_or(0),
                name: match e.raw_os_error() {
                    Some(n) => platform::errno_name(n),
                    None => format!("{:?}", e.kind()),
                },
            },
        }
    }
}

/// The attacks both targets build.
fn portable(name: &str, arg: Option<&str>) -> Option<Res> {
    Some(match name {
        // At most 64 KiB: /proc/kcore is huge.
        "read" => Res::io(std::fs::File::open(arg.unwrap_or("/")).and_then(|f| {
            use std::io::Read;
            let mut b = Vec::new();
            f.take(64 << 10).read_to_end(&mut b).map(|n| n as i64)
        })),
        // Binds TCP 127.0.0.1:PORT (then closes it): nothing is sent.
        "bind" => {
            let port: u16 = arg.and_then(|a| a.parse().ok()).unwrap_or(8080);
            Res::io(std::net::TcpListener::bind(("127.0.0.1", port)).map(|_| 0))
        }
        // Creates (or truncates) the file: only ever pointed at paths the caller owns.
        "write" => Res::io(std::fs::write(arg.unwrap_or("/probe-write"), b"probe\n").map(|_| 0)),
        // TCP to 127.0.0.1:PORT only: the listener is the caller's, on the host's loopback.
        "connect" => {
            let port: u16 = arg.and_then(|a| a.parse().ok()).unwrap_or(9);
            Res::io(std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| 0))
        }
        // A UDP datagram to 127.0.0.1:PORT only (the caller's own socket, on the host's loopback):
        // it succeeds whether anyone receives it or not; the caller checks its socket received nothing.
        "udp_send" => {
            let port: u16 = arg.and_then(|a| a.parse().ok()).unwrap_or(9);
            Res::io(
                std::net::UdpSocket::bind(("127.0.0.1", 0))
                    .and_then(|s| s.send_to(b"probe", ("127.0.0.1", port)))
                    .map(|n| n as i64),
            )
        }
        // Talks to itself on 127.0.0.1:PORT: bind, listen, connect, accept, one byte there and back
        // (ret 1). On a loopback of its own, PORT may be one a host service holds on the host's.
        "loopback_echo" => {
            use std::io::{Read, Write};
            let port: u16 = arg.and_then(|a| a.parse().ok()).unwrap_or(8080);
            Res::io((|| {
                let l = std::net::TcpListener::bind(("127.0.0.1", port))?;
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
                let (mut a, _) = l.accept()?;
                c.write_all(b"x")?;
                let mut b = [0u8; 1];
                a.read_exact(&mut b)?;
                Ok(i64::from(b[0] == b'x'))
            })())
        }
        "spin" => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "sleep" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        "exit" => std::process::exit(arg.and_then(|a| a.parse().ok()).unwrap_or(0)),
        _ => return None,
    })
}

fn esc(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    format!("\"{o}\"")
}

#[cfg(not(target_os = "linux"))]
mod platform {
    use super::Res;

    /// The inside view is Linux's (/proc); a wasm guest has none.
    pub fn view(_args: &[String]) {
        println!("{{\"target\":\"wasm\"}}");
    }

    pub fn attack(_name: &str, _arg: Option<&str>) -> Res {
        Res {
            ret: -1,
            errno: 0,
            name: "not_on_this_target".into(),
        }
    }

    /// WASI preview 1 errno numbers (wasi_snapshot_preview1 `errno`).
    pub fn errno_name(n: i32) -> String {
        match n {
            2 => "EACCES",
            3 => "EADDRINUSE",
            8 => "EBADF",
            14 => "ECONNREFUSED",
            20 => "EEXIST",
            28 => "EINVAL",
            31 => "EISDIR",
            44 => "ENOENT",
            52 => "ENOSYS",
            54 => "ENOTDIR",
            58 => "ENOTSUP",
            63 => "EPERM",
            69 => "EROFS",
            76 => "ENOTCAPABLE",
            _ => return format!("wasi errno {n}"),
        }
        .into()
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use super::{esc, Res};
    use std::fmt::Write as _;

    extern "C" {
        fn syscall(n: i64, ...) -> i64;
        fn __errno_location() -> *mut i32;
        fn ioctl(fd: i32, req: u64, ...) -> i32;
        fn setuid(uid: u32) -> i32;
        fn fork() -> i32;
    }

    fn errno() -> i32 {
        // SAFETY: glibc's thread-local errno.
        unsafe { *__errno_location() }
    }

    fn read(p: &str) -> String {
        std::fs::read_to_string(p).unwrap_or_else(|e| format!("ERR {e}"))
    }

    fn status_field(status: &str, key: &str) -> String {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{key}:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default()
    }

    fn io_errno(r: std::io::Result<()>) -> i32 {
        match r {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(-1),
        }
    }

    pub fn view(args: &[String]) {
        let status = read("/proc/self/status");
        let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut fds: Vec<i64> = fds.iter().filter_map(|s| s.parse().ok()).collect();
        fds.sort();
        let net_dev = read("/proc/net/dev");
        let ifaces: Vec<String> = net_dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|s| esc(s.trim())))
            .collect();
        let routes = read("/proc/net/route").lines().skip(1).count();
        let lo_flags = read("/sys/class/net/lo/flags");
        // lo up: IFF_UP in SIOCGIFFLAGS (no /sys in the sandbox).
        let lo_up = lo_is_up();
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let hostname = read("/proc/sys/kernel/hostname").trim().to_string();
        let pid1 = read("/proc/1/cmdline")
            .split('\0')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut o = String::from("{");
        for key in [
            "CapEff",
            "CapPrm",
            "CapBnd",
            "CapInh",
            "CapAmb",
            "NoNewPrivs",
            "Seccomp",
            "Uid",
            "Gid",
            "Groups",
            "SigBlk",
        ] {
            let _ = write!(o, "{}:{},", esc(key), esc(&status_field(&status, key)));
        }
        let _ = write!(o, "\"uid_map\":{},", esc(read("/proc/self/uid_map").trim()));
        let _ = write!(o, "\"gid_map\":{},", esc(read("/proc/self/gid_map").trim()));
        let _ = write!(o, "\"fds\":{:?},", fds);
        let _ = write!(o, "\"ifaces\":[{}],", ifaces.join(","));
        let _ = write!(o, "\"routes\":{routes},");
        let _ = write!(o, "\"lo_up\":{lo_up},");
        let _ = write!(o, "\"sys_lo_flags\":{},", esc(lo_flags.trim()));
        let _ = write!(o, "\"cwd\":{},", esc(&cwd));
        let _ = write!(o, "\"hostname\":{},", esc(&hostname));
        let _ = write!(o, "\"pid\":{},", std::process::id());
        let _ = write!(o, "\"pid1_cmdline\":{},", esc(&pid1));
        // Paths given on the command line: whether each exists, and whether it can be written.
        let mut paths = Vec::new();
        for p in args.iter().skip(1) {
            let exists = std::path::Path::new(p).exists();
            let probe = std::path::Path::new(p).join(".hybox-probe-write");
            let w = io_errno(std::fs::write(&probe, b"x"));
            let _ = std::fs::remove_file(&probe);
            paths.push(format!(
                "{{\"path\":{},\"exists\":{exists},\"write_errno\":{w}}}",
                esc(p)
            ));
        }
        let _ = write!(o, "\"paths\":[{}]", paths.join(","));
        o.push('}');
        println!("{o}");
    }

    fn lo_is_up() -> bool {
        // SAFETY: socket with constant arguments.
        let fd = unsafe { syscall(41, 2i64, 2i64, 0i64) } as i32; // socket(AF_INET, SOCK_DGRAM, 0)
        if fd < 0 {
            return false;
        }
        let mut ifr = [0u8; 40];
        ifr[0] = b'l';
        ifr[1] = b'o';
        // SAFETY: SIOCGIFFLAGS (0x8913) with a 40-byte ifreq buffer.
        let r = unsafe { ioctl(fd, 0x8913, ifr.as_mut_ptr()) };
        // SAFETY: closing our socket.
        unsafe { syscall(3, fd as i64) };
        r == 0 && (u16::from_ne_bytes([ifr[16], ifr[17]]) & 1) != 0
    }

    /// The result of a raw call: `r` as returned, errno when it is negative.
    fn sys(r: i64) -> Res {
        if r < 0 {
            let e = errno();
            Res {
                ret: r,
                errno: e,
                name: errno_name(e),
            }
        } else {
            Res::ok(r)
        }
    }

    /// A socket of this family/type/protocol: created (then closed) or refused. Creating a socket sends
    /// nothing.
    fn socket(family: i64, ty: i64, proto: i64) -> Res {
        // SAFETY: socket(2) with integer arguments.
        let r = sys(unsafe { syscall(41, family, ty, proto) });
        if r.ret >= 0 {
            // SAFETY: closing the socket just created.
            unsafe { syscall(3, r.ret) };
        }
        r
    }

    pub fn errno_name(n: i32) -> String {
        match n {
            0 => "",
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            9 => "EBADF",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            19 => "ENODEV",
            22 => "EINVAL",
            24 => "EMFILE",
            27 => "EFBIG",
            28 => "ENOSPC",
            25 => "ENOTTY",
            26 => "ETXTBSY",
            30 => "EROFS",
            38 => "ENOSYS",
            95 => "EOPNOTSUPP",
            97 => "EAFNOSUPPORT",
            98 => "EADDRINUSE",
            101 => "ENETUNREACH",
            111 => "ECONNREFUSED",
            _ => return format!("errno {n}"),
        }
        .into()
    }

    fn pid_arg(arg: Option<&str>, default: i64) -> i64 {
        arg.and_then(|a| a.parse().ok()).unwrap_or(default)
    }

    /// Each attack returns the raw result (negative: see errno) or, where the sandbox kills it, never
    /// returns. Arguments are chosen so that the bare negative control (run as root on the host) reaches
    /// the kernel and fails or succeeds harmlessly: nonexistent paths and pids, bad magic, queries.
    pub fn attack(name: &str, arg: Option<&str>) -> Res {
        let nonexistent = c"/nonexistent-hybox-probe";
        // SAFETY (all below): raw syscalls with harmless arguments (see above); the point is whether the
        // sandbox lets them reach the kernel.
        unsafe {
            match name {
                "unshare_user" => sys(syscall(272, 0x1000_0000i64)), // unshare(CLONE_NEWUSER)
                "clone_newuser" => sys(syscall(56, 0x1000_0000i64 | 17, 0i64, 0i64, 0i64, 0i64)), // clone(CLONE_NEWUSER|SIGCHLD)
                "clone3" => sys(syscall(435, 0i64, 0i64)),
                // PTRACE_ATTACH to PID (default 1: the shim inside; the control passes a pid that does not exist).
                "ptrace" => sys(syscall(101, 16i64, pid_arg(arg, 1), 0i64, 0i64)),
                "mount" => {
                    let target = std::ffi::CString::new(arg.unwrap_or("/tmp")).unwrap_or_default();
                    sys(syscall(
                        165,
                        c"none".as_ptr(),
                        target.as_ptr(),
                        c"tmpfs".as_ptr(),
                        0i64,
                        0i64,
                    ))
                }
                "umount2" => sys(syscall(166, nonexistent.as_ptr(), 0i64)),
                "pivot_root" => sys(syscall(155, nonexistent.as_ptr(), nonexistent.as_ptr())),
                "chroot" => sys(syscall(161, nonexistent.as_ptr())),
                "fsopen" => sys(syscall(430, c"nonexistentfs".as_ptr(), 0i64)),
                "open_tree" => sys(syscall(428, -100i64, nonexistent.as_ptr(), 0i64)),
                "move_mount" => sys(syscall(429, -1i64, c"".as_ptr(), -1i64, c"".as_ptr(), 0i64)),
                "open_by_handle_at" => sys(syscall(304, -100i64, 0i64, 0i64)),
                "setns" => sys(syscall(308, -1i64, 0i64)),
                "io_uring_setup" => {
                    let mut params = [0u8; 120];
                    let r = sys(syscall(425, 4i64, params.as_mut_ptr()));
                    if r.ret >= 0 {
                        syscall(3, r.ret);
                    }
                    r
                }
                // TIOCSTI with high bits set: must still be caught (32-bit compare). stdin is never a tty
                // here (a pipe inside, /dev/null for the control), so nothing can be injected.
                "tiocsti" => {
                    let c = b'x';
                    sys(syscall(
                        16,
                        0i64,
                        0xdead_0000_0000_5412u64 as i64,
                        &c as *const u8,
                    ))
                }
                "keyctl" => sys(syscall(250, 0i64, -3i64, 0i64)), // KEYCTL_GET_KEYRING_ID session
                "bpf" => sys(syscall(321, 0i64, 0i64, 0i64)),
                "perf_event_open" => sys(syscall(298, 0i64, 0i64, -1i64, -1i64, 0i64)), // attr NULL: EFAULT
                "userfaultfd" => {
                    let r = sys(syscall(323, 0o2000000i64)); // O_CLOEXEC
                    if r.ret >= 0 {
                        syscall(3, r.ret);
                    }
                    r
                }
                "process_vm_readv" => {
                    sys(syscall(310, pid_arg(arg, 1), 0i64, 0i64, 0i64, 0i64, 0i64))
                }
                "pidfd_getfd" => sys(syscall(438, -1i64, 0i64, 0i64)),
                "kcmp" => sys(syscall(
                    312,
                    pid_arg(arg, 1),
                    pid_arg(arg, 1),
                    0i64,
                    0i64,
                    0i64,
                )), // KCMP_FILE
                "kexec_load" => sys(syscall(246, 0i64, 0i64, 0i64, 0xdead_0000i64)), // bad flags: EINVAL
                "init_module" => sys(syscall(175, 0i64, 0i64, c"".as_ptr())), // NULL image: EFAULT/ENOEXEC
                "acct" => sys(syscall(163, nonexistent.as_ptr())),
                "swapon" => sys(syscall(167, nonexistent.as_ptr(), 0i64)),
                "reboot" => sys(syscall(169, 0i64, 0i64, 0i64, 0i64)), // bad magic: EINVAL
                "syslog" => sys(syscall(103, 10i64, 0i64, 0i64)),      // SYSLOG_ACTION_SIZE_BUFFER
                "clock_settime" => {
                    let ts = [0i64; 2];
                    sys(syscall(227, 1i64, ts.as_ptr())) // CLOCK_MONOTONIC cannot be set: EINVAL
                }
                "modify_ldt" => {
                    let mut buf = [0u8; 16];
                    sys(syscall(154, 0i64, buf.as_mut_ptr(), 16i64)) // read
                }
                "iopl" => sys(syscall(172, 0i64)),
                "personality" => sys(syscall(135, 0x0400000i64)), // READ_IMPLIES_EXEC
                // A looser filter on top (allow everything), then ptrace: filters stack, the strictest wins.
                "seccomp_loosen" => {
                    let allow: [u64; 1] = [0x0006 | (0x7fff_0000u64 << 32)]; // BPF_RET|BPF_K, SECCOMP_RET_ALLOW
                    let prog = (1u16, allow.as_ptr());
                    let fprog: [u64; 2] = [prog.0 as u64, prog.1 as u64];
                    let r = sys(syscall(157, 22i64, 2i64, fprog.as_ptr())); // PR_SET_SECCOMP, FILTER
                    if r.ret < 0 {
                        return r;
                    }
                    sys(syscall(101, 16i64, pid_arg(arg, 1), 0i64, 0i64))
                }
                // x32 ABI: getpid with __X32_SYSCALL_BIT.
                "x32" => sys(syscall(0x4000_0000 | 39)),
                "af_packet" => socket(17, 3, 0x0300), // AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)
                "raw_socket" => socket(2, 3, 1),      // AF_INET, SOCK_RAW, IPPROTO_ICMP
                "af_vsock" => socket(40, 1, 0),       // AF_VSOCK, SOCK_STREAM
                "netlink_uevent" => socket(16, 2, 15), // AF_NETLINK, SOCK_DGRAM, NETLINK_KOBJECT_UEVENT
                "netlink_route" => socket(16, 2, 0),   // AF_NETLINK, SOCK_DGRAM, NETLINK_ROUTE
                // kill(PID, 0): may this process signal PID at all? (-1: anyone it can see.)
                "kill" => sys(syscall(62, pid_arg(arg, -1), 0i64)),
                // A host abstract unix socket by name (abstract sockets are scoped by network namespace).
                "abstract" => {
                    use std::os::linux::net::SocketAddrExt;
                    let r = std::os::unix::net::SocketAddr::from_abstract_name(
                        arg.unwrap_or("hybox").as_bytes(),
                    )
                    .and_then(|a| std::os::unix::net::UnixStream::connect_addr(&a));
                    Res::io(r.map(|_| 0))
                }
                "sysrq" => Res::io(std::fs::write("/proc/sysrq-trigger", b"h").map(|_| 0)),
                "setuid0" => sys(setuid(0) as i64),
                "write_exe" => Res::io(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(arg.unwrap_or("/proc/1/exe"))
                        .map(|_| 0),
                ),
                // Forks up to N children (default 64) that wait; stops at the first failure. The
                // children are killed before it exits: 1 if a fork failed, else 0.
                "forkbomb" => {
                    let n = pid_arg(arg, 64);
                    let mut kids = Vec::new();
                    let mut res = Res::ok(0);
                    for _ in 0..n {
                        let pid = fork();
                        if pid == 0 {
                            loop {
                                syscall(34); // pause
                            }
                        }
                        if pid < 0 {
                            res = sys(-1);
                            break;
                        }
                        kids.push(pid);
                    }
                    for k in &kids {
                        syscall(62, *k as i64, 9i64);
                        syscall(61, *k as i64, 0i64, 0i64, 0i64);
                    }
                    if res.ret < 0 {
                        finish("forkbomb", &res, 1);
                    }
                    Res::ok(kids.len() as i64)
                }
                // Starts up to N threads (default 64) that sleep; exits 1 at the first failure.
                "threadbomb" => {
                    let n = pid_arg(arg, 64);
                    let mut count = 0i64;
                    for _ in 0..n {
                        let t = std::thread::Builder::new()
                            .stack_size(64 << 10)
                            .spawn(|| loop {
                                std::thread::sleep(std::time::Duration::from_secs(3600));
                            });
                        match t {
                            Ok(_) => count += 1,
                            Err(e) => {
                                finish("threadbomb", &Res::io(Err(e)), 1);
                            }
                        }
                    }
                    Res::ok(count)
                }
                // SIGSTOP to itself: a stopped workload must still end at the wall-clock limit.
                "sigstop" => sys(syscall(62, syscall(39), 19i64)),
                // A double-fork daemon: the grandchild sleeps (ARG seconds, default forever) in its own
                // session with stdio closed; the probe exits 0 at once. It must not outlive the run.
                "daemon" => {
                    let secs = pid_arg(arg, i64::MAX);
                    let pid = fork();
                    if pid == 0 {
                        syscall(112); // setsid
                        if fork() == 0 {
                            for fd in 0..3 {
                                syscall(3, fd as i64);
                            }
                            let ts = [secs.min(1 << 40), 0i64];
                            syscall(35, ts.as_ptr(), 0i64); // nanosleep
                        }
                        syscall(60, 0i64); // exit
                    }
                    if pid < 0 {
                        return sys(-1);
                    }
                    syscall(61, pid as i64, 0i64, 0i64, 0i64);
                    Res::ok(0)
                }
                // Opens /dev/null up to ARG times (default 512); stops at the first failure.
                "fd_exhaust" => {
                    let n = pid_arg(arg, 512);
                    let mut fds = Vec::new();
                    let mut res = Res::ok(0);
                    for _ in 0..n {
                        let fd = syscall(257, -100i64, c"/dev/null".as_ptr(), 0o2000000i64); // openat O_CLOEXEC
                        if fd < 0 {
                            res = sys(fd);
                            break;
                        }
                        fds.push(fd);
                    }
                    for fd in &fds {
                        syscall(3, *fd);
                    }
                    if res.ret >= 0 {
                        res = Res::ok(fds.len() as i64);
                    }
                    res
                }
                // Fills PATH (ARG "PATH:MiB", default /tmp/probe-fill:8) one MiB at a time, then removes it.
                "fill" => {
                    let spec = arg.unwrap_or("/tmp/probe-fill:8");
                    let (path, mib) = spec.rsplit_once(':').unwrap_or((spec, "8"));
                    let mib: usize = mib.parse().unwrap_or(8);
                    let r = (|| -> std::io::Result<i64> {
                        use std::io::Write;
                        let mut f = std::fs::File::create(path)?;
                        let block = vec![0x5au8; 1 << 20];
                        for _ in 0..mib {
                            f.write_all(&block)?;
                        }
                        f.sync_all()?;
                        Ok(mib as i64)
                    })();
                    let _ = std::fs::remove_file(path);
                    Res::io(r)
                }
                // Writes its own pid into a cgroup.procs file (default the host's root pids cgroup).
                "cgroup_move" => {
                    let p = arg.unwrap_or("/sys/fs/cgroup/cgroup.procs");
                    Res::io(std::fs::write(p, format!("{}\n", std::process::id())).map(|_| 0))
                }
                // mlock ARG KiB (default 1024).
                "mlock" => {
                    let len = (pid_arg(arg, 1024) as usize) << 10;
                    let buf = vec![1u8; len];
                    let r = sys(syscall(149, buf.as_ptr(), len as i64));
                    if r.ret == 0 {
                        syscall(150, buf.as_ptr(), len as i64);
                    }
                    r
                }
                "segv" => {
                    // A real fault (raise() would be swallowed by Rust's stack-overflow SIGSEGV handler).
                    std::ptr::null_mut::<i32>().write_volatile(1);
                    Res::ok(0)
                }
                _ => Res {
                    ret: -1,
                    errno: 22,
                    name: "unknown attack".into(),
                },
            }
        }
    }

    /// Prints the result and exits with `code` (the bombs: a nonzero exit is what the report attributes).
    fn finish(name: &str, r: &Res, code: i32) -> ! {
        println!(
            "{{\"attack\":{},\"ret\":{},\"errno\":{},\"errno_name\":{}}}",
            esc(name),
            r.ret,
            r.errno,
            esc(&r.name)
        );
        std::process::exit(code)
    }
}
