//! The host side of the suite: the files, grants and loopback listeners the cases aim at (outside
//! everything the sandbox mounts), and where each guest's file is found.

use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use super::cases::Guest;
use super::{Config, ConformanceError};
use crate::policy::Backend;

/// Host-side fixtures the cases point at; removed on drop.
pub(super) struct Fixtures {
    pub(super) dir: tempfile::TempDir,
    pub(super) secret: PathBuf,
    pub(super) ro: PathBuf,
    pub(super) tcp: TcpListener,
    pub(super) udp: UdpSocket,
    pub(super) unix: UnixListener,
    pub(super) abstract_name: String,
    pub(super) wat_dir: tempfile::TempDir,
    pub(super) free_port: u16,
}

impl Fixtures {
    pub(super) fn new() -> Result<Fixtures, ConformanceError> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::fs::PermissionsExt;
        let io = |what| move |source| ConformanceError::Fixture { what, source };
        // Outside every directory the native sandbox mounts (/usr, /lib, /etc...).
        let dir = tempfile::Builder::new()
            .prefix("hybox-conformance")
            .tempdir_in("/var/tmp")
            .map_err(io("temp dir in /var/tmp"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(io("temp dir permissions"))?;
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "host secret\n").map_err(io("secret file"))?;
        // A read-only grant: the sandbox's ids map to host nobody, so it must be world-readable.
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).map_err(io("read-only grant"))?;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755))
            .map_err(io("read-only grant permissions"))?;
        std::fs::write(ro.join("input.txt"), "a\nb\nc\n").map_err(io("grant input"))?;
        // A symlink inside the grant, aimed at the host secret next to it.
        std::os::unix::fs::symlink(&secret, ro.join("link")).map_err(io("symlink in the grant"))?;
        // A loopback port nobody listens on, for the bind case (bound and released here).
        let free_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io("a free loopback port"))?
            .port();
        // Host loopback only: the sandbox must not reach it (its network namespace has its own lo).
        let tcp = TcpListener::bind("127.0.0.1:0").map_err(io("loopback TCP listener"))?;
        tcp.set_nonblocking(true)
            .map_err(io("loopback TCP listener"))?;
        let udp = UdpSocket::bind("127.0.0.1:0").map_err(io("loopback UDP socket"))?;
        udp.set_nonblocking(true)
            .map_err(io("loopback UDP socket"))?;
        let abstract_name = format!("hybox-conformance-{}", crate::host::new_run_id());
        let unix = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| UnixListener::bind_addr(&a))
            .map_err(io("abstract unix listener"))?;
        unix.set_nonblocking(true)
            .map_err(io("abstract unix listener"))?;
        let wat_dir = tempfile::tempdir().map_err(io("wat fixtures"))?;
        Ok(Fixtures {
            dir,
            secret,
            ro,
            tcp,
            udp,
            unix,
            abstract_name,
            wat_dir,
            free_port,
        })
    }

    pub(super) fn udp_port(&self) -> String {
        self.udp
            .local_addr()
            .map(|a| a.port().to_string())
            .unwrap_or_default()
    }

    pub(super) fn port(&self) -> String {
        self.tcp
            .local_addr()
            .map(|a| a.port().to_string())
            .unwrap_or_default()
    }

    /// The file a guest runs from on a backend: the example's build for that target, or the wasm text
    /// fixture written into the fixture directory.
    pub(super) fn artifact(&self, cfg: &Config, guest: &Guest, backend: Backend) -> PathBuf {
        match (guest, backend) {
            (Guest::Example(n) | Guest::Component(n), Backend::Native) => {
                cfg.examples.join("native").join(n)
            }
            (Guest::Component(n), Backend::Wasm) => {
                cfg.examples.join("component").join(format!("{n}.wasm"))
            }
            (Guest::Example(n), Backend::Wasm) => {
                cfg.examples.join("wasm").join(format!("{n}.wasm"))
            }
            (Guest::Wat(file, _), _) => self.wat_dir.path().join(file),
        }
    }

    /// Writes a wasm text fixture where [`Fixtures::artifact`] finds it (nothing for an example).
    pub(super) fn write_guest(&self, guest: &Guest) -> Result<(), ConformanceError> {
        if let Guest::Wat(file, text) = guest {
            std::fs::write(self.wat_dir.path().join(file), text).map_err(|source| {
                ConformanceError::Fixture {
                    what: "wat fixture",
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Back to the state before a case: drains the listeners (a control connects to them on purpose)
    /// and removes what a bare write control left.
    pub(super) fn reset(&self) {
        while self.tcp.accept().is_ok() {}
        while self.unix.accept().is_ok() {}
        let mut b = [0u8; 64];
        while self.udp.recv_from(&mut b).is_ok() {}
        for p in [
            self.ro.join("probe-write"),
            self.dir.path().join("probe-write"),
        ] {
            let _ = std::fs::remove_file(p);
        }
    }
}
