//! The node memory a running pod costs: the proportional set size (PSS, `/proc/PID/smaps_rollup`) of
//! the pod's containerd shim and of every process in the pod's cgroups (the pause container's and
//! each container's: under hybox the runtime's monitor, the native shim or the wasm worker live
//! there too), as tests/cri.rs's `report_memory` measures it. containerd itself is the node's, not
//! the pod's, and is not counted. PSS shares a page among the processes that map it, so the figure
//! per pod falls as more pods share the hybox binary's pages: the density is part of the figure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::procs;
use crate::cri_support::Node;

/// KiB of one process: PSS and its anonymous and file-backed parts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pss {
    pub total: u64,
    pub anon: u64,
    pub file: u64,
}

impl std::ops::AddAssign for Pss {
    fn add_assign(&mut self, o: Pss) {
        self.total += o.total;
        self.anon += o.anon;
        self.file += o.file;
    }
}

pub fn pss(pid: i32) -> Pss {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Pss {
        total: field("Pss:"),
        anon: field("Pss_Anon:"),
        file: field("Pss_File:"),
    }
}

fn cgroup_procs(parent: &str, id: &str) -> Vec<i32> {
    let rel = format!("{}/{id}", parent.trim_start_matches('/'));
    let file: PathBuf = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup").join(rel).join("cgroup.procs")
    } else {
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("cgroup.procs")
    };
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// One running pod's memory, by part; `parts` names each process (`comm`) with its PSS.
#[derive(Debug, Default, Clone)]
pub struct PodMemory {
    pub shim: Pss,
    pub pause: Pss,
    pub container: Pss,
    /// (part, comm) -> PSS summed over the part's processes of that name.
    pub parts: BTreeMap<(String, String), Pss>,
}

impl PodMemory {
    pub fn total(&self) -> u64 {
        self.shim.total + self.pause.total + self.container.total
    }
}

/// The memory of pod `pod_id` with its one container `container_id`, now.
pub fn pod_memory(node: &Node, pod_id: &str, container_id: &str) -> PodMemory {
    let mut m = PodMemory::default();
    for s in node.ctd.shims() {
        if procs::shim_task(&s).is_some_and(|(_, _, id)| id == pod_id) {
            let p = pss(s.pid);
            m.shim += p;
            *m.parts.entry(("shim".into(), comm(s.pid))).or_default() += p;
        }
    }
    let parent = node.ctd.cri_cgroup_parent();
    for (part, id) in [("pause", pod_id), ("container", container_id)] {
        for pid in cgroup_procs(&parent, id) {
            let p = pss(pid);
            match part {
                "pause" => m.pause += p,
                _ => m.container += p,
            }
            *m.parts.entry((part.into(), comm(pid))).or_default() += p;
        }
    }
    m
}
