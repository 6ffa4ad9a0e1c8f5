//! Content digests: `sha256:<64 lowercase hex>`, the only algorithm accepted. A digest names a file
//! in a blob directory and in the store (`blobs/sha256/<hex>`, `layers/sha256/<hex>`), so it is
//! checked to be exactly 64 hex digits before it becomes part of any path: a descriptor's digest of
//! `sha256:../../etc` must never become a path.

use std::fmt;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

/// A verified-form sha256 digest (`sha256:<64 lowercase hex>`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct BlobDigest(String);

/// A digest hybox does not accept, or content that does not match its digest.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// Not `sha256:` followed by 64 lowercase hex digits.
    #[error("{0:?} is not a sha256 digest (expected sha256:<64 lowercase hex digits>)")]
    Malformed(String),
    /// The content's digest differs from the one that names it.
    #[error("content of {what} has digest {actual}, expected {expected}")]
    Mismatch {
        what: String,
        expected: BlobDigest,
        actual: BlobDigest,
    },
    /// The content's length differs from the descriptor's size.
    #[error("{what} is {actual} bytes, its descriptor says {expected}")]
    Size {
        what: String,
        expected: u64,
        actual: u64,
    },
}

impl BlobDigest {
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let ok = s.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(BlobDigest(s.to_string()))
        } else {
            Err(DigestError::Malformed(s.to_string()))
        }
    }
    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Self {
        BlobDigest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }
    /// The 64 hex digits: safe as a file name (checked at construction).
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first 12 hex digits, as `docker images` shows an id.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
    /// Checks bytes against this digest (and a size, if one is known).
    pub fn verify(&self, what: &str, bytes: &[u8], size: Option<u64>) -> Result<(), DigestError> {
        if let Some(expected) = size {
            if bytes.len() as u64 != expected {
                return Err(DigestError::Size {
                    what: what.to_string(),
                    expected,
                    actual: bytes.len() as u64,
                });
            }
        }
        let actual = BlobDigest::of(bytes);
        if &actual != self {
            return Err(DigestError::Mismatch {
                what: what.to_string(),
                expected: self.clone(),
                actual,
            });
        }
        Ok(())
    }
}

impl TryFrom<String> for BlobDigest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, DigestError> {
        BlobDigest::parse(&s)
    }
}
impl From<BlobDigest> for String {
    fn from(d: BlobDigest) -> String {
        d.0
    }
}
impl fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reader that hashes what passes through it. A layer's stream is several readers deep (the blob,
/// the decompressor, the tar parser), so the hash lives behind a [`VerifyHandle`] that stays with
/// the caller: once the stream is read to its end, [`VerifyHandle::check`] compares digest and
/// length. A layer is unpacked into a temporary directory while it is read, and only a stream whose
/// digests match is renamed into the store.
pub struct Verifier<R> {
    inner: R,
    state: Arc<Mutex<(Sha256, u64)>>,
}

/// The caller's end of a [`Verifier`].
#[derive(Clone)]
pub struct VerifyHandle(Arc<Mutex<(Sha256, u64)>>);

impl<R: Read> Verifier<R> {
    pub fn new(inner: R) -> Self {
        Verifier {
            inner,
            state: Arc::new(Mutex::new((Sha256::new(), 0))),
        }
    }
    pub fn handle(&self) -> VerifyHandle {
        VerifyHandle(self.state.clone())
    }
}

impl VerifyHandle {
    /// Compares what passed through so far with the expected digest (and size, if known).
    pub fn check(
        &self,
        what: &str,
        expected: &BlobDigest,
        size: Option<u64>,
    ) -> Result<(), DigestError> {
        let (hasher, len) = &*self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(expected) = size {
            if *len != expected {
                return Err(DigestError::Size {
                    what: what.to_string(),
                    expected,
                    actual: *len,
                });
            }
        }
        let actual = BlobDigest(format!("sha256:{}", hex::encode(hasher.clone().finalize())));
        if &actual != expected {
            return Err(DigestError::Mismatch {
                what: what.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

impl<R: Read> Read for Verifier<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0.update(&buf[..n]);
        state.1 += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_with_64_hex_digits_is_a_digest() {
        let good = BlobDigest::of(b"x");
        assert!(BlobDigest::parse(good.as_str()).is_ok());
        for bad in [
            "sha256:../../etc/passwd",
            "sha512:00",
            "sha256:ABCDEF",
            &good.as_str().to_uppercase(),
            &format!("{good}0"),
        ] {
            assert!(BlobDigest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_verifier_names_a_mismatch() {
        let d = BlobDigest::of(b"abc");
        let mut v = Verifier::new(&b"abc"[..]);
        let h = v.handle();
        io::copy(&mut v, &mut io::sink()).unwrap();
        assert!(h.check("blob", &d, Some(3)).is_ok());
        let mut v = Verifier::new(&b"abd"[..]);
        let h = v.handle();
        io::copy(&mut v, &mut io::sink()).unwrap();
        let e = h.check("blob", &d, None).unwrap_err();
        assert!(e.to_string().contains(d.as_str()), "{e}");
    }
}
