//! `hybox explain`: the decision, every reason, and the effective limits for the chosen backend.

use serde::Serialize;
use serde_json::{json, Value};

use crate::policy::{Backend, Policy};
use crate::Sandbox;

/// What `hybox explain` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub artifact: String,
    pub workload: String,
    pub backend: Backend,
    pub reasons: Vec<String>,
    /// For a wasm component: the world it serves, read from its exports (`wasi:http/proxy` is
    /// served over HTTP by `hybox serve`, `wasi:cli/command` reads stdin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub world: Option<String>,
    /// The limits and grants that apply on the chosen backend.
    pub effective: Value,
}

/// Explains a prepared sandbox.
pub fn explain(sandbox: &Sandbox) -> Explanation {
    let d = sandbox.decision();
    Explanation {
        artifact: sandbox.workload().path().display().to_string(),
        workload: sandbox.workload().describe(),
        backend: d.backend,
        reasons: d.reasons.clone(),
        world: match d.backend {
            Backend::Wasm => sandbox
                .workload()
                .variant(Backend::Wasm)
                .and_then(|a| crate::backend::wasm::http::component_world(&a.path))
                .map(|w| w.to_string()),
            Backend::Native => None,
        },
        effective: effective_limits(sandbox.policy(), d.backend),
    }
}

/// The policy as it applies to one backend: the shared envelope plus that backend's own section.
pub fn effective_limits(p: &Policy, backend: Backend) -> Value {
    let r = &p.resources;
    let mut v = json!({
        "envelope": {
            "memory": r.memory.to_string(),
            "memory_bytes": r.memory.bytes(),
            "swap": "disabled",
            "cpus": r.cpus,
            "pids": r.pids,
            "io": r.io,
        },
        "timeout": r.timeout.to_string(),
        "cpu_time": r.cpu_time.map(|t| t.to_string()),
        "network": p.network,
        "mounts": p.filesystem.mounts,
        "tmp": p.filesystem.tmp.as_ref().map(|t| t.size.to_string()),
        "workdir": p.filesystem.workdir,
        "env": p.env.keys().chain(p.inherit_env.iter()).collect::<Vec<_>>(),
        "stdout_max": r.stdout_max.to_string(),
        "stderr_max": r.stderr_max.to_string(),
        "on_unenforceable": p.on_unenforceable,
    });
    let section = match backend {
        Backend::Wasm => serde_json::to_value(&p.wasm),
        Backend::Native => serde_json::to_value(&p.native),
    }
    .expect("policy sections serialise");
    v[backend.to_string()] = section;
    if backend == Backend::Native && p.native.nested {
        // The grant with the namespaces and syscalls it opens and what it changes, as the run
        // report lists it (`details.nested`).
        v["native"]["nested"] =
            serde_json::to_value(crate::report::details::NestedGrant::granted())
                .expect("the grant serialises");
    }
    v
}

impl Explanation {
    /// The human-readable form.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}: {}\nbackend: {}\n",
            self.artifact, self.workload, self.backend
        );
        if let Some(w) = &self.world {
            s.push_str(&format!("world: {w}\n"));
        }
        s.push_str("why:\n");
        for r in &self.reasons {
            s.push_str(&format!("  - {r}\n"));
        }
        s.push_str("effective limits:\n");
        let pretty = serde_json::to_string_pretty(&self.effective).expect("serialises");
        for line in pretty.lines() {
            s.push_str(&format!("  {line}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nested_grant_is_explained_with_its_syscalls() {
        let p = Policy::from_json_str(r#"{"version":1,"native":{"nested":true}}"#, "test").unwrap();
        let v = effective_limits(&p, Backend::Native);
        let grant = &v["native"]["nested"];
        assert_eq!(grant["grant"], "native.nested", "{v}");
        assert_eq!(
            grant["syscalls"].as_array().unwrap().len(),
            hybox_shim::seccomp::NESTED_SYSCALLS.len()
        );
        assert_eq!(grant["consequences"].as_array().unwrap().len(), 2);
        // Round trip: the policy as serialized keeps the grant.
        let text = serde_json::to_string(&p).unwrap();
        assert!(Policy::from_json_str(&text, "again").unwrap().native.nested);
        let p = Policy::from_json_str(r#"{"version":1}"#, "test").unwrap();
        let v = effective_limits(&p, Backend::Native);
        assert!(v["native"].get("nested").is_none(), "{v}");
        assert!(!p.native.nested);
    }
}
