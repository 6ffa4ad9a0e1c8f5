//! `network: loopback` on the wasm backend: the worker in a network namespace of its own, with `lo`
//! up, so the policy field means what it means on the native backend (the sandbox's own `lo`,
//! nothing of the host's). In the host's network namespace a component under loopback could bind a
//! port on the host's loopback (squatting a port a host service wants) and send UDP datagrams to
//! host loopback services; in its own namespace 127.0.0.1 is its own, and there is no route out.
//!
//! An unprivileged process may create a network namespace only inside a user namespace it owns
//! (user_namespaces(7)), so the worker is created in a new user namespace too, with no uid map: its
//! capabilities there (CAP_NET_ADMIN, to bring `lo` up) last until its exec, after which it has
//! none (only a process whose euid is the namespace's root keeps them across execve,
//! capabilities(7)). So a loopback worker is always exec'd, never forked (as the hardened one):
//! its namespaces are made at clone time, where a refusal is an error the supervisor sees. Only where
//! the kernel refuses a user namespace to root (the namespace limit, a container's seccomp profile) does a root
//! supervisor fall back to a network namespace alone, owned by the host's user namespace: the worker
//! then keeps root's capabilities, as it would without the namespace. `wasm.os_sandbox` already
//! starts the worker in both namespaces (`hardened`), and needs nothing of this module.

/// The namespaces of a loopback worker.
pub const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWUSER | libc::CLONE_NEWNET;
/// Root's fallback where a user namespace is refused.
pub const ROOT_FALLBACK_FLAGS: libc::c_int = libc::CLONE_NEWNET;

/// Brings `lo` up in the current network namespace: raw socket + ioctl, async-signal-safe, allocates
/// nothing (it runs between clone and exec).
pub fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `req`, which outlives the call.
    let mut r = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as libc::Ioctl, &mut req) };
    if r == 0 {
        // SAFETY: the flags member of the union is the one SIOCGIFFLAGS just filled.
        unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
        r = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as libc::Ioctl, &req) };
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(err);
    }
    Ok(())
}

/// Starts a worker with `spawn(flags)` in its own user and network namespaces ([`CLONE_FLAGS`]);
/// where the kernel refuses the user namespace to root, in a network namespace alone. Returns the
/// worker and what it got (for the report); the refusal itself for a caller that is not root.
pub fn spawn_private<T>(
    mut spawn: impl FnMut(libc::c_int) -> std::io::Result<T>,
) -> std::io::Result<(T, &'static str)> {
    match spawn(CLONE_FLAGS) {
        Ok(t) => Ok((t, "own user and network namespaces, lo only")),
        Err(e) if refused(&e) && crate::host::kernel::euid() == 0 => {
            spawn(ROOT_FALLBACK_FLAGS).map(|t| (t, "own network namespace (root), lo only"))
        }
        Err(e) => Err(e),
    }
}

/// Whether a failed clone is the kernel refusing a namespace (EPERM: disallowed by sysctl, AppArmor
/// or a container's seccomp; ENOSPC/EUSERS: the namespace limit; EINVAL: not built in).
pub fn refused(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM) | Some(libc::ENOSPC) | Some(libc::EUSERS) | Some(libc::EINVAL)
    )
}
