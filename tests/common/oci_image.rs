//! Test images built locally (no registry is reachable): from a list of files and an image config,
//! an OCI image layout directory, an `oci-archive` tar of it (for `ctr images import`) and a
//! `docker-archive` tar in `docker save`'s format (for `docker load`).
//!
//! Everything is deterministic: entries sorted, mtime 0, uid/gid 0, gzip without a timestamp, so one
//! input gives the same digests every time.
//!
//! Needs the dev-dependencies `tar`, `flate2`, and the runner's `sha2` and `serde_json`. Zstd layers
//! are compressed by the `zstd` command (Debian's zstd), so no zstd crate is needed.
//!
//! ```ignore
//! let image = Image::new("hybox.test/hello:latest")
//!     .file("hello", std::fs::read(hello)?, 0o755)
//!     .config(Config { entrypoint: vec!["/hello".into()], ..Config::default() });
//! image.write_oci_archive(&dir.join("hello.oci.tar"))?;   // ctr -n NS images import hello.oci.tar
//! image.write_docker_archive(&dir.join("hello.docker.tar"))?; // docker load -i hello.docker.tar
//! ```
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The annotation the OCI image layout spec names for a manifest's reference (here: the tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for the full image name, which `ctr images import` prefers to ref.name.
/// containerd 1.6 names the image by it; with only a tag-only ref.name it would be
/// `import-DATE:latest` unless `--base-name REPO` is given (a full ref in ref.name also works).
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The standard PATH that Docker and containerd give a process when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How layers are compressed in the OCI layout and oci-archive. The docker-archive always holds
/// plain `layer.tar` files, as `docker save` writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    /// Through the `zstd` command. containerd 1.6 unpacks zstd layers; dockerd 20.10 does not.
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// One entry of a layer. Parent directories that are not listed are added with mode 0755.
#[derive(Clone, Debug)]
pub enum Entry {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::File { path, .. } | Entry::Dir { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }
}

/// The image config's `config` object (the fields Docker and containerd turn into a process).
#[derive(Clone, Debug)]
pub struct Config {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` strings. The default holds [`DEFAULT_PATH`].
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid`, or a name (a name needs /etc/passwd in the image).
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// e.g. "SIGTERM"; `docker stop` reads it.
    pub stop_signal: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec![DEFAULT_PATH.to_string()],
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
            stop_signal: None,
        }
    }
}

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
        }
    }
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").expect("sha256 digest")
    }
    fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let mut s = String::from("sha256:");
    for b in Sha256::digest(bytes) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// An image to build: a name (`registry/repo:tag`; a registry-qualified name such as
/// `hybox.test/busybox:latest` reads the same in `ctr images ls` and `docker images`, while `busybox`
/// would become `docker.io/library/busybox:latest`), layers and a config.
#[derive(Clone, Debug)]
pub struct Image {
    pub name: String,
    pub layers: Vec<Vec<Entry>>,
    pub config: Config,
    pub compression: Compression,
    pub architecture: String,
    pub os: String,
    /// Layers given as raw tar bytes (by layer index), e.g. crafted attack tarballs.
    pub raw_layers: BTreeMap<usize, Vec<u8>>,
}

impl Image {
    pub fn new(name: &str) -> Self {
        Image {
            name: name.to_string(),
            layers: vec![Vec::new()],
            config: Config::default(),
            compression: Compression::Gzip,
            architecture: "amd64".into(),
            os: "linux".into(),
            raw_layers: BTreeMap::new(),
        }
    }

    /// An image of Debian's static busybox (`busybox-static`, /bin/busybox) with `/bin/sh` and the
    /// given applets as symlinks, plus /etc/passwd and /etc/group with root and nobody, /tmp and
    /// the mount points runtimes expect (/proc, /dev, /sys).
    pub fn busybox(name: &str, applets: &[&str]) -> io::Result<Self> {
        let busybox = std::fs::read("/bin/busybox")?;
        let mut image = Image::new(name)
            .file("bin/busybox", busybox, 0o755)
            .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(), 0o644)
            .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n".to_vec(), 0o644)
            .dir("tmp", 0o1777)
            .dir("root", 0o700);
        for d in ["proc", "dev", "sys", "etc", "run"] {
            image = image.dir(d, 0o755);
        }
        for applet in std::iter::once("sh").chain(applets.iter().copied()) {
            image = image.symlink(&format!("bin/{applet}"), "busybox");
        }
        image.config.cmd = vec!["/bin/sh".into()];
        Ok(image)
    }

    fn top(&mut self) -> &mut Vec<Entry> {
        self.layers.last_mut().expect("at least one layer")
    }

    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.top().push(Entry::File {
            path: path.into(),
            data: data.into(),
            mode,
        });
        self
    }
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.top().push(Entry::Dir {
            path: path.into(),
            mode,
        });
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.top().push(Entry::Symlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }
    /// Adds a layer of raw tar bytes (used as is, not sorted or completed), then starts a new
    /// layer for the entries added after it.
    pub fn raw_layer(mut self, tar: Vec<u8>) -> Self {
        let top = self.layers.len() - 1;
        if self.layers[top].is_empty() && !self.raw_layers.contains_key(&top) {
            self.raw_layers.insert(top, tar);
        } else {
            self.layers.push(Vec::new());
            self.raw_layers.insert(top + 1, tar);
        }
        self.layers.push(Vec::new());
        self
    }
    /// Drops a trailing empty layer (one a builder call left open).
    pub fn trim(mut self) -> Self {
        let top = self.layers.len() - 1;
        if top > 0 && self.layers[top].is_empty() && !self.raw_layers.contains_key(&top) {
            self.layers.pop();
        }
        self
    }
    /// Starts a new layer: the entries added after it go into it.
    pub fn new_layer(mut self) -> Self {
        self.layers.push(Vec::new());
        self
    }
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// `(repository, tag)` of the name; the tag defaults to `latest`.
    pub fn repo_tag(&self) -> (String, String) {
        let last = self.name.rsplit('/').next().unwrap_or("");
        match last.rfind(':') {
            Some(i) => {
                let cut = self.name.len() - last.len() + i;
                (
                    self.name[..cut].to_string(),
                    self.name[cut + 1..].to_string(),
                )
            }
            None => (self.name.clone(), "latest".to_string()),
        }
    }

    /// Builds every blob in memory.
    pub fn build(&self) -> io::Result<Built> {
        let (_, tag) = self.repo_tag();
        let mut blobs = BTreeMap::new();
        let mut layer_tars = Vec::new();
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (i, entries) in self.layers.iter().enumerate() {
            let tar = match self.raw_layers.get(&i) {
                Some(raw) => raw.clone(),
                None => layer_tar(entries)?,
            };
            diff_ids.push(sha256_digest(&tar));
            let compressed = compress(&tar, self.compression)?;
            let desc = Descriptor::of(self.compression.media_type(), &compressed);
            blobs.insert(desc.digest.clone(), compressed);
            layers.push(desc);
            layer_tars.push(tar);
        }
        let c = &self.config;
        let mut cfg = serde_json::Map::new();
        if !c.entrypoint.is_empty() {
            cfg.insert("Entrypoint".into(), json!(c.entrypoint));
        }
        if !c.cmd.is_empty() {
            cfg.insert("Cmd".into(), json!(c.cmd));
        }
        if !c.env.is_empty() {
            cfg.insert("Env".into(), json!(c.env));
        }
        if let Some(w) = &c.working_dir {
            cfg.insert("WorkingDir".into(), json!(w));
        }
        if let Some(u) = &c.user {
            cfg.insert("User".into(), json!(u));
        }
        if !c.labels.is_empty() {
            cfg.insert("Labels".into(), json!(c.labels));
        }
        if let Some(s) = &c.stop_signal {
            cfg.insert("StopSignal".into(), json!(s));
        }
        let history: Vec<Value> = self
            .layers
            .iter()
            .map(|_| json!({"created": EPOCH, "created_by": "hybox tests/common/oci_image.rs"}))
            .collect();
        let config_json = json!({
            "created": EPOCH,
            "architecture": self.architecture,
            "os": self.os,
            "config": Value::Object(cfg),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        let config_bytes = serde_json::to_vec(&config_json).expect("json");
        let config = Descriptor::of(MEDIA_CONFIG, &config_bytes);
        blobs.insert(config.digest.clone(), config_bytes.clone());
        let manifest_json = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.json(),
            "layers": layers.iter().map(Descriptor::json).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest_json).expect("json");
        let manifest = Descriptor::of(MEDIA_MANIFEST, &manifest_bytes);
        blobs.insert(manifest.digest.clone(), manifest_bytes);
        let mut mdesc = manifest.json();
        mdesc["annotations"] =
            json!({ANNOTATION_REF_NAME: tag, ANNOTATION_CONTAINERD_NAME: self.name});
        mdesc["platform"] = json!({"architecture": self.architecture, "os": self.os});
        let index = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [mdesc]});
        Ok(Built {
            name: self.name.clone(),
            index: serde_json::to_vec(&index).expect("json"),
            manifest,
            config,
            config_bytes,
            layers,
            diff_ids,
            layer_tars,
            blobs,
        })
    }

    /// Writes an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/*`).
    pub fn write_layout(&self, dir: &Path) -> io::Result<Built> {
        let built = self.build()?;
        built.write_layout(dir)?;
        Ok(built)
    }
    /// Writes an oci-archive: a tar of the layout, as `ctr images import` and skopeo read it.
    pub fn write_oci_archive(&self, path: &Path) -> io::Result<Built> {
        let built = self.build()?;
        built.write_oci_archive(path)?;
        Ok(built)
    }
    /// Writes a docker-archive, `docker save`'s format, as `docker load` reads it.
    pub fn write_docker_archive(&self, path: &Path) -> io::Result<Built> {
        let built = self.build()?;
        built.write_docker_archive(path)?;
        Ok(built)
    }
}

const EPOCH: &str = "1970-01-01T00:00:00Z";

/// A built image: its descriptors and every blob.
#[derive(Clone, Debug)]
pub struct Built {
    pub name: String,
    /// index.json's bytes.
    pub index: Vec<u8>,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub config_bytes: Vec<u8>,
    /// The compressed layers, as the manifest lists them.
    pub layers: Vec<Descriptor>,
    /// `sha256:` of each uncompressed layer tar (the config's rootfs.diff_ids).
    pub diff_ids: Vec<String>,
    pub layer_tars: Vec<Vec<u8>>,
    /// Every blob of the layout by digest: layers, config, manifest.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl Built {
    fn layout_files(&self) -> Vec<(String, &[u8])> {
        let mut files: Vec<(String, &[u8])> = vec![
            ("oci-layout".into(), LAYOUT.as_bytes()),
            ("index.json".into(), &self.index),
        ];
        for (digest, bytes) in &self.blobs {
            files.push((
                format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
                bytes,
            ));
        }
        files
    }

    pub fn write_layout(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        for (name, bytes) in self.layout_files() {
            std::fs::write(dir.join(name), bytes)?;
        }
        Ok(())
    }

    pub fn write_oci_archive(&self, path: &Path) -> io::Result<()> {
        let mut t = tar::Builder::new(Vec::new());
        for d in ["blobs/", "blobs/sha256/"] {
            append(
                &mut t,
                &Entry::Dir {
                    path: d.into(),
                    mode: 0o755,
                },
            )?;
        }
        for (name, bytes) in self.layout_files() {
            append(
                &mut t,
                &Entry::File {
                    path: name,
                    data: bytes.to_vec(),
                    mode: 0o644,
                },
            )?;
        }
        std::fs::write(path, t.into_inner()?)
    }

    pub fn write_docker_archive(&self, path: &Path) -> io::Result<()> {
        let (repo, tag) = Image {
            name: self.name.clone(),
            ..Image::new("")
        }
        .repo_tag();
        let mut t = tar::Builder::new(Vec::new());
        let config_name = format!("{}.json", self.config.hex());
        // docker save names each layer's directory by a v1 id; any unique hex is accepted on load.
        // Here: the chain of diff ids, like containerd's chain ID.
        let mut ids = Vec::new();
        let mut parent: Option<String> = None;
        for diff_id in &self.diff_ids {
            let id = match &parent {
                None => diff_id.trim_start_matches("sha256:").to_string(),
                Some(p) => sha256_digest(format!("sha256:{p} {diff_id}").as_bytes())
                    .trim_start_matches("sha256:")
                    .to_string(),
            };
            ids.push(id.clone());
            parent = Some(id);
        }
        let mut layer_paths = Vec::new();
        for (i, (id, tar)) in ids.iter().zip(&self.layer_tars).enumerate() {
            let mut v1 = json!({"id": id, "created": EPOCH});
            if i > 0 {
                v1["parent"] = json!(ids[i - 1]);
            }
            append(
                &mut t,
                &Entry::Dir {
                    path: format!("{id}/"),
                    mode: 0o755,
                },
            )?;
            append(
                &mut t,
                &Entry::File {
                    path: format!("{id}/VERSION"),
                    data: b"1.0".to_vec(),
                    mode: 0o644,
                },
            )?;
            append(
                &mut t,
                &Entry::File {
                    path: format!("{id}/json"),
                    data: serde_json::to_vec(&v1).expect("json"),
                    mode: 0o644,
                },
            )?;
            append(
                &mut t,
                &Entry::File {
                    path: format!("{id}/layer.tar"),
                    data: tar.clone(),
                    mode: 0o644,
                },
            )?;
            layer_paths.push(format!("{id}/layer.tar"));
        }
        append(
            &mut t,
            &Entry::File {
                path: config_name.clone(),
                data: self.config_bytes.clone(),
                mode: 0o644,
            },
        )?;
        let manifest =
            json!([{"Config": config_name, "RepoTags": [self.name], "Layers": layer_paths}]);
        append(
            &mut t,
            &Entry::File {
                path: "manifest.json".into(),
                data: serde_json::to_vec(&manifest).expect("json"),
                mode: 0o644,
            },
        )?;
        let repositories = json!({ repo: { tag: ids.last().cloned().unwrap_or_default() } });
        append(
            &mut t,
            &Entry::File {
                path: "repositories".into(),
                data: serde_json::to_vec(&repositories).expect("json"),
                mode: 0o644,
            },
        )?;
        std::fs::write(path, t.into_inner()?)
    }
}

const LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// A layer's uncompressed tar: sorted, with every missing parent directory, owner 0:0, mtime 0.
pub fn layer_tar(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut all: BTreeMap<String, Entry> = BTreeMap::new();
    for e in entries {
        let path = clean(e.path())?;
        for anc in Path::new(&path).ancestors().skip(1) {
            if anc.as_os_str().is_empty() {
                break;
            }
            let p = anc.to_str().expect("utf-8").to_string();
            all.entry(p.clone()).or_insert(Entry::Dir {
                path: p,
                mode: 0o755,
            });
        }
        let mut e = e.clone();
        match &mut e {
            Entry::File { path: p, .. }
            | Entry::Dir { path: p, .. }
            | Entry::Symlink { path: p, .. } => *p = path.clone(),
        }
        all.insert(path, e);
    }
    let mut t = tar::Builder::new(Vec::new());
    for e in all.values() {
        append(&mut t, e)?;
    }
    t.into_inner()
}

/// A path inside the image: relative, no `..`, no trailing slash.
fn clean(path: &str) -> io::Result<String> {
    let p = path.trim_start_matches('/').trim_end_matches('/');
    if p.is_empty() || p.split('/').any(|c| c == ".." || c == "." || c.is_empty()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad image path {path:?}"),
        ));
    }
    Ok(p.to_string())
}

fn append<W: Write>(t: &mut tar::Builder<W>, e: &Entry) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    match e {
        Entry::File { path, data, mode } => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            t.append_data(&mut h, path, data.as_slice())
        }
        Entry::Dir { path, mode } => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(*mode);
            h.set_size(0);
            let p = if path.ends_with('/') {
                path.clone()
            } else {
                format!("{path}/")
            };
            t.append_data(&mut h, p, io::empty())
        }
        Entry::Symlink { path, target } => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            t.append_link(&mut h, path, target)
        }
    }
}

fn compress(tar: &[u8], c: Compression) -> io::Result<Vec<u8>> {
    match c {
        Compression::None => Ok(tar.to_vec()),
        Compression::Gzip => {
            // GzEncoder::new writes mtime 0 and no file name: deterministic.
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(tar)?;
            gz.finish()
        }
        Compression::Zstd => {
            let mut child = Command::new("zstd")
                .args(["-q", "-c", "-3", "--no-progress"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("zstd layers need the zstd command: {e}"))
                })?;
            let mut stdin = child.stdin.take().expect("piped");
            let input = tar.to_vec();
            let writer = std::thread::spawn(move || stdin.write_all(&input));
            let out = child.wait_with_output()?;
            writer.join().expect("writer thread")?;
            if !out.status.success() {
                return Err(io::Error::other(format!("zstd failed: {}", out.status)));
            }
            Ok(out.stdout)
        }
    }
}

// ---- crafted (attack) layers ----

/// One raw tar entry: the name and link name are written into the header as bytes, bypassing the
/// checks the tar crate's builder makes, as an attacker's tool would.
pub struct Raw<'a> {
    pub name: &'a [u8],
    pub kind: tar::EntryType,
    pub link: &'a [u8],
    pub data: &'a [u8],
    pub mode: u32,
}

pub fn raw(name: &str, kind: tar::EntryType) -> Raw<'_> {
    Raw {
        name: name.as_bytes(),
        kind,
        link: b"",
        data: b"",
        mode: 0o644,
    }
}

pub fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name);
            old.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}
