//! `hash`: the digest of the caller's data (Vault Transit's `hash` endpoint). No key is
//! involved, but it is an operation like every other so that Cedar decides it and the audit
//! log records it. SHA-2 (224, 256, 384, 512) and SHA-3 (224, 256, 384, 512). Cedar: `Hash` on
//! the caller's tenant.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Base64, OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};

/// Largest input, in bytes: a digest service, not a bulk one (the body limit bounds it
/// anyway; this says so in the error).
pub const MAX_INPUT: usize = 1 << 20;

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha2_224,
    Sha2_256,
    Sha2_384,
    Sha2_512,
    Sha3_224,
    Sha3_256,
    Sha3_384,
    Sha3_512,
}

impl HashAlgorithm {
    const ALL: [HashAlgorithm; 8] = [
        HashAlgorithm::Sha2_224,
        HashAlgorithm::Sha2_256,
        HashAlgorithm::Sha2_384,
        HashAlgorithm::Sha2_512,
        HashAlgorithm::Sha3_224,
        HashAlgorithm::Sha3_256,
        HashAlgorithm::Sha3_384,
        HashAlgorithm::Sha3_512,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Sha2_224 => "SHA_224",
            HashAlgorithm::Sha2_256 => "SHA_256",
            HashAlgorithm::Sha2_384 => "SHA_384",
            HashAlgorithm::Sha2_512 => "SHA_512",
            HashAlgorithm::Sha3_224 => "SHA3_224",
            HashAlgorithm::Sha3_256 => "SHA3_256",
            HashAlgorithm::Sha3_384 => "SHA3_384",
            HashAlgorithm::Sha3_512 => "SHA3_512",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|a| a.as_str()).collect();
                Error::validation(format!("algorithm must be one of {}", names.join(", ")))
            })
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        use sha3::Digest as _;
        match self {
            HashAlgorithm::Sha2_224 => sha2::Sha224::digest(data).to_vec(),
            HashAlgorithm::Sha2_256 => sha2::Sha256::digest(data).to_vec(),
            HashAlgorithm::Sha2_384 => sha2::Sha384::digest(data).to_vec(),
            HashAlgorithm::Sha2_512 => sha2::Sha512::digest(data).to_vec(),
            HashAlgorithm::Sha3_224 => sha3::Sha3_224::digest(data).to_vec(),
            HashAlgorithm::Sha3_256 => sha3::Sha3_256::digest(data).to_vec(),
            HashAlgorithm::Sha3_384 => sha3::Sha3_384::digest(data).to_vec(),
            HashAlgorithm::Sha3_512 => sha3::Sha3_512::digest(data).to_vec(),
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hash {
    pub input: Base64,
    /// Default `SHA_256`.
    pub algorithm: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HashOutput {
    pub algorithm: &'static str,
    pub digest: Base64,
}

impl Hash {
    fn algorithm(&self) -> Result<HashAlgorithm> {
        self.algorithm
            .as_deref()
            .map_or(Ok(HashAlgorithm::Sha2_256), HashAlgorithm::parse)
    }
}

impl Operation for Hash {
    const NAME: &'static str = "hash";
    const ACTION: &'static str = "Hash";
    type Output = HashOutput;

    fn validate(&self) -> Result<()> {
        self.algorithm()?;
        if self.input.len() > MAX_INPUT {
            return Err(Error::validation(format!(
                "input must be at most {MAX_INPUT} bytes"
            )));
        }
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        Ok(ResourceRef::Tenant(ctx.principal.tenant_id.clone()))
    }

    async fn execute(
        self,
        _ctx: &OpContext<'_>,
        _r: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let algorithm = self.algorithm()?;
        Ok(HashOutput {
            algorithm: algorithm.as_str(),
            digest: Base64::new(algorithm.digest(&self.input.0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS 180-4 / 202 digests of "abc".
    #[test]
    fn known_answers() {
        let hex = |a: HashAlgorithm| hex::encode(a.digest(b"abc"));
        assert_eq!(
            hex(HashAlgorithm::Sha2_256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(HashAlgorithm::Sha2_224),
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"
        );
        assert_eq!(
            hex(HashAlgorithm::Sha3_256),
            "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
        );
        assert!(HashAlgorithm::parse("MD5").is_err());
    }
}
