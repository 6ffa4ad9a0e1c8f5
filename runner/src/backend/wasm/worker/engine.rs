//! The engine a worker runs its guest in, and the guest compiled for it: the engine's
//! configuration from the policy (epochs, fuel, stack), the fingerprint that keys the compile cache,
//! loading the guest (a verified hybox artifact, a cache hit, or a compile that fills the cache), and
//! the store limits: this is where the policy's memory limit is enforced inside the store, below the
//! cgroup's, so that a guest that over-allocates is stopped with an outcome that names the limit
//! (hybox-runc's containers set it at the cgroup's, see `HostConfig::wasm_memory_headroom`).

use std::path::Path;
use std::time::Instant;

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module, ResourceLimiter};

use crate::backend::wasm::artifact::{self, Header, Kind};
use crate::backend::wasm::Job;
use crate::policy::Policy;
use crate::report::Outcome;
use crate::workload::Format;

/// The wasmtime line, part of the cache key (also covered by the engine's compatibility hash).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Fuel per millisecond of `resources.cpu_time` when `wasm.fuel` is not set. One unit of fuel is
/// roughly one wasm operator; Cranelift code on this class of machine retires ~1e9 simple operators per
/// second, so 1e6 per ms makes a CPU-time budget of N ms stop a busy guest after roughly N ms of
/// guest work. A calibration, not a measurement of the guest's actual CPU time: the cgroup figures in
/// `usage` are authoritative.
pub const FUEL_PER_CPU_MS: u64 = 1_000_000;

/// Headroom kept between the cgroup memory limit and the wasm store's memory limit, for wasmtime
/// itself (compiled code, the tokio runtime of WASI, stacks). A guest over-allocating then hits the
/// store limit, which is attributable, before the cgroup OOM killer fires, which is not.
pub const MEMORY_HEADROOM: u64 = 32 << 20;

/// The wasm store's memory limit for a cgroup memory limit: `memory - min(32 MiB, memory / 2)`.
pub fn wasm_memory_limit(cgroup_memory: u64) -> u64 {
    cgroup_memory - MEMORY_HEADROOM.min(cgroup_memory / 2)
}

/// The fuel budget a policy asks for, if any.
pub fn fuel_budget(policy: &Policy) -> Option<u64> {
    policy.wasm.fuel.or_else(|| {
        policy
            .resources
            .cpu_time
            .map(|t| (t.as_std().as_millis() as u64).saturating_mul(FUEL_PER_CPU_MS))
    })
}

/// The engine configuration for a policy. Only the knobs below differ from wasmtime's defaults; the
/// proposals hybox does not need (GC, threads, exceptions, stack switching) are compiled out by cargo
/// features. `pooling` is for long-lived embedders (serve, benchmarks); one-shot runs allocate on demand.
pub fn engine_config(policy: &Policy, pooling: bool) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    c.max_wasm_stack(policy.wasm.max_stack.bytes() as usize);
    c.consume_fuel(fuel_budget(policy).is_some());
    c.wasm_component_model(true);
    if pooling {
        c.allocation_strategy(InstanceAllocationStrategy::pooling());
    } else {
        c.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        // A one-shot run instantiates its module once: a copy-on-write image of its memory (a
        // memfd written with the data segments, then mapped) only pays off across instances. The
        // data segments are copied into the one instance's memory instead.
        c.memory_init_cow(false);
    }
    c
}

/// Feeds a `Hash` into sha256 (stable, unlike `DefaultHasher`'s promise).
struct ShaHasher(sha2::Sha256);
impl std::hash::Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

/// Hex fingerprint of everything that makes compiled code valid for an engine: the wasmtime version
/// and its own compatibility hash (target, codegen flags, enabled features such as fuel and epochs).
pub fn engine_fingerprint(engine: &Engine) -> String {
    use std::hash::Hash;
    let mut h = ShaHasher(<sha2::Sha256 as sha2::Digest>::new());
    sha2::Digest::update(
        &mut h.0,
        format!("hybox-cache-v1 wasmtime {WASMTIME_VERSION}\0").as_bytes(),
    );
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(sha2::Digest::finalize(h.0))
}

/// A compiled guest.
pub enum Loaded {
    Module(Module),
    Component(Component),
}

/// Compiles guest bytes (binary or text) of the given kind.
pub fn compile(engine: &Engine, kind: Kind, bytes: &[u8]) -> wasmtime::Result<Loaded> {
    Ok(match kind {
        Kind::Module => Loaded::Module(Module::new(engine, bytes)?),
        Kind::Component => Loaded::Component(Component::new(engine, bytes)?),
    })
}

fn serialize(l: &Loaded) -> wasmtime::Result<Vec<u8>> {
    match l {
        Loaded::Module(m) => m.serialize(),
        Loaded::Component(c) => c.serialize(),
    }
}

/// Deserialises a payload whose MAC was verified with this host's key.
fn deserialize_verified(engine: &Engine, kind: Kind, payload: &[u8]) -> wasmtime::Result<Loaded> {
    Ok(match kind {
        // SAFETY: `payload` comes from an artifact whose HMAC verified with this host's private key
        // (artifact::verify), so hybox itself wrote it with `serialize` for this engine configuration.
        Kind::Module => Loaded::Module(unsafe { Module::deserialize(engine, payload) }?),
        // SAFETY: as above.
        Kind::Component => Loaded::Component(unsafe { Component::deserialize(engine, payload) }?),
    })
}

/// The kind of guest a detected format holds.
pub fn kind_of(format: &Format) -> Option<Kind> {
    match format {
        Format::WasmModule | Format::WasmText { component: false } => Some(Kind::Module),
        Format::WasmComponent | Format::WasmText { component: true } => Some(Kind::Component),
        _ => None,
    }
}

/// Tracks which store limit refused a growth, so the outcome can name it.
pub struct Limiter {
    pub memory: usize,
    pub table_elements: usize,
    pub instances: usize,
    pub hit: Option<Outcome>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            let detail =
                format!("wasm memory limit: the guest asked for {desired} bytes of linear memory, the limit is {}", self.memory);
            self.hit = Some(Outcome::Oom {
                detail: detail.clone(),
            });
            // An error (not `Ok(false)`) traps the guest at once: a Rust/C guest would otherwise turn
            // the failed grow into an unattributable `unreachable`.
            return Err(wasmtime::Error::msg(detail));
        }
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            let detail = format!(
                "wasm table limit: the guest asked for {desired} table elements, the limit is {}",
                self.table_elements
            );
            self.hit = Some(Outcome::Oom {
                detail: detail.clone(),
            });
            return Err(wasmtime::Error::msg(detail));
        }
        Ok(true)
    }
    fn instances(&self) -> usize {
        self.instances
    }
    fn tables(&self) -> usize {
        self.instances.saturating_mul(4)
    }
    fn memories(&self) -> usize {
        self.instances
    }
}

pub(crate) fn limiter(job: &Job) -> Limiter {
    let p = &job.policy;
    let cgroup = p.resources.memory.bytes();
    // hybox-runc: no headroom, so a guest that over-allocates meets the kernel's OOM killer (the
    // cgroup's OOM event is what containerd reports) before it could meet the store's limit.
    let memory = match job.store_memory_is_cgroup_limit {
        true => cgroup,
        false => wasm_memory_limit(cgroup),
    };
    Limiter {
        memory: usize::try_from(memory).unwrap_or(usize::MAX),
        table_elements: usize::try_from(p.wasm.max_table_elements).unwrap_or(usize::MAX),
        instances: p.wasm.max_instances as usize,
        hit: None,
    }
}

/// Loads the guest: from a hybox artifact, from the cache, or by compiling (and caching) it.
pub(crate) fn load(
    engine: &Engine,
    job: &Job,
    details: &mut crate::report::details::WasmDetails,
) -> Result<(Loaded, Kind), Outcome> {
    load_or_compile(engine, job, details, true)
        .map(|l| l.expect("loads or compiles when compiling is allowed"))
}

/// The guest when it can be had without compiling: a precompiled hybox artifact or a compile-cache
/// hit, both verified with this host's key. `None` on a miss, a rejected entry or any error (the
/// full [`load`] then does it again, and reports).
pub(super) fn load_cached(
    engine: &Engine,
    job: &Job,
    details: &mut crate::report::details::WasmDetails,
) -> Option<Loaded> {
    match load_or_compile(engine, job, details, false) {
        Ok(Some((l, _))) => Some(l),
        _ => None,
    }
}

fn load_or_compile(
    engine: &Engine,
    job: &Job,
    details: &mut crate::report::details::WasmDetails,
    compile_allowed: bool,
) -> Result<Option<(Loaded, Kind)>, Outcome> {
    let setup = |step: String| Outcome::SetupError { step };
    let t_load = Instant::now();
    let mut load_phases = std::collections::BTreeMap::new();
    let mut mark = |name: &str| {
        load_phases.insert(name.to_string(), t_load.elapsed().as_micros() as u64);
    };
    let bytes = std::fs::read(&job.artifact)
        .map_err(|e| setup(format!("read {}: {e}", job.artifact.display())))?;
    mark("source_read");
    let fp = engine_fingerprint(engine);
    mark("fingerprint");
    let dir = job.cache_dir.as_deref();
    if job.format == Format::HyboxArtifact {
        let dir = dir.ok_or_else(|| {
            setup("load artifact: no cache directory holds this host's key".into())
        })?;
        let key =
            artifact::load_or_create_key(dir).map_err(|e| setup(format!("load artifact: {e}")))?;
        let (header, payload) = artifact::verify(&key, &bytes, &fp).map_err(|why| {
            setup(format!(
                "load artifact {}: refused to load precompiled code: {why}",
                job.artifact.display()
            ))
        })?;
        details.cache_hit = Some(false);
        details.precompiled = Some(true);
        let l = deserialize_verified(engine, header.kind, payload)
            .map_err(|e| setup(format!("load artifact: {e:#}")))?;
        return Ok(Some((l, header.kind)));
    }
    let kind =
        kind_of(&job.format).ok_or_else(|| setup(format!("not a wasm guest: {:?}", job.format)))?;
    let src = artifact::sha256_hex(&bytes);
    mark("source_hashed");
    // The cache is an optimisation: if it is unusable the guest is compiled anyway, and the report
    // says why the cache was skipped.
    let key = match dir.map(artifact::load_or_create_key) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            details.cache_error = Some(e.to_string());
            None
        }
        None => None,
    };
    if let (Some(dir), Some(key)) = (dir, key.as_ref()) {
        let entry = artifact::entry_path(dir, &src, &fp);
        details.cache_entry = Some(entry.display().to_string());
        mark("key_read");
        if let Ok(cached) = artifact::MappedFile::open(&entry) {
            mark("entry_read");
            let verified = artifact::verify(key, &cached, &fp);
            mark("entry_verified");
            match verified {
                Ok((h, payload)) if h.source_sha256 == src && h.kind == kind => {
                    match deserialize_verified(engine, kind, payload) {
                        Ok(l) => {
                            mark("deserialized");
                            details.load_phases = Some(load_phases);
                            details.cache_hit = Some(true);
                            return Ok(Some((l, kind)));
                        }
                        Err(e) => {
                            details.cache_rejected = Some(format!("deserialize: {e:#}"));
                        }
                    }
                }
                Ok(_) => {
                    details.cache_rejected = Some("entry is for another source or kind".into());
                }
                Err(why) => {
                    details.cache_rejected = Some(why.to_string());
                }
            }
            if !compile_allowed {
                return Ok(None);
            }
            // Never leave a rejected entry behind: it is replaced below.
            let _ = std::fs::remove_file(&entry);
        }
    }
    if !compile_allowed {
        return Ok(None);
    }
    details.cache_hit = Some(false);
    let t = Instant::now();
    let loaded = compile(engine, kind, &bytes).map_err(|e| setup(format!("compile: {e:#}")))?;
    details.compile_us = Some(t.elapsed().as_micros() as u64);
    if let (Some(dir), Some(key)) = (dir, key.as_ref()) {
        let header = Header {
            kind,
            engine: fp.clone(),
            source_sha256: src.clone(),
            hybox: env!("CARGO_PKG_VERSION").into(),
        };
        match serialize(&loaded) {
            Ok(payload) => {
                if let Err(e) = artifact::write_atomic(
                    &artifact::entry_path(dir, &src, &fp),
                    &artifact::encode(key, &header, &payload),
                ) {
                    details.cache_error = Some(e.to_string());
                }
            }
            Err(e) => {
                details.cache_error = Some(format!("serialize: {e:#}"));
            }
        }
    }
    Ok(Some((loaded, kind)))
}

/// Compiles `input` into a hybox artifact at `output`, signed with this host's key (for a future
/// `hybox compile`). Compiles in this process: call it only on bytes the caller chose to compile.
pub fn precompile_in_process(
    input: &Path,
    output: &Path,
    policy: &Policy,
    cache_dir: &Path,
) -> Result<(), artifact::ArtifactError> {
    let err = |why: String| artifact::ArtifactError::Compile {
        path: input.display().to_string(),
        why,
    };
    let bytes = std::fs::read(input).map_err(|e| err(format!("read: {e}")))?;
    let format = crate::workload::sniff(&bytes).map_err(|e| err(e.to_string()))?;
    let kind = kind_of(&format)
        .ok_or_else(|| err(format!("not a wasm module or component ({format})")))?;
    let engine =
        Engine::new(&engine_config(policy, false)).map_err(|e| err(format!("engine: {e:#}")))?;
    let loaded = compile(&engine, kind, &bytes).map_err(|e| err(format!("compile: {e:#}")))?;
    let payload = serialize(&loaded).map_err(|e| err(format!("serialize: {e:#}")))?;
    let key = artifact::load_or_create_key(cache_dir)?;
    let header = Header {
        kind,
        engine: engine_fingerprint(&engine),
        source_sha256: artifact::sha256_hex(&bytes),
        hybox: env!("CARGO_PKG_VERSION").into(),
    };
    artifact::write_atomic(output, &artifact::encode(&key, &header, &payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(store_memory_is_cgroup_limit: bool) -> Job {
        let policy =
            Policy::from_json_str(r#"{"version": 1, "resources": {"memory": "64M"}}"#, "test")
                .unwrap();
        Job {
            artifact: "/x.wasm".into(),
            format: Format::WasmModule,
            args: Vec::new(),
            env: Vec::new(),
            policy,
            capture: None,
            tmp_dir: None,
            cache_dir: None,
            timeout_ms: 1000,
            own_network_namespace: false,
            store_memory_is_cgroup_limit,
        }
    }

    #[test]
    fn the_store_keeps_headroom_below_the_cgroup_unless_told_the_cgroup_is_the_limit() {
        // `hybox run`: 32 MiB below the envelope's, so the store fails first, naming itself.
        assert_eq!(limiter(&job(false)).memory, 32 << 20);
        // hybox-runc: the envelope's own, so the kernel's OOM kill (what containerd sees) comes first.
        assert_eq!(limiter(&job(true)).memory, 64 << 20);
    }
}
