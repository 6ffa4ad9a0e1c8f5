//! The native backend: an ELF in fresh Linux namespaces behind the shim (issue 4).
