//! A growable byte buffer for request bodies and answers that may hold plaintext, data keys
//! or secrets. A `Zeroizing<Vec<u8>>` is wiped when dropped, but each time a `Vec` grows it
//! moves its bytes to a new allocation and frees the old one as it is; `SecretBuf` grows by
//! copying into a new zeroizing buffer and wiping the old one, so no copy is left behind in
//! freed memory (the copies HTTP and TLS make on the way in and out are theirs).

use std::io;

use zeroize::Zeroizing;

/// See the module docs.
#[derive(Default)]
pub struct SecretBuf(Zeroizing<Vec<u8>>);

impl SecretBuf {
    pub fn with_capacity(n: usize) -> Self {
        SecretBuf(Zeroizing::new(Vec::with_capacity(n)))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let capacity = needed.max(self.0.capacity() * 2).max(256);
            let mut bigger = Zeroizing::new(Vec::with_capacity(capacity));
            bigger.extend_from_slice(&self.0);
            // The old buffer is dropped here, wiped.
            self.0 = bigger;
        }
        self.0.extend_from_slice(bytes);
    }

    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl io::Write for SecretBuf {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for SecretBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBuf(<{} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_without_reallocating_in_place() {
        let mut b = SecretBuf::default();
        let mut expected = Vec::new();
        for i in 0..10_000u32 {
            let chunk = i.to_le_bytes();
            b.extend_from_slice(&chunk);
            expected.extend_from_slice(&chunk);
            // A Vec never grows past its capacity here: every growth is our own copy.
            assert!(b.0.len() <= b.0.capacity());
        }
        assert_eq!(b.into_inner().as_slice(), expected.as_slice());
        let mut w = SecretBuf::with_capacity(1);
        serde_json::to_writer(&mut w, &serde_json::json!({"k": "v"})).unwrap();
        assert_eq!(w.into_inner().as_slice(), br#"{"k":"v"}"#);
    }
}
