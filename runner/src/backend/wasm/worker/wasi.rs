//! The guest's WASI context, built from the policy alone (args, env, preopens, stdio, sockets), and
//! the store data that holds it.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::engine::Limiter;
use super::stdio::Captured;
use crate::backend::wasm::Job;
use crate::policy::{Access, Network};
use std::path::PathBuf;

/// Why the guest's WASI context could not be built from the policy.
#[derive(Debug, thiserror::Error)]
pub enum WasiError {
    /// A wasm grant names a host path that is not a directory (WASI preopens only directories).
    #[error("preopen {}: wasm grants must be directories ({} is not one)", guest.display(), host.display())]
    NotADirectory { guest: PathBuf, host: PathBuf },
    /// wasmtime could not preopen a granted directory.
    #[error("preopen {} -> {}: {cause:#}", host.display(), guest.display())]
    Preopen {
        host: PathBuf,
        guest: PathBuf,
        cause: wasmtime::Error,
    },
    /// wasmtime could not preopen the run's `/tmp` directory.
    #[error("preopen /tmp ({}): {cause:#}", dir.display())]
    PreopenTmp {
        dir: PathBuf,
        cause: wasmtime::Error,
    },
}

/// Store data for a core module (WASI p1).
pub struct ModuleState {
    pub wasi: wasmtime_wasi::p1::WasiP1Ctx,
    pub limiter: Limiter,
}

/// Store data for a component (WASI p2).
pub struct ComponentState {
    pub ctx: WasiCtx,
    pub table: ResourceTable,
    pub limiter: Limiter,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Builds the WASI context from the job: only what the policy grants.
pub fn wasi_builder(
    job: &Job,
    stdin: Vec<u8>,
    captured: Option<&Captured>,
) -> Result<WasiCtxBuilder, WasiError> {
    let mut b = WasiCtxBuilder::new();
    // Blocking host calls go through tokio (not on-thread) so the watchdog stays responsive.
    b.allow_blocking_current_thread(false);
    let argv0 = job
        .artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "guest".into());
    b.arg(argv0);
    for a in &job.args {
        b.arg(a);
    }
    for (k, v) in &job.env {
        b.env(k, v);
    }
    for m in &job.policy.filesystem.mounts {
        if !m.host.is_dir() {
            return Err(WasiError::NotADirectory {
                guest: m.guest.clone(),
                host: m.host.clone(),
            });
        }
        let perms = match m.mode {
            Access::Ro => FsPerms::ReadOnly,
            Access::Rw => FsPerms::ReadWrite,
        };
        b.preopened_dir(&m.host, m.guest.to_string_lossy(), perms)
            .map_err(|cause| WasiError::Preopen {
                host: m.host.clone(),
                guest: m.guest.clone(),
                cause,
            })?;
    }
    if let Some(t) = &job.tmp_dir {
        b.preopened_dir(t, "/tmp", FsPerms::ReadWrite)
            .map_err(|cause| WasiError::PreopenTmp {
                dir: t.clone(),
                cause,
            })?;
    }
    match captured {
        Some(c) => {
            b.stdin(MemoryInputPipe::new(stdin));
            b.stdout(c.stdout.clone());
            b.stderr(c.stderr.clone());
        }
        None => {
            b.inherit_stdio();
        }
    }
    // Sockets exist only for components (p1 has no connect); deny all unless loopback is granted.
    b.allow_ip_name_lookup(false);
    if job.policy.network == Network::Loopback {
        b.allow_tcp(true).allow_udp(true);
        // wasmtime checks a TCP connect's implicit bind as a bind of the unspecified address, port
        // 0: allowed only where every address is the worker's own `lo`. On the host's network (a
        // degraded run) it stays refused, so a guest cannot listen on the host's interfaces.
        let own_ns = job.own_network_namespace;
        b.socket_addr_check(move |addr, use_| {
            let implicit_bind = own_ns
                && matches!(use_, wasmtime_wasi::sockets::SocketAddrUse::TcpBind)
                && addr.ip().is_unspecified()
                && addr.port() == 0;
            Box::pin(async move { addr.ip().is_loopback() || implicit_bind })
        });
    } else {
        b.allow_tcp(false).allow_udp(false);
        b.socket_addr_check(|_, _| Box::pin(async { false }));
    }
    Ok(b)
}
