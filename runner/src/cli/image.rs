//! `hybox image ...`: the image store's commands, and what tells an image from a file or bundle.
//! A run (and `hybox explain`) of an image is `image_run.rs`.

use std::path::{Path, PathBuf};

use super::ImageCommand;
use crate::exit;
use crate::image::{ImageRecord, ImageRef, Selector, Store};

pub use super::image_run::{explain, run};

/// The store: `HYBOX_STORE` if set, else [`Store::default_root`].
pub fn open_store() -> Result<Store, crate::image::StoreError> {
    let root = std::env::var_os("HYBOX_STORE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(Store::default_root);
    Store::open(&root)
}

pub(super) fn fail(e: &dyn std::error::Error, status: i32) -> i32 {
    eprintln!("hybox: error: {}", crate::error_chain(e));
    status
}

/// Whether `hybox run ARTIFACT` names an image: a layout directory, an archive (a tar), a path
/// with `:tag` or `@digest`, or a stored image's name.
pub fn as_image(artifact: &Path) -> Option<ImageRef> {
    let s = artifact.to_str()?;
    let r = ImageRef::parse(s).ok()?;
    match &r {
        ImageRef::Path { path, selector } => {
            let image = if path.is_dir() {
                path.join("index.json").is_file()
            } else {
                is_tar(path)
            };
            (image || *selector != Selector::Only).then_some(r)
        }
        ImageRef::Stored(name) => {
            let store = open_store().ok()?;
            store.find(name).ok().map(|_| r)
        }
    }
}

/// A POSIX tar has `ustar` at offset 257 of its first header.
fn is_tar(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 263];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[257..262] == b"ustar"
}

/// The stored image a reference names, importing a path first (layers already stored are reused).
pub(super) fn resolve(
    store: &Store,
    r: &ImageRef,
) -> Result<ImageRecord, crate::image::StoreError> {
    match r {
        ImageRef::Path { path, selector } => store.import(path, selector).map(|(rec, _)| rec),
        ImageRef::Stored(name) => store.find(name),
    }
}

pub(super) fn display_name(r: &ImageRecord) -> String {
    r.names
        .first()
        .cloned()
        .unwrap_or_else(|| r.id.short().to_string())
}

pub fn command(cmd: ImageCommand) -> i32 {
    let store = match open_store() {
        Ok(s) => s,
        Err(e) => return fail(&e, exit::RUNNER_FAILED),
    };
    match cmd {
        ImageCommand::Import { images } => {
            for i in images {
                let r = match ImageRef::parse(&i) {
                    Ok(ImageRef::Path { path, selector }) => (path, selector),
                    Ok(ImageRef::Stored(_)) => {
                        eprintln!("hybox: error: {i}: no such file or directory");
                        return exit::USAGE;
                    }
                    Err(e) => return fail(&e, exit::USAGE),
                };
                match store.import(&r.0, &r.1) {
                    Ok((rec, reused)) => {
                        let shared = reused.iter().filter(|r| **r).count();
                        println!(
                            "{} {} ({} layers, {} already in the store)",
                            rec.id.short(),
                            display_name(&rec),
                            rec.layers.len(),
                            shared
                        );
                    }
                    Err(e) => return fail(&e, exit::RUNNER_FAILED),
                }
            }
            0
        }
        ImageCommand::Ls { json } => match store.images() {
            Ok(all) if json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&all).expect("records serialise")
                );
                0
            }
            Ok(all) => {
                println!("{:<14} {:<40} {:>6} {:>12}", "ID", "NAME", "LAYERS", "SIZE");
                for r in all {
                    println!(
                        "{:<14} {:<40} {:>6} {:>12}",
                        r.id.short(),
                        r.names.join(","),
                        r.layers.len(),
                        r.size
                    );
                }
                0
            }
            Err(e) => fail(&e, exit::RUNNER_FAILED),
        },
        ImageCommand::Inspect { image } => {
            let r = match ImageRef::parse(&image) {
                Ok(r) => r,
                Err(e) => return fail(&e, exit::USAGE),
            };
            let rec = match resolve(&store, &r) {
                Ok(rec) => rec,
                Err(e) => return fail(&e, exit::USAGE),
            };
            let mut layers = Vec::new();
            for l in &rec.layers {
                match store.layer(l) {
                    Ok(Some(lr)) => layers.push(serde_json::to_value(lr).expect("serialises")),
                    Ok(None) => layers.push(serde_json::json!({"diff_id": l, "missing": true})),
                    Err(e) => return fail(&e, exit::RUNNER_FAILED),
                }
            }
            let mut v = serde_json::to_value(&rec).expect("serialises");
            v["layers"] = serde_json::Value::Array(layers);
            println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
            0
        }
        ImageCommand::Rm { images } => {
            for i in images {
                match store.remove(&i) {
                    Ok(r) => println!("removed {} {}", r.id.short(), display_name(&r)),
                    Err(e) => return fail(&e, exit::USAGE),
                }
            }
            0
        }
        ImageCommand::Prune => match store.prune() {
            Ok(r) => {
                println!(
                    "removed {} unused layers, {} abandoned imports, {} dead runs' roots",
                    r.layers.len(),
                    r.tmp,
                    r.runs.len()
                );
                0
            }
            Err(e) => fail(&e, exit::RUNNER_FAILED),
        },
    }
}
