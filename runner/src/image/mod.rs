//! Container images: reading an OCI image layout, an `oci-archive` or a `docker-archive`, verifying
//! every blob against its digest, unpacking each layer once into a content-addressed store, the
//! image's config, and the overlay root of one run. docs/images.md describes the formats, the store,
//! the unpack rules and what is refused.
//!
//! Layer 3 (host resources of a run), like `scratch` and `envelope`: it knows no backend and no CLI.
//! A front-end imports an image ([`Store::import`]), mounts a run's root ([`RunRoot::mount`]) and
//! hands the mounted directory to the native backend as its root (`policy::Rootfs::Image`).

mod config;
mod digest;
mod reference;
mod root;
mod source;
mod store;
mod sys;
mod union;
mod unpack;

pub use config::{ImageConfig, User};
pub use digest::{BlobDigest, DigestError, Verifier, VerifyHandle};
pub use reference::{ImageRef, Selector};
pub use root::{RootError, RunRoot, WritableUsage};
pub use source::{Candidate, Compression, LayerRef, Source, SourceError, SourceKind};
pub use store::{ImageRecord, LayerRecord, PruneReport, Store, StoreError};
pub use sys::has_xattr;
pub use unpack::{unpack_layer, Neutralised, UnpackError, UnpackProblem, UnpackReport};
