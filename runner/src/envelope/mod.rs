//! The cgroup envelope: one per-run cgroup for both backends (issue 3).
