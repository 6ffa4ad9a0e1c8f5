//! Privileges, namespaces and the kernel surface the seccomp filter answers: setuid, user namespaces,
//! the syscalls it kills, the ones it answers with an errno, and the socket families it refuses.

use super::{attack, case, s, Case, Control, Expect, NATIVE, NO_PID};
use crate::conformance::control::bare_probe;
use crate::conformance::Config;

/// Whether this kernel has the x32 ABI: an x32 syscall reaches it (bare), instead of ENOSYS.
pub(super) fn x32_missing(cfg: &Config) -> Option<String> {
    let v = bare_probe(cfg, &s(&["attack", "x32"]))?;
    (v["errno_name"] == "ENOSYS").then(|| {
        "CONFIG_X86_X32_ABI is not set in this kernel: x32 syscalls fail with ENOSYS on the host too, \
         so the filter's x32 rule cannot be shown to matter here (inside, the allow-list still kills it)"
            .to_string()
    })
}

/// The syscalls the seccomp filter kills: (name, catalogue entry). Inside, the probe attacks with the
/// syscall itself; the bare control's harmless arguments are chosen in [`cases`].
pub(super) const KILLED: &[(&str, &str)] = &[
    ("ptrace", "privilege: ptrace of pid 1 / the shim"),
    ("process_vm_readv", "privilege: process_vm_readv"),
    ("pidfd_getfd", "privilege: pidfd_getfd"),
    ("kcmp", "privilege: kcmp"),
    ("setns", "privilege: setns"),
    ("mount", "filesystem: mount"),
    ("umount2", "filesystem: umount"),
    ("pivot_root", "filesystem: pivot_root"),
    ("chroot", "filesystem: chroot escape"),
    ("fsopen", "filesystem: fsopen"),
    ("open_tree", "filesystem: open_tree"),
    ("move_mount", "filesystem: move_mount"),
    ("open_by_handle_at", "filesystem: open_by_handle_at"),
    ("keyctl", "kernel: keyctl"),
    ("bpf", "kernel: bpf"),
    ("perf_event_open", "kernel: perf_event_open"),
    ("userfaultfd", "kernel: userfaultfd"),
    ("kexec_load", "kernel: kexec_load"),
    ("init_module", "kernel: init_module"),
    ("acct", "kernel: acct"),
    ("swapon", "kernel: swapon"),
    ("reboot", "kernel: reboot"),
    ("syslog", "kernel: syslog"),
    ("clock_settime", "kernel: clock_settime"),
    ("modify_ldt", "kernel: modify_ldt"),
    ("iopl", "kernel: iopl"),
];

/// Privileges, namespaces and the kernel surface the seccomp filter answers.
pub(super) fn cases(cfg: &Config, out: &mut Vec<Case>) {
    out.push(case(
        "inside_view",
        "privilege: capabilities zero, NoNewPrivs 1, Seccomp 2, uid_map never host 0; fds above 2 (CVE-2024-21626)",
        NATIVE,
        Vec::new(),
        Expect::PrivilegeView,
        Control::ViewDiffers,
    ));
    out.push(case(
        "setuid0",
        "privilege: setuid(0)",
        NATIVE,
        attack(&["setuid0"]),
        Expect::Errno(&["EINVAL", "EPERM"]),
        Control::Succeeds(attack(&["setuid0"])),
    ));
    out.push(case(
        "unshare_user",
        "privilege: unshare of a user namespace",
        NATIVE,
        attack(&["unshare_user"]),
        Expect::Errno(&["EPERM"]),
        Control::Succeeds(attack(&["unshare_user"])),
    ));
    out.push(case(
        "clone_newuser",
        "privilege: clone of a user namespace",
        NATIVE,
        attack(&["clone_newuser"]),
        Expect::Errno(&["EPERM"]),
        Control::None("bare, the clone succeeds and forks a second probe; unshare_user's control covers the flag"),
    ));
    out.push(case(
        "clone3",
        "privilege: clone3 (flags out of BPF's sight)",
        NATIVE,
        attack(&["clone3"]),
        Expect::Errno(&["ENOSYS"]),
        Control::ReachesKernel(attack(&["clone3"])),
    ));
    out.push(case(
        "seccomp_loosen",
        "kernel: installing a looser seccomp filter, then ptrace",
        NATIVE,
        attack(&["seccomp_loosen"]),
        Expect::Seccomp("ptrace"),
        Control::ReachesKernel(attack(&["seccomp_loosen", NO_PID])),
    ));
    for (name, catalogue) in KILLED {
        let control_args = match *name {
            "ptrace" | "process_vm_readv" | "kcmp" => attack(&[name, NO_PID]),
            "mount" => attack(&[name, "/nonexistent-hybox-probe"]),
            _ => attack(&[name]),
        };
        out.push(case(
            name,
            catalogue,
            NATIVE,
            attack(&[name]),
            Expect::Seccomp(name),
            Control::ReachesKernel(control_args),
        ));
    }
    out.push(case(
        "io_uring_setup",
        "kernel: io_uring_setup",
        NATIVE,
        attack(&["io_uring_setup"]),
        Expect::Errno(&["ENOSYS"]),
        Control::ReachesKernel(attack(&["io_uring_setup"])),
    ));
    out.push(case(
        "personality",
        "kernel: personality(READ_IMPLIES_EXEC)",
        NATIVE,
        attack(&["personality"]),
        Expect::Errno(&["EPERM"]),
        Control::Succeeds(attack(&["personality"])),
    ));
    out.push(case(
        "tiocsti",
        "tty: TIOCSTI injection, high bits set to dodge a 64-bit compare",
        NATIVE,
        attack(&["tiocsti"]),
        Expect::Errno(&["EPERM"]),
        Control::ReachesKernel(attack(&["tiocsti"])),
    ));
    let mut x32 = case(
        "x32",
        "kernel: x32 syscalls",
        NATIVE,
        attack(&["x32"]),
        Expect::Seccomp(""),
        Control::ReachesKernel(attack(&["x32"])),
    );
    x32.unsupported = x32_missing(cfg);
    out.push(x32);
    for (name, family) in [
        ("af_packet", "network: AF_PACKET"),
        ("raw_socket", "network: raw sockets"),
        (
            "af_vsock",
            "network: AF_VSOCK (reaches the hypervisor whatever the namespace)",
        ),
        (
            "netlink_uevent",
            "network: AF_NETLINK other than NETLINK_ROUTE (kobject uevents)",
        ),
    ] {
        out.push(case(
            name,
            family,
            NATIVE,
            attack(&[name]),
            Expect::Errno(&["EPERM"]),
            Control::Succeeds(attack(&[name])),
        ));
    }
}
