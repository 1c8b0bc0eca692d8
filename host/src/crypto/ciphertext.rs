//! The keyplane ciphertext format (version 1).
//!
//! ```text
//! offset  size  field
//! 0       2     magic "KP"
//! 2       1     format version (1)
//! 3       1     algorithm (1 = AES-256-GCM, 2 = AES-128-GCM, 3 = ChaCha20-Poly1305)
//! 4       1     key id length L (1..=64, ASCII)
//! 5       L     key id
//! 5+L     4     key version (u32, big endian)
//! 9+L     1     nonce length N (12 for each algorithm)
//! 10+L    N     nonce
//! 10+L+N  ..    sealed data ‖ 16-byte tag
//! ```
//! Everything before the sealed data is the *header*; the AAD is the header followed by the
//! canonical encryption context, so changing either fails authentication. The algorithm is
//! the key's spec's (one per symmetric spec, see [`Algorithm::of`]); decryption refuses a
//! header whose algorithm is not the key's. [`Ciphertext::parse`] is total: any byte string
//! yields a value or a typed error, never a panic.

use crate::algorithms::KeySpec;
use crate::error::{Error, Result};

const MAGIC: &[u8; 2] = b"KP";
/// The only format version so far.
pub const FORMAT_V1: u8 = 1;
/// Tag length in bytes (AES-GCM's and Poly1305's).
pub const TAG_LEN: usize = 16;
/// Longest key id the format carries.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Longest ciphertext [`Ciphertext::parse`] takes: AWS's limit of a `CiphertextBlob`. The
/// longest keyplane writes is a 4,096-byte plaintext's (`encrypt`'s limit) with a header of at
/// most 86 bytes and its tag; a longer one was not made here, and is refused before it is
/// copied or handed to the HSM (a batch item or a Transit body may carry megabytes).
pub const MAX_LEN: usize = 6144;

/// Algorithms a ciphertext can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Aes256Gcm,
    Aes128Gcm,
    ChaCha20Poly1305,
}

impl Algorithm {
    fn to_byte(self) -> u8 {
        match self {
            Algorithm::Aes256Gcm => 1,
            Algorithm::Aes128Gcm => 2,
            Algorithm::ChaCha20Poly1305 => 3,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Algorithm::Aes256Gcm),
            2 => Some(Algorithm::Aes128Gcm),
            3 => Some(Algorithm::ChaCha20Poly1305),
            _ => None,
        }
    }
    /// Nonce length this algorithm needs (96 bits for AES-GCM and for RFC 8439's
    /// ChaCha20-Poly1305).
    pub fn nonce_len(self) -> usize {
        match self {
            Algorithm::Aes256Gcm | Algorithm::Aes128Gcm | Algorithm::ChaCha20Poly1305 => 12,
        }
    }
    /// The algorithm of keys of `spec`; `None` for specs that make no keyplane ciphertext.
    pub fn of(spec: KeySpec) -> Option<Self> {
        match spec {
            KeySpec::Aes256Gcm => Some(Algorithm::Aes256Gcm),
            KeySpec::Aes128Gcm => Some(Algorithm::Aes128Gcm),
            KeySpec::ChaCha20Poly1305 => Some(Algorithm::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// A parsed (or to-be-encoded) ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphertext {
    pub algorithm: Algorithm,
    pub key_id: String,
    pub key_version: u32,
    pub nonce: Vec<u8>,
    /// Encrypted data followed by the tag.
    pub sealed: Vec<u8>,
}

/// The header of a ciphertext about to be sealed (everything but the sealed bytes).
pub fn header(algorithm: Algorithm, key_id: &str, key_version: u32, nonce: &[u8]) -> Vec<u8> {
    debug_assert!(!key_id.is_empty() && key_id.len() <= MAX_KEY_ID_LEN);
    let mut out = Vec::with_capacity(10 + key_id.len() + nonce.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_V1);
    out.push(algorithm.to_byte());
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&key_version.to_be_bytes());
    out.push(nonce.len() as u8);
    out.extend_from_slice(nonce);
    out
}

/// A small cursor that never reads past the end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(Error::MalformedCiphertext("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
}

impl Ciphertext {
    /// Parse a ciphertext blob. Total: never panics.
    pub fn parse(blob: &[u8]) -> Result<Self> {
        if blob.len() > MAX_LEN {
            return Err(Error::MalformedCiphertext(
                "longer than any keyplane ciphertext",
            ));
        }
        let mut r = Reader { buf: blob, pos: 0 };
        if r.take(2)? != MAGIC {
            return Err(Error::MalformedCiphertext("not a keyplane ciphertext"));
        }
        if r.byte()? != FORMAT_V1 {
            return Err(Error::MalformedCiphertext("unsupported format version"));
        }
        let algorithm = Algorithm::from_byte(r.byte()?)
            .ok_or(Error::MalformedCiphertext("unknown algorithm"))?;
        let id_len = r.byte()? as usize;
        if id_len == 0 || id_len > MAX_KEY_ID_LEN {
            return Err(Error::MalformedCiphertext("bad key id length"));
        }
        let key_id = std::str::from_utf8(r.take(id_len)?)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or(Error::MalformedCiphertext("key id is not printable ASCII"))?
            .to_string();
        let v = r.take(4)?;
        let key_version = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        let nonce_len = r.byte()? as usize;
        if nonce_len != algorithm.nonce_len() {
            return Err(Error::MalformedCiphertext("bad nonce length"));
        }
        let nonce = r.take(nonce_len)?.to_vec();
        let sealed = blob[r.pos..].to_vec();
        if sealed.len() < TAG_LEN {
            return Err(Error::MalformedCiphertext("truncated"));
        }
        Ok(Ciphertext {
            algorithm,
            key_id,
            key_version,
            nonce,
            sealed,
        })
    }

    /// The header bytes (the first part of the AAD).
    pub fn header(&self) -> Vec<u8> {
        header(self.algorithm, &self.key_id, self.key_version, &self.nonce)
    }

    /// Encode to the wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header();
        out.extend_from_slice(&self.sealed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ciphertext {
        Ciphertext {
            algorithm: Algorithm::Aes256Gcm,
            key_id: "k-0123".into(),
            key_version: 7,
            nonce: vec![9; 12],
            sealed: vec![1; 20],
        }
    }

    #[test]
    fn round_trips() {
        let c = sample();
        assert_eq!(Ciphertext::parse(&c.encode()).unwrap(), c);
    }

    #[test]
    fn the_longest_ciphertext_keyplane_writes_parses_and_a_longer_one_is_refused() {
        let longest = Ciphertext {
            key_id: "k".repeat(MAX_KEY_ID_LEN),
            sealed: vec![1; 4096 + TAG_LEN],
            ..sample()
        };
        assert_eq!(Ciphertext::parse(&longest.encode()).unwrap(), longest);
        let mut blob = sample().encode();
        blob.resize(MAX_LEN + 1, 0);
        assert!(matches!(
            Ciphertext::parse(&blob),
            Err(Error::MalformedCiphertext(
                "longer than any keyplane ciphertext"
            ))
        ));
    }

    #[test]
    fn each_algorithm_has_its_own_byte() {
        for (algorithm, byte) in [
            (Algorithm::Aes256Gcm, 1u8),
            (Algorithm::Aes128Gcm, 2),
            (Algorithm::ChaCha20Poly1305, 3),
        ] {
            let c = Ciphertext {
                algorithm,
                ..sample()
            };
            let blob = c.encode();
            assert_eq!(blob[3], byte);
            assert_eq!(Ciphertext::parse(&blob).unwrap(), c);
        }
        let mut blob = sample().encode();
        blob[3] = 4;
        assert!(matches!(
            Ciphertext::parse(&blob),
            Err(Error::MalformedCiphertext("unknown algorithm"))
        ));
        // Every symmetric spec has an algorithm, and no two share one.
        let algorithms: Vec<_> = KeySpec::all().filter_map(Algorithm::of).collect();
        assert_eq!(
            algorithms.len(),
            KeySpec::all()
                .filter(|s| s.is_symmetric_encryption())
                .count()
        );
        assert_eq!(
            algorithms
                .iter()
                .map(|a| a.to_byte())
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            algorithms.len()
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let blob = sample().encode();
        for n in 0..blob.len() - 4 {
            assert!(Ciphertext::parse(&blob[..n]).is_err(), "prefix {n} parsed");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        let base = sample().encode();
        for i in 0..20_000usize {
            let mut b = base.clone();
            let mut r = [0u8; 4];
            rng.fill(&mut r).unwrap();
            let idx = (r[0] as usize) % b.len();
            b[idx] = r[1];
            b.truncate((r[2] as usize + i) % (b.len() + 1));
            let _ = Ciphertext::parse(&b);
        }
    }
}
