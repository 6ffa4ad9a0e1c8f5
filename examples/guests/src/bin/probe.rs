//! The native conformance probe: prints the sandbox as seen from inside as one JSON object, or runs one
//! attack (`probe attack NAME`) and prints its result (`{"attack": NAME, "ret": R, "errno": E}`).
//! Linux only; the wasm build is a stub (examples/build.sh builds every bin for both targets).

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("probe: native only");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fmt::Write as _;

    extern "C" {
        fn syscall(n: i64, ...) -> i64;
        fn __errno_location() -> *mut i32;
        fn ioctl(fd: i32, req: u64, ...) -> i32;
        fn setuid(uid: u32) -> i32;
    }

    fn errno() -> i32 {
        // SAFETY: glibc's thread-local errno.
        unsafe { *__errno_location() }
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

    fn read(p: &str) -> String {
        std::fs::read_to_string(p).unwrap_or_else(|e| format!("ERR {e}"))
    }

    fn status_field(status: &str, key: &str) -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    }

    fn io_errno(r: std::io::Result<()>) -> i32 {
        match r {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(-1),
        }
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        if args.get(1).map(String::as_str) == Some("attack") {
            let name = args.get(2).cloned().unwrap_or_default();
            let ret = attack(&name, args.get(3).map(String::as_str));
            let e = if ret < 0 { errno() } else { 0 };
            println!("{{\"attack\":{},\"ret\":{},\"errno\":{}}}", esc(&name), ret, e);
            return;
        }
        let status = read("/proc/self/status");
        let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
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
        let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
        let hostname = read("/proc/sys/kernel/hostname").trim().to_string();
        let pid1 = read("/proc/1/cmdline").split('\0').next().unwrap_or_default().to_string();
        let mut o = String::from("{");
        for key in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "NoNewPrivs", "Seccomp", "Uid", "Gid", "Groups"] {
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
            paths.push(format!("{{\"path\":{},\"exists\":{exists},\"write_errno\":{w}}}", esc(p)));
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

    /// Each returns the raw syscall result (negative: see errno) or, where it dies, never returns.
    fn attack(name: &str, arg: Option<&str>) -> i64 {
        // SAFETY (all below): raw syscalls with harmless arguments; the point is to see whether the
        // sandbox lets them through.
        unsafe {
            match name {
                "unshare_user" => syscall(272, 0x1000_0000i64),        // unshare(CLONE_NEWUSER)
                "clone_newuser" => syscall(56, 0x1000_0000i64 | 17, 0i64, 0i64, 0i64, 0i64), // clone(CLONE_NEWUSER|SIGCHLD)
                "clone3" => syscall(435, 0i64, 0i64),
                "ptrace" => syscall(101, 16i64, 1i64, 0i64, 0i64),     // PTRACE_ATTACH pid 1
                "mount" => syscall(165, c"none".as_ptr(), c"/tmp".as_ptr(), c"tmpfs".as_ptr(), 0i64, 0i64),
                "io_uring_setup" => {
                    let mut params = [0u8; 120];
                    syscall(425, 4i64, params.as_mut_ptr())
                }
                // TIOCSTI with high bits set: must still be caught (32-bit compare).
                "tiocsti" => {
                    let c = b'x';
                    syscall(16, 0i64, 0xdead_0000_0000_5412u64 as i64, &c as *const u8)
                }
                "keyctl" => syscall(250, 0i64, -3i64, 0i64), // KEYCTL_GET_KEYRING_ID session
                "bpf" => syscall(321, 0i64, 0i64, 0i64),
                "personality" => syscall(135, 0x0400000i64), // READ_IMPLIES_EXEC
                "sysrq" => match std::fs::write("/proc/sysrq-trigger", b"h") {
                    Ok(()) => 0,
                    Err(e) => {
                        *__errno_location() = e.raw_os_error().unwrap_or(0);
                        -1
                    }
                },
                "setuid0" => setuid(0) as i64,
                "write_exe" => {
                    let p = arg.unwrap_or("/proc/1/exe");
                    match std::fs::OpenOptions::new().write(true).open(p) {
                        Ok(_) => 0,
                        Err(e) => {
                            *__errno_location() = e.raw_os_error().unwrap_or(0);
                            -1
                        }
                    }
                }
                "read" => match std::fs::read(arg.unwrap_or("/")) {
                    Ok(_) => 0,
                    Err(e) => {
                        *__errno_location() = e.raw_os_error().unwrap_or(0);
                        -1
                    }
                },
                "segv" => {
                    // A real fault (raise() would be swallowed by Rust's stack-overflow SIGSEGV handler).
                    std::ptr::null_mut::<i32>().write_volatile(1);
                    0
                }
                "sleep" => loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                },
                "exit" => std::process::exit(arg.and_then(|a| a.parse().ok()).unwrap_or(0)),
                _ => {
                    *__errno_location() = 22;
                    -1
                }
            }
        }
    }
}
