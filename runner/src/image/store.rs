//! The content-addressed image store (docs/images.md, "The store"):
//!
//! ```text
//! ROOT/                       0711: searchable, not listable (a run's root must be reachable by the
//!                             sandbox's unprivileged host id for its binds)
//!   lock                      flock: shared by imports and runs, exclusive for rm and prune
//!   records.lock              flock: exclusive while image records change
//!   layers/sha256/<diff_id>/  one unpacked layer, shared by every image that has it (0700)
//!       root/                 the tree, in overlayfs's form (whiteouts as 0/0 char devices)
//!       layer.json            what the unpack did (LayerRecord); written last, so it marks a
//!                             complete layer
//!   images/<config hex>.json  one image (ImageRecord): its names, config and layer list
//!   tmp/                      layers being unpacked (same filesystem: the rename into layers/ is
//!                             atomic, so concurrent imports of one layer never see half of it)
//!   run/                      the roots of running containers (see `root`)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::config::ImageConfig;
use super::digest::{BlobDigest, DigestError, Verifier};
use super::reference::{name_matches, Selector};
use super::source::{Candidate, Compression, LayerRef, Source, SourceError, SourceKind};
use super::unpack::{unpack_layer, UnpackError, UnpackReport};

/// One unpacked layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    pub diff_id: BlobDigest,
    /// The blob it was unpacked from (compressed digest).
    pub blob: BlobDigest,
    pub compression: Compression,
    pub unpack: UnpackReport,
}

/// One image in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config's digest.
    pub id: BlobDigest,
    pub names: Vec<String>,
    pub manifest_digest: Option<BlobDigest>,
    pub source: SourceKind,
    pub config: ImageConfig,
    /// Diff ids, lowest layer first.
    pub layers: Vec<BlobDigest>,
    /// Bytes of the layer blobs as imported.
    pub size: u64,
}

/// What prune removed.
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub layers: Vec<BlobDigest>,
    pub runs: Vec<String>,
    pub tmp: usize,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image store {path}: {step}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("image {image}: {source}")]
    Unpack {
        image: String,
        #[source]
        source: UnpackError,
    },
    #[error("image {image}: layer {layer}: {source}")]
    Digest {
        image: String,
        layer: BlobDigest,
        #[source]
        source: DigestError,
    },
    #[error("no image {0:?} in the store (hybox image ls lists them)")]
    NotFound(String),
    #[error("{name:?} names {count} images in the store: use a longer id")]
    Ambiguous { name: String, count: usize },
    #[error("image store {path}: {file} is corrupt: {source}")]
    Record {
        path: PathBuf,
        file: String,
        source: serde_json::Error,
    },
}

/// The image store at one root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held store lock (released when dropped).
pub struct StoreLock(#[allow(dead_code)] Flock<File>);

impl Store {
    /// `/var/lib/hybox` as root, else `$XDG_DATA_HOME/hybox` (`~/.local/share/hybox`).
    pub fn default_root() -> PathBuf {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/var/lib/hybox");
        }
        match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d).join("hybox"),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
                .join(".local/share/hybox"),
        }
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let s = Store {
            root: root.to_path_buf(),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(|e| s.io("create the store", e))?;
        for (d, mode) in [
            ("layers/sha256", 0o700),
            ("images", 0o700),
            ("tmp", 0o700),
            ("run", 0o711),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(root.join(d))
                .map_err(|e| s.io("create the store's directories", e))?;
        }
        // `layers` was created with `layers/sha256` (mode of the leaf only): make it private too.
        fs::set_permissions(root.join("layers"), fs::Permissions::from_mode(0o700))
            .map_err(|e| s.io("chmod layers", e))?;
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn io(&self, step: &'static str, source: io::Error) -> StoreError {
        StoreError::Io {
            path: self.root.clone(),
            step,
            source,
        }
    }

    fn flock(&self, name: &str, arg: FlockArg) -> Result<StoreLock, StoreError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(name))
            .map_err(|e| self.io("open the lock file", e))?;
        Flock::lock(f, arg)
            .map(StoreLock)
            .map_err(|(_, errno)| self.io("flock", io::Error::from(errno)))
    }

    /// Held by imports and runs: layers in use are not pruned meanwhile.
    pub fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        self.flock("lock", FlockArg::LockShared)
    }
    fn lock_exclusive(&self) -> Result<StoreLock, StoreError> {
        self.flock("lock", FlockArg::LockExclusive)
    }

    /// The unpacked tree of a layer (an overlayfs lower directory).
    pub fn layer_root(&self, diff_id: &BlobDigest) -> PathBuf {
        self.layer_dir(diff_id).join("root")
    }
    fn layer_dir(&self, diff_id: &BlobDigest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }
    pub(crate) fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// The layer's record, if it is in the store.
    pub fn layer(&self, diff_id: &BlobDigest) -> Result<Option<LayerRecord>, StoreError> {
        let file = self.layer_dir(diff_id).join("layer.json");
        match fs::read(&file) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Record {
                        path: self.root.clone(),
                        file: file.display().to_string(),
                        source,
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("read a layer record", e)),
        }
    }

    /// Imports the image `selector` picks from `path`. Returns the record and, for each layer,
    /// whether it was already in the store (shared with another image, or imported before).
    pub fn import(
        &self,
        path: &Path,
        selector: &Selector,
    ) -> Result<(ImageRecord, Vec<bool>), StoreError> {
        let source = Source::open(path)?;
        let candidate = source.select(selector)?;
        let _lock = self.lock_shared()?;
        self.import_candidate(&source, candidate)
    }

    fn import_candidate(
        &self,
        source: &Source,
        c: Candidate,
    ) -> Result<(ImageRecord, Vec<bool>), StoreError> {
        let image = c
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| format!("{}@{}", source.path.display(), c.config_digest));
        let mut reused = Vec::new();
        let mut size = 0;
        for layer in &c.layers {
            let (rec, was_there) = self.ensure_layer(source, layer, &image)?;
            size += layer.size.unwrap_or(rec.unpack.files);
            reused.push(was_there);
        }
        let record = ImageRecord {
            id: c.config_digest.clone(),
            names: c.names.clone(),
            manifest_digest: c.manifest_digest.clone(),
            source: source.kind,
            config: ImageConfig::from_oci(&c.config),
            layers: c.layers.iter().map(|l| l.diff_id.clone()).collect(),
            size,
        };
        let _records = self.flock("records.lock", FlockArg::LockExclusive)?;
        // A name belongs to one image: importing `x:latest` again moves the name to the new image.
        for mut other in self.images()? {
            if other.id != record.id && other.names.iter().any(|n| record.names.contains(n)) {
                other.names.retain(|n| !record.names.contains(n));
                self.write_record(&other)?;
            }
        }
        let mut record = record;
        if let Some(old) = self.read_record(&record.id)? {
            for n in old.names {
                if !record.names.contains(&n) {
                    record.names.push(n);
                }
            }
        }
        self.write_record(&record)?;
        Ok((record, reused))
    }

    /// Unpacks a layer unless the store has it: into `tmp/`, verified, then renamed into place.
    fn ensure_layer(
        &self,
        source: &Source,
        layer: &LayerRef,
        image: &str,
    ) -> Result<(LayerRecord, bool), StoreError> {
        if let Some(rec) = self.layer(&layer.diff_id)? {
            return Ok((rec, true));
        }
        let tmp = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(|e| self.io("create a temporary layer directory", e))?
            .keep();
        let result = self.unpack_into(source, layer, image, &tmp);
        let record = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = remove_tree(&tmp);
                return Err(e);
            }
        };
        match fs::rename(&tmp, self.layer_dir(&layer.diff_id)) {
            Ok(()) => Ok((record, false)),
            // Another import of the same layer finished first: its copy is as good as ours.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                let _ = remove_tree(&tmp);
                Ok((record, true))
            }
            Err(e) => {
                let _ = remove_tree(&tmp);
                Err(self.io("rename an unpacked layer into the store", e))
            }
        }
    }

    fn unpack_into(
        &self,
        source: &Source,
        layer: &LayerRef,
        image: &str,
        tmp: &Path,
    ) -> Result<LayerRecord, StoreError> {
        let root = tmp.join("root");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&root)
            .map_err(|e| self.io("create a layer root", e))?;
        let (blob, _) = source.open_member(&layer.member)?;
        let mut raw = Verifier::new(blob);
        let raw_check = raw.handle();
        let digest_err = |source| StoreError::Digest {
            image: image.to_string(),
            layer: layer.digest.clone(),
            source,
        };
        let read_err = |e| StoreError::Io {
            path: source.path.clone(),
            step: "read a layer",
            source: e,
        };
        let report = {
            let decoded: Box<dyn Read + '_> = match layer.compression {
                Compression::None => Box::new(&mut raw),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut raw)),
                Compression::Zstd => Box::new(
                    ruzstd::decoding::StreamingDecoder::new(&mut raw)
                        .map_err(|e| read_err(io::Error::other(e.to_string())))?,
                ),
            };
            let mut diff = Verifier::new(decoded);
            let diff_check = diff.handle();
            let report =
                unpack_layer(&mut diff, &root, layer.digest.as_str()).map_err(|source| {
                    StoreError::Unpack {
                        image: image.to_string(),
                        source,
                    }
                })?;
            io::copy(&mut diff, &mut io::sink()).map_err(read_err)?;
            diff_check
                .check("the uncompressed layer (its diff id)", &layer.diff_id, None)
                .map_err(digest_err)?;
            report
        };
        io::copy(&mut raw, &mut io::sink()).map_err(read_err)?;
        raw_check
            .check("the layer blob", &layer.digest, layer.size)
            .map_err(digest_err)?;
        let record = LayerRecord {
            diff_id: layer.diff_id.clone(),
            blob: layer.digest.clone(),
            compression: layer.compression,
            unpack: report,
        };
        let json = serde_json::to_vec_pretty(&record).expect("a layer record serialises");
        fs::write(tmp.join("layer.json"), json).map_err(|e| self.io("write a layer record", e))?;
        Ok(record)
    }

    fn record_path(&self, id: &BlobDigest) -> PathBuf {
        self.root.join("images").join(format!("{}.json", id.hex()))
    }

    fn read_record(&self, id: &BlobDigest) -> Result<Option<ImageRecord>, StoreError> {
        let file = self.record_path(id);
        match fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| StoreError::Record {
                    path: self.root.clone(),
                    file: file.display().to_string(),
                    source,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("read an image record", e)),
        }
    }

    fn write_record(&self, r: &ImageRecord) -> Result<(), StoreError> {
        let file = self.record_path(&r.id);
        let tmp = file.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(r).expect("an image record serialises");
        fs::write(&tmp, json)
            .and_then(|()| fs::rename(&tmp, &file))
            .map_err(|e| self.io("write an image record", e))
    }

    /// Every image, sorted by first name.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut out = Vec::new();
        let dir = fs::read_dir(self.root.join("images")).map_err(|e| self.io("list images", e))?;
        for e in dir {
            let e = e.map_err(|e| self.io("list images", e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(id) = BlobDigest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            if let Some(r) = self.read_record(&id)? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.names.first().cmp(&b.names.first()).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The image a name, tag or id (a prefix of its hex, or `sha256:...`) names.
    pub fn find(&self, name: &str) -> Result<ImageRecord, StoreError> {
        let all = self.images()?;
        if let Some(r) = all.iter().find(|r| r.names.iter().any(|n| n == name)) {
            return Ok(r.clone());
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        let is_hex = hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        let matches: Vec<&ImageRecord> = all
            .iter()
            .filter(|r| {
                (is_hex && r.id.hex().starts_with(hex))
                    || r.names
                        .iter()
                        .any(|n| name_matches(n, name) && name.contains(':'))
                    || r.names.iter().any(|n| n == &format!("{name}:latest"))
            })
            .collect();
        match matches.len() {
            0 => Err(StoreError::NotFound(name.to_string())),
            1 => Ok(matches[0].clone()),
            count => Err(StoreError::Ambiguous {
                name: name.to_string(),
                count,
            }),
        }
    }

    /// Removes an image's record (its layers stay until `prune`, which removes unused ones).
    pub fn remove(&self, name: &str) -> Result<ImageRecord, StoreError> {
        let _records = self.flock("records.lock", FlockArg::LockExclusive)?;
        let r = self.find(name)?;
        fs::remove_file(self.record_path(&r.id))
            .map_err(|e| self.io("remove an image record", e))?;
        Ok(r)
    }

    /// Removes the layers no image uses, abandoned temporary layers, and the roots of runs whose
    /// hybox died (see `root`). Waits for imports and runs in progress.
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        let _lock = self.lock_exclusive()?;
        let mut report = PruneReport::default();
        let used: std::collections::HashSet<BlobDigest> =
            self.images()?.into_iter().flat_map(|r| r.layers).collect();
        for e in
            fs::read_dir(self.root.join("layers/sha256")).map_err(|e| self.io("list layers", e))?
        {
            let e = e.map_err(|e| self.io("list layers", e))?;
            let Ok(d) = BlobDigest::parse(&format!("sha256:{}", e.file_name().to_string_lossy()))
            else {
                continue;
            };
            if !used.contains(&d) {
                remove_tree(&e.path()).map_err(|e| self.io("remove a layer", e))?;
                report.layers.push(d);
            }
        }
        for e in fs::read_dir(self.root.join("tmp")).map_err(|e| self.io("list tmp", e))? {
            let e = e.map_err(|e| self.io("list tmp", e))?;
            remove_tree(&e.path()).map_err(|e| self.io("remove a temporary layer", e))?;
            report.tmp += 1;
        }
        report.runs = super::root::remove_dead_runs(self)?;
        Ok(report)
    }
}

/// Removes a tree without following symlinks, making each directory writable first (a layer may
/// hold 0555 directories, which stop a non-root owner from removing what is inside).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    for e in fs::read_dir(path)? {
        remove_tree(&e?.path())?;
    }
    fs::remove_dir(path)
}
