//! What `hybox run IMAGE` and `hybox image import` name: a path (a layout directory or an archive)
//! with an optional `:tag` or `@sha256:<digest>` that picks one image of an index, or the name or
//! id of an image already in the store.

use std::path::{Path, PathBuf};

use super::digest::BlobDigest;

/// Which image of a multi-image source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The only image (an error if there are several).
    Only,
    /// The image with this tag or name (`latest`, `repo:latest`, `registry/repo:latest`).
    Tag(String),
    /// The image whose manifest (or config, the docker image id) has this digest.
    Digest(BlobDigest),
}

/// An image named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A layout directory, an oci-archive or a docker-archive on the host.
    Path { path: PathBuf, selector: Selector },
    /// An image in the store, by name (`repo:tag`, `repo` meaning `repo:latest`) or id (a prefix of
    /// the config digest's hex, or `sha256:...`).
    Stored(String),
}

impl ImageRef {
    /// Reads `s`: a path that exists (as given, or before its `:tag` / `@digest` suffix) is a
    /// source on the host; anything else is the name of a stored image.
    pub fn parse(s: &str) -> Result<ImageRef, super::DigestError> {
        if let Some((p, d)) = s.rsplit_once('@') {
            if Path::new(p).exists() {
                return Ok(ImageRef::Path {
                    path: p.into(),
                    selector: Selector::Digest(BlobDigest::parse(d)?),
                });
            }
        }
        if Path::new(s).exists() {
            return Ok(ImageRef::Path {
                path: s.into(),
                selector: Selector::Only,
            });
        }
        // A tag follows the last ':' after the last '/' (a path may contain ':' in a directory).
        let last = s.rsplit('/').next().unwrap_or(s);
        if let Some(i) = last.rfind(':') {
            let cut = s.len() - last.len() + i;
            let (p, tag) = (&s[..cut], &s[cut + 1..]);
            if !tag.is_empty() && Path::new(p).exists() {
                return Ok(ImageRef::Path {
                    path: p.into(),
                    selector: Selector::Tag(tag.to_string()),
                });
            }
        }
        Ok(ImageRef::Stored(s.to_string()))
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Only => f.write_str("the only image"),
            Selector::Tag(t) => write!(f, "tag {t:?}"),
            Selector::Digest(d) => write!(f, "digest {d}"),
        }
    }
}

/// Whether an image name (`registry/repo:tag`, `repo:tag` or a bare tag, as an index's ref.name
/// annotation may hold) answers to a tag or name the user gave.
pub(crate) fn name_matches(name: &str, wanted: &str) -> bool {
    name == wanted
        || name.rsplit_once(':').is_some_and(|(_, tag)| tag == wanted)
        || (!wanted.contains(':') && name == format!("{wanted}:latest"))
        || name.rsplit('/').next() == Some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_with_a_tag_or_digest_and_a_stored_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img.tar");
        std::fs::write(&p, b"").unwrap();
        let s = p.to_str().unwrap();
        assert_eq!(
            ImageRef::parse(s).unwrap(),
            ImageRef::Path {
                path: p.clone(),
                selector: Selector::Only
            }
        );
        assert_eq!(
            ImageRef::parse(&format!("{s}:v1")).unwrap(),
            ImageRef::Path {
                path: p.clone(),
                selector: Selector::Tag("v1".into())
            }
        );
        let d = BlobDigest::of(b"m");
        assert_eq!(
            ImageRef::parse(&format!("{s}@{d}")).unwrap(),
            ImageRef::Path {
                path: p,
                selector: Selector::Digest(d)
            }
        );
        assert_eq!(
            ImageRef::parse("hybox.test/hello:latest").unwrap(),
            ImageRef::Stored("hybox.test/hello:latest".into())
        );
    }

    #[test]
    fn names_match_by_tag_or_full_name() {
        assert!(name_matches("hybox.test/hello:latest", "latest"));
        assert!(name_matches("hybox.test/hello:latest", "hybox.test/hello"));
        assert!(name_matches("hybox.test/hello:latest", "hello:latest"));
        assert!(!name_matches("hybox.test/hello:latest", "v2"));
    }
}
