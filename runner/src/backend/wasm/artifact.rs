//! hybox's precompiled artifacts and the private compile cache.
//!
//! Deserialising precompiled wasmtime code is unsafe by nature (the bytes are machine code that is
//! mapped executable), so hybox only ever deserialises bytes it wrote itself, and proves it: every
//! artifact carries an HMAC-SHA256 over its header and payload, keyed with a per-host secret that
//! lives `0600` in the private cache directory. Anything whose MAC does not verify with the local key
//! (a tampered or corrupted cache entry, an artifact from another host, a plain `.cwasm`) is refused
//! before wasmtime sees a byte of it.
//!
//! Layout of an artifact (also of every cache entry):
//! ```text
//! magic "\0hyboxc1" | u32 LE header length | header (JSON) | HMAC-SHA256 (32 bytes) | payload
//! ```
//! The MAC covers magic, length, header and payload. The header names the kind (module or
//! component), the engine fingerprint the payload was compiled for, and the sha256 of the source.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::host::HostConfig;
use crate::workload::HYBOX_ARTIFACT_MAGIC;

/// Why the cache or an artifact could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The cache directory is unsafe or cannot be made private.
    #[error("compile cache {path}: {why}")]
    CacheDir { path: String, why: String },
    #[error("{path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an artifact this host wrote (or they were altered).
    #[error("{path}: refused to load precompiled code: {why}")]
    Refused { path: String, why: String },
    /// Compiling or serialising the guest failed.
    #[error("{path}: {why}")]
    Compile { path: String, why: String },
}

/// Why the bytes of an artifact (or a cache entry) are not loaded.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not a hybox artifact (bad magic)")]
    BadMagic,
    #[error("truncated header")]
    TruncatedHeader,
    #[error("bad header length")]
    BadHeaderLength,
    #[error("truncated artifact")]
    Truncated,
    #[error("unreadable header: {0}")]
    Header(#[source] serde_json::Error),
    #[error(
        "its MAC does not verify with this host's key (corrupted, tampered, or written elsewhere)"
    )]
    Mac,
    /// Compiled for another engine configuration (wasmtime version, codegen flags, fuel on or off).
    #[error("built for engine configuration {found}, this run needs {needed} (recompile it)")]
    Engine { found: String, needed: String },
}

fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> ArtifactError {
    let path = path.display().to_string();
    move |source| ArtifactError::Io { path, op, source }
}

/// What an artifact holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Module,
    Component,
}

/// The authenticated header of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub kind: Kind,
    /// Hex sha256 of the engine fingerprint (wasmtime version + codegen settings).
    pub engine: String,
    /// Hex sha256 of the source bytes (binary or text) it was compiled from.
    pub source_sha256: String,
    /// The hybox version that wrote it.
    pub hybox: String,
}

/// One entry of the compile cache (`hybox cache list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheEntry {
    pub path: PathBuf,
    pub bytes: u64,
    /// `None` when the header cannot be parsed (such an entry would be refused and rebuilt).
    pub header: Option<Header>,
    pub modified: Option<SystemTime>,
}

const KEY_FILE: &str = "key";
const KEY_LEN: usize = 32;
const ENTRY_SUFFIX: &str = ".hyboxc";
const MAC_LEN: usize = 32;

/// The environment variable naming the compile cache directory (an absolute path), ahead of
/// `XDG_CACHE_HOME` and `HOME`: how an admin points `hybox cache list|clear` at `hybox-runc`'s
/// cache, and how containerd's environment gives the OCI runtime another one (docs/oci.md).
pub const CACHE_DIR_ENV: &str = "HYBOX_CACHE_DIR";

fn cache_dir_env() -> Option<PathBuf> {
    std::env::var_os(CACHE_DIR_ENV)
        .filter(|d| Path::new(d).is_absolute())
        .map(PathBuf::from)
}

/// The cache directory for this host configuration: `HostConfig.cache_dir`, else
/// `$HYBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/hybox`, else `$HOME/.cache/hybox`.
pub fn cache_dir(host: &HostConfig) -> Result<PathBuf, ArtifactError> {
    if let Some(d) = &host.cache_dir {
        return Ok(d.clone());
    }
    if let Some(d) = cache_dir_env() {
        return Ok(d);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| Path::new(x).is_absolute()) {
        return Ok(PathBuf::from(x).join("hybox"));
    }
    match std::env::var_os("HOME").filter(|h| Path::new(h).is_absolute()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache/hybox")),
        None => Err(ArtifactError::CacheDir {
            path: "(unset)".into(),
            why: "none of HYBOX_CACHE_DIR, XDG_CACHE_HOME, HOME is set to an absolute path; set HostConfig.cache_dir".into(),
        }),
    }
}

/// Where `hybox-runc` keeps its compile cache: `$HYBOX_CACHE_DIR`, else `/var/cache/hybox` when it
/// runs as root, else the user's cache (`$XDG_CACHE_HOME/hybox`, `$HOME/.cache/hybox`; a rootless
/// runtime). A runtime under a system containerd gets no `HOME` (systemd sets none), and one under a
/// containerd started from a shell gets root's: as root the cache must not depend on which, or every
/// wasm container of a node compiles its module again. `None` when nothing applies (the module is
/// compiled at each start; the report says so).
pub fn runtime_cache_dir() -> Option<PathBuf> {
    if let Some(d) = cache_dir_env() {
        return Some(d);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from(RUNTIME_ROOT_CACHE_DIR));
    }
    cache_dir(&HostConfig::default()).ok()
}

/// `hybox-runc`'s cache as root when [`CACHE_DIR_ENV`] is not set (the FHS's place for a system
/// program's cache; created `0700`, checked like any cache directory).
pub const RUNTIME_ROOT_CACHE_DIR: &str = "/var/cache/hybox";

/// Creates the cache directory `0700` if missing, and refuses one that is not a real directory owned
/// by us and closed to group and others (another user could plant code we would then map executable).
pub fn open_private_dir(dir: &Path) -> Result<(), ArtifactError> {
    let refuse = |why: String| ArtifactError::CacheDir {
        path: dir.display().to_string(),
        why,
    };
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io(parent, "create directory"))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(dir, "create directory")(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(io(dir, "stat"))?;
    if !meta.file_type().is_dir() {
        return Err(refuse("not a directory (symlinks are refused)".into()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(refuse(format!(
            "owned by uid {}, not by us (uid {euid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {:04o} lets group or others in; expected 0700 (chmod 700 it)",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The per-host secret, created on first use (32 random bytes, `0600`). Created under a temporary
/// name and hard-linked into place, so concurrent first runs agree on one key and nobody reads a
/// half-written one.
pub fn load_or_create_key(dir: &Path) -> Result<[u8; KEY_LEN], ArtifactError> {
    open_private_dir(dir)?;
    let path = dir.join(KEY_FILE);
    if let Some(k) = read_key(&path)? {
        return Ok(k);
    }
    let mut key = [0u8; KEY_LEN];
    getrandom(&mut key).map_err(io(&path, "getrandom"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".key-")
        .tempfile_in(dir)
        .map_err(io(dir, "create temp file"))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io(tmp.path(), "chmod"))?;
    tmp.write_all(&key).map_err(io(tmp.path(), "write"))?;
    tmp.as_file().sync_all().map_err(io(tmp.path(), "fsync"))?;
    match fs::hard_link(tmp.path(), &path) {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(&path)?.ok_or_else(|| ArtifactError::CacheDir {
                path: path.display().to_string(),
                why: "key vanished".into(),
            })
        }
        Err(e) => Err(io(&path, "link")(e)),
    }
}

fn read_key(path: &Path) -> Result<Option<[u8; KEY_LEN]>, ArtifactError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, "stat")(e)),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() || meta.uid() != euid || meta.mode() & 0o077 != 0 {
        return Err(ArtifactError::CacheDir {
            path: path.display().to_string(),
            why: "the key must be a regular file owned by us with mode 0600".into(),
        });
    }
    let bytes = fs::read(path).map_err(io(path, "read"))?;
    let key: [u8; KEY_LEN] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ArtifactError::CacheDir {
            path: path.display().to_string(),
            why: format!("expected a {KEY_LEN}-byte key, found {} bytes", bytes.len()),
        })?;
    Ok(Some(key))
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let n =
            // SAFETY: the pointer and length describe the unfilled tail of `buf`, which we own mutably.
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

fn mac(key: &[u8; KEY_LEN], prefix: &[u8], payload: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(prefix);
    m.update(payload);
    m
}

/// Serialises an artifact.
pub fn encode(key: &[u8; KEY_LEN], header: &Header, payload: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).expect("a header always serialises");
    let mut prefix = Vec::with_capacity(12 + h.len());
    prefix.extend_from_slice(HYBOX_ARTIFACT_MAGIC);
    prefix.extend_from_slice(&(h.len() as u32).to_le_bytes());
    prefix.extend_from_slice(&h);
    let tag = mac(key, &prefix, payload).finalize().into_bytes();
    let mut out = prefix;
    out.extend_from_slice(&tag);
    out.extend_from_slice(payload);
    out
}

/// Parses the header without authenticating anything (for listing only; never load on this basis).
pub fn peek_header(bytes: &[u8]) -> Result<Header, VerifyError> {
    split(bytes).map(|(h, ..)| h)
}

/// An artifact taken apart: header, the MAC'ed prefix, the MAC, the payload.
type Parts<'a> = (Header, &'a [u8], &'a [u8], &'a [u8]);

fn split(bytes: &[u8]) -> Result<Parts<'_>, VerifyError> {
    if !bytes.starts_with(HYBOX_ARTIFACT_MAGIC) {
        return Err(VerifyError::BadMagic);
    }
    let len_end = HYBOX_ARTIFACT_MAGIC.len() + 4;
    let len = bytes
        .get(HYBOX_ARTIFACT_MAGIC.len()..len_end)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(VerifyError::TruncatedHeader)?;
    let header_end = len_end
        .checked_add(len)
        .ok_or(VerifyError::BadHeaderLength)?;
    let mac_end = header_end
        .checked_add(MAC_LEN)
        .ok_or(VerifyError::BadHeaderLength)?;
    if bytes.len() < mac_end {
        return Err(VerifyError::Truncated);
    }
    let header: Header =
        serde_json::from_slice(&bytes[len_end..header_end]).map_err(VerifyError::Header)?;
    Ok((
        header,
        &bytes[..header_end],
        &bytes[header_end..mac_end],
        &bytes[mac_end..],
    ))
}

/// Authenticates an artifact with the local key and checks it was built for `engine`; returns the
/// header and the payload that may then be deserialised.
pub fn verify<'a>(
    key: &[u8; KEY_LEN],
    bytes: &'a [u8],
    engine: &str,
) -> Result<(Header, &'a [u8]), VerifyError> {
    let (header, prefix, tag, payload) = split(bytes)?;
    // verify_slice compares in constant time.
    mac(key, prefix, payload)
        .verify_slice(tag)
        .map_err(|_| VerifyError::Mac)?;
    if header.engine != engine {
        return Err(VerifyError::Engine {
            found: short(&header.engine).to_string(),
            needed: short(engine).to_string(),
        });
    }
    Ok((header, payload))
}

fn short(h: &str) -> &str {
    &h[..h.len().min(16)]
}

/// A file mapped read-only and private: its bytes straight from the page cache, without the fresh,
/// zeroed, charged pages a `read` into a buffer would fault in (for a cache entry of ~200 KB, that was
/// 0.38 ms of a one-shot run's load). For cache entries, whose MAC is verified on these bytes before
/// wasmtime copies them.
///
/// Another writer of the file could change the bytes between the check and the copy, or truncate it
/// (SIGBUS). The cache directory is private (0700) to hybox's user, and entries are replaced by
/// rename, never rewritten in place: only that user could, and it can change hybox itself.
pub struct MappedFile {
    ptr: *mut libc::c_void,
    len: usize,
}

impl MappedFile {
    pub fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = fs::File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
        if len == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "empty file",
            ));
        }
        // SAFETY: maps `len` bytes of an open file read-only and private at an address the kernel
        // picks; the mapping outlives the fd (closed on return) and is unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(MappedFile { ptr, len })
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until Drop.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; no slice of it outlives `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The cache file for a source hash and engine fingerprint.
pub fn entry_path(dir: &Path, source_sha256: &str, engine: &str) -> PathBuf {
    dir.join(format!("{source_sha256}-{}{ENTRY_SUFFIX}", short(engine)))
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io(dir, "create temp file"))?;
    tmp.write_all(bytes).map_err(io(tmp.path(), "write"))?;
    tmp.as_file().sync_all().map_err(io(tmp.path(), "fsync"))?;
    tmp.persist(path).map_err(|e| io(path, "rename")(e.error))?;
    Ok(())
}

/// Lists the compile cache (`hybox cache list`). A missing cache directory is an empty list.
pub fn cache_list(host: &HostConfig) -> Result<Vec<CacheEntry>, ArtifactError> {
    let dir = cache_dir(host)?;
    if !dir.exists() {
        return Ok(Vec::new());
    }
    open_private_dir(&dir)?;
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).map_err(io(&dir, "read directory"))? {
        let e = e.map_err(io(&dir, "read directory"))?;
        let path = e.path();
        if !path.to_string_lossy().ends_with(ENTRY_SUFFIX) {
            continue;
        }
        let meta = e.metadata().map_err(io(&path, "stat"))?;
        let mut head = vec![0u8; 4096];
        let n = fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .map_err(io(&path, "read"))?;
        out.push(CacheEntry {
            header: peek_header(&head[..n]).ok(),
            bytes: meta.len(),
            modified: meta.modified().ok(),
            path,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Removes every cache entry (`hybox cache clear`), keeping the key; returns the bytes freed.
pub fn cache_clear(host: &HostConfig) -> Result<u64, ArtifactError> {
    let mut freed = 0;
    for e in cache_list(host)? {
        fs::remove_file(&e.path).map_err(io(&e.path, "remove"))?;
        freed += e.bytes;
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            kind: Kind::Module,
            engine: "e".repeat(64),
            source_sha256: "s".repeat(64),
            hybox: "0".into(),
        }
    }

    #[test]
    fn round_trip_verifies_and_any_flipped_byte_is_refused() {
        let key = [7u8; KEY_LEN];
        let bytes = encode(&key, &header(), b"payload bytes");
        let (h, p) = verify(&key, &bytes, &"e".repeat(64)).unwrap();
        assert_eq!((h, p), (header(), &b"payload bytes"[..]));
        for i in HYBOX_ARTIFACT_MAGIC.len()..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(
                verify(&key, &bad, &"e".repeat(64)).is_err(),
                "flipped byte {i} accepted"
            );
        }
        assert!(matches!(
            verify(&[8u8; KEY_LEN], &bytes, &"e".repeat(64)),
            Err(VerifyError::Mac)
        ));
        let wrong_engine = verify(&key, &bytes, &"f".repeat(64)).unwrap_err();
        assert!(matches!(wrong_engine, VerifyError::Engine { .. }));
        assert!(wrong_engine.to_string().contains("engine"));
    }

    #[test]
    fn private_dir_refuses_group_writable_and_key_is_stable() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("c");
        let k1 = load_or_create_key(&d).unwrap();
        assert_eq!(load_or_create_key(&d).unwrap(), k1);
        assert_eq!(
            fs::metadata(d.join(KEY_FILE)).unwrap().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&d, fs::Permissions::from_mode(0o770)).unwrap();
        assert!(open_private_dir(&d)
            .unwrap_err()
            .to_string()
            .contains("group or others"));
    }
}
