//! Reading an image from the host: an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/*`), an `oci-archive` (a tar of that layout) or a `docker-archive` (`docker save`:
//! `manifest.json`, `<id>.json` configs, `<id>/layer.tar`). An archive is never unpacked: its
//! members are indexed once (offset and size of each regular file) and read in place.
//!
//! Every manifest and config is read whole (at most [`JSON_LIMIT`]) and verified against its digest
//! before it is parsed; a layer is verified while it is unpacked (see `store`). `index.json` and
//! docker's `manifest.json` are the roots: nothing names their digest.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use super::digest::{BlobDigest, DigestError};
use super::reference::{name_matches, Selector};

/// Largest JSON document (index, manifest, config) read into memory.
pub const JSON_LIMIT: u64 = 16 << 20;

const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Which format a source is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// An OCI image layout directory.
    Layout,
    /// A tar of an OCI image layout.
    OciArchive,
    /// `docker save` output.
    DockerArchive,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One layer of a candidate image.
#[derive(Debug, Clone)]
pub struct LayerRef {
    /// The member of the source holding the blob (`blobs/sha256/<hex>`, `<id>/layer.tar`).
    pub member: String,
    /// The blob's digest as stored (compressed); for a docker-archive, the diff id.
    pub digest: BlobDigest,
    /// The descriptor's size, when there is a descriptor.
    pub size: Option<u64>,
    pub compression: Compression,
    /// The digest of the uncompressed tar (the config's `rootfs.diff_ids`): the layer's key in the
    /// store.
    pub diff_id: BlobDigest,
}

/// One image a source holds.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Names and tags the source gives it (ref.name annotations, docker's RepoTags).
    pub names: Vec<String>,
    /// The manifest's digest (OCI sources only).
    pub manifest_digest: Option<BlobDigest>,
    /// The config's digest: the image's id, as docker shows it.
    pub config_digest: BlobDigest,
    /// The config's bytes, verified.
    pub config_bytes: Vec<u8>,
    pub config: ImageConfiguration,
    /// Lowest first.
    pub layers: Vec<LayerRef>,
}

/// A source could not be read, or does not hold the image asked for.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read image {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is neither an OCI image layout (no index.json), an oci-archive nor a docker-archive")]
    NotAnImage { path: PathBuf },
    #[error("image {path}: {member} is missing")]
    Missing { path: PathBuf, member: String },
    #[error("image {path}: {member} is larger than {JSON_LIMIT} bytes")]
    TooLarge { path: PathBuf, member: String },
    #[error("image {path}: {member}: {source}")]
    Json {
        path: PathBuf,
        member: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("image {path}: {source}")]
    Digest { path: PathBuf, source: DigestError },
    #[error("image {path}: layer {digest} has media type {media_type}, which hybox cannot unpack")]
    LayerMediaType {
        path: PathBuf,
        digest: String,
        media_type: String,
    },
    #[error("image {path}: the config lists {diff_ids} diff ids for {layers} layers")]
    LayerCount {
        path: PathBuf,
        layers: usize,
        diff_ids: usize,
    },
    #[error("image {path} holds no image matching {selector} (it has: {available})")]
    NoMatch {
        path: PathBuf,
        selector: Selector,
        available: String,
    },
    #[error("image {path} holds {count} images ({available}): name one with PATH:TAG or PATH@sha256:DIGEST")]
    Ambiguous {
        path: PathBuf,
        count: usize,
        available: String,
    },
}

enum Backing {
    Dir(PathBuf),
    /// member name → (offset of the data in the archive, size)
    Tar(HashMap<String, (u64, u64)>),
}

/// An opened image source.
pub struct Source {
    pub kind: SourceKind,
    pub path: PathBuf,
    backing: Backing,
}

/// docker's manifest.json: a list of images. Not an OCI type, so not in oci-spec.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl Source {
    /// Opens a layout directory or indexes an archive.
    pub fn open(path: &Path) -> Result<Source, SourceError> {
        let io_err = |source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if meta.is_dir() {
            if !path.join("index.json").is_file() {
                return Err(SourceError::NotAnImage {
                    path: path.to_path_buf(),
                });
            }
            return Ok(Source {
                kind: SourceKind::Layout,
                path: path.to_path_buf(),
                backing: Backing::Dir(path.to_path_buf()),
            });
        }
        let members = index_tar(path).map_err(|_| SourceError::NotAnImage {
            path: path.to_path_buf(),
        })?;
        // docker save since 25 writes an OCI layout and a manifest.json: read it as OCI.
        let kind = if members.contains_key("index.json") {
            SourceKind::OciArchive
        } else if members.contains_key("manifest.json") {
            SourceKind::DockerArchive
        } else {
            return Err(SourceError::NotAnImage {
                path: path.to_path_buf(),
            });
        };
        Ok(Source {
            kind,
            path: path.to_path_buf(),
            backing: Backing::Tar(members),
        })
    }

    fn missing(&self, member: &str) -> SourceError {
        SourceError::Missing {
            path: self.path.clone(),
            member: member.to_string(),
        }
    }

    /// A stream of one member, and its size.
    pub fn open_member(&self, member: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError> {
        let io_err = |source| SourceError::Io {
            path: self.path.clone(),
            source,
        };
        match &self.backing {
            Backing::Dir(dir) => {
                // Member names are built from checked digests or fixed names, never from input.
                let f = File::open(dir.join(member)).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => self.missing(member),
                    _ => io_err(e),
                })?;
                let len = f.metadata().map_err(io_err)?.len();
                Ok((Box::new(f), len))
            }
            Backing::Tar(members) => {
                let &(offset, size) = members.get(member).ok_or_else(|| self.missing(member))?;
                let mut f = File::open(&self.path).map_err(io_err)?;
                f.seek(SeekFrom::Start(offset)).map_err(io_err)?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// A small member, whole.
    fn read_member(&self, member: &str) -> Result<Vec<u8>, SourceError> {
        let (r, len) = self.open_member(member)?;
        if len > JSON_LIMIT {
            return Err(SourceError::TooLarge {
                path: self.path.clone(),
                member: member.to_string(),
            });
        }
        let mut buf = Vec::with_capacity(len as usize);
        r.take(JSON_LIMIT)
            .read_to_end(&mut buf)
            .map_err(|source| SourceError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(buf)
    }

    /// A blob of the layout, verified against its digest and size.
    fn read_blob(&self, digest: &BlobDigest, size: Option<u64>) -> Result<Vec<u8>, SourceError> {
        let member = blob_member(digest);
        let bytes = self.read_member(&member)?;
        digest
            .verify(&member, &bytes, size)
            .map_err(|source| SourceError::Digest {
                path: self.path.clone(),
                source,
            })?;
        Ok(bytes)
    }

    fn json_err(
        &self,
        member: &str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> SourceError {
        SourceError::Json {
            path: self.path.clone(),
            member: member.to_string(),
            source: Box::new(e),
        }
    }

    fn digest(&self, s: &str) -> Result<BlobDigest, SourceError> {
        BlobDigest::parse(s).map_err(|source| SourceError::Digest {
            path: self.path.clone(),
            source,
        })
    }

    /// Every image the source holds.
    pub fn candidates(&self) -> Result<Vec<Candidate>, SourceError> {
        match self.kind {
            SourceKind::Layout | SourceKind::OciArchive => self.oci_candidates(),
            SourceKind::DockerArchive => self.docker_candidates(),
        }
    }

    /// The image the selector names.
    pub fn select(&self, selector: &Selector) -> Result<Candidate, SourceError> {
        let mut all = self.candidates()?;
        let available = all
            .iter()
            .map(|c| match c.names.first() {
                Some(n) => n.clone(),
                None => c.config_digest.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let pos = match selector {
            Selector::Only if all.len() == 1 => Some(0),
            Selector::Only => {
                return Err(SourceError::Ambiguous {
                    path: self.path.clone(),
                    count: all.len(),
                    available,
                })
            }
            Selector::Tag(t) => all
                .iter()
                .position(|c| c.names.iter().any(|n| name_matches(n, t))),
            Selector::Digest(d) => all
                .iter()
                .position(|c| c.manifest_digest.as_ref() == Some(d) || &c.config_digest == d),
        };
        match pos {
            Some(i) => Ok(all.swap_remove(i)),
            None => Err(SourceError::NoMatch {
                path: self.path.clone(),
                selector: selector.clone(),
                available,
            }),
        }
    }

    fn oci_candidates(&self) -> Result<Vec<Candidate>, SourceError> {
        let bytes = self.read_member("index.json")?;
        let index =
            ImageIndex::from_reader(&bytes[..]).map_err(|e| self.json_err("index.json", e))?;
        let mut out = Vec::new();
        for m in index.manifests() {
            let digest = self.digest(m.digest().as_ref())?;
            let mut names = Vec::new();
            if let Some(a) = m.annotations() {
                for key in [ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME] {
                    if let Some(n) = a.get(key) {
                        if !names.contains(n) {
                            names.push(n.clone());
                        }
                    }
                }
            }
            let manifest_digest = match m.media_type() {
                // A nested index (multi-platform): the manifest for this host's platform.
                MediaType::ImageIndex => {
                    let nested = self.read_blob(&digest, Some(m.size()))?;
                    let member = blob_member(&digest);
                    let nested = ImageIndex::from_reader(&nested[..])
                        .map_err(|e| self.json_err(&member, e))?;
                    let host = nested.manifests().iter().find(|d| {
                        d.platform().as_ref().is_none_or(|p| {
                            p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
                        })
                    });
                    match host {
                        Some(d) => (self.digest(d.digest().as_ref())?, d.size()),
                        None => continue,
                    }
                }
                _ => (digest, m.size()),
            };
            out.push(self.oci_image(names, &manifest_digest.0, manifest_digest.1)?);
        }
        Ok(out)
    }

    fn oci_image(
        &self,
        names: Vec<String>,
        manifest_digest: &BlobDigest,
        size: u64,
    ) -> Result<Candidate, SourceError> {
        let member = blob_member(manifest_digest);
        let bytes = self.read_blob(manifest_digest, Some(size))?;
        let manifest =
            ImageManifest::from_reader(&bytes[..]).map_err(|e| self.json_err(&member, e))?;
        let config_digest = self.digest(manifest.config().digest().as_ref())?;
        let config_bytes = self.read_blob(&config_digest, Some(manifest.config().size()))?;
        let config = ImageConfiguration::from_reader(&config_bytes[..])
            .map_err(|e| self.json_err(&blob_member(&config_digest), e))?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(SourceError::LayerCount {
                path: self.path.clone(),
                layers: manifest.layers().len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut layers = Vec::new();
        for (l, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let digest = self.digest(l.digest().as_ref())?;
            let media_type = l.media_type().to_string();
            let compression = match l.media_type() {
                MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Compression::None,
                MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
                    Compression::Gzip
                }
                MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
                    Compression::Zstd
                }
                _ => match media_type.as_str() {
                    "application/vnd.docker.image.rootfs.diff.tar.gzip"
                    | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                        Compression::Gzip
                    }
                    "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
                    _ => {
                        return Err(SourceError::LayerMediaType {
                            path: self.path.clone(),
                            digest: digest.to_string(),
                            media_type,
                        })
                    }
                },
            };
            layers.push(LayerRef {
                member: blob_member(&digest),
                digest,
                size: Some(l.size()),
                compression,
                diff_id: self.digest(diff_id)?,
            });
        }
        Ok(Candidate {
            names,
            manifest_digest: Some(manifest_digest.clone()),
            config_digest,
            config_bytes,
            config,
            layers,
        })
    }

    fn docker_candidates(&self) -> Result<Vec<Candidate>, SourceError> {
        let bytes = self.read_member("manifest.json")?;
        let list: Vec<DockerManifest> =
            serde_json::from_slice(&bytes).map_err(|e| self.json_err("manifest.json", e))?;
        let mut out = Vec::new();
        for m in list {
            let config_bytes = self.read_member(&m.config)?;
            let config_digest = BlobDigest::of(&config_bytes);
            // The config's name is its digest (`<hex>.json`, or `blobs/sha256/<hex>` since docker
            // 25): a config whose bytes do not match its name is refused.
            let named = m
                .config
                .trim_end_matches(".json")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            let expected = self.digest(&format!("sha256:{named}"))?;
            expected
                .verify(&m.config, &config_bytes, None)
                .map_err(|source| SourceError::Digest {
                    path: self.path.clone(),
                    source,
                })?;
            let config = ImageConfiguration::from_reader(&config_bytes[..])
                .map_err(|e| self.json_err(&m.config, e))?;
            let diff_ids = config.rootfs().diff_ids();
            if diff_ids.len() != m.layers.len() {
                return Err(SourceError::LayerCount {
                    path: self.path.clone(),
                    layers: m.layers.len(),
                    diff_ids: diff_ids.len(),
                });
            }
            let mut layers = Vec::new();
            for (member, diff_id) in m.layers.iter().zip(diff_ids) {
                let diff_id = self.digest(diff_id)?;
                layers.push(LayerRef {
                    member: member.clone(),
                    // docker save writes the uncompressed tar: its digest is the diff id.
                    digest: diff_id.clone(),
                    size: None,
                    compression: Compression::None,
                    diff_id,
                });
            }
            out.push(Candidate {
                names: m.repo_tags.unwrap_or_default(),
                manifest_digest: None,
                config_digest,
                config_bytes,
                config,
                layers,
            });
        }
        Ok(out)
    }
}

fn blob_member(d: &BlobDigest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Offsets and sizes of an archive's regular files, by normalised name (no leading `./`).
fn index_tar(path: &Path) -> io::Result<HashMap<String, (u64, u64)>> {
    let mut archive = tar::Archive::new(File::open(path)?);
    let mut members = HashMap::new();
    for entry in archive.entries()? {
        let entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = name.trim_start_matches("./").to_string();
        members.insert(name, (entry.raw_file_position(), entry.size()));
    }
    if members.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "empty or not a tar",
        ));
    }
    Ok(members)
}
