//! The keyring's operations on HMAC, ECC, Ed25519 and RSA key versions (all `hsm` protected):
//! signatures, MACs, RSA OAEP, ECDH and public keys; and data key pairs, which belong to no
//! key version (made by the HSM, read out, encoded as PKCS#8 and SPKI, kept nowhere).
//! Algorithm choices live here; PKCS#11 calls in [`crate::hsm::asym`].
//!
//! Messages are hashed on the host (ring) and the token signs the digest, so `RAW` and
//! `DIGEST` requests take the same path: ECDSA (`CKM_ECDSA`, the raw `r ‖ s` converted to
//! DER), RSASSA-PSS (`CKM_RSA_PKCS_PSS`, MGF1 with the message hash, salt length = digest
//! length, as `openssl … -sigopt rsa_pss_saltlen:digest` and AWS KMS), RSASSA-PKCS1-v1_5
//! (`CKM_RSA_PKCS` over the DigestInfo). Ed25519 (`CKM_EDDSA`, pure) signs the message itself
//! and so takes `RAW` only. Verification runs in the token too (`C_Verify` with the public
//! key object), so precomputed digests verify the same way as messages.

use zeroize::Zeroizing;

use super::{blocking, Keyring, ObjKind};
use crate::algorithms::private_key::pkcs8_der;
use crate::algorithms::public_key::{
    digest_info, ecdsa_der_to_raw, ecdsa_raw_to_der, jwk, spki_der,
};
use crate::algorithms::{Hash, KeySpec, SigningAlgorithm};
use crate::error::{Error, Result};
use crate::hsm::asym::SignMechanism;
use crate::hsm::{Hsm, Obj};
use crate::store::keys::KeyVersionRow;

/// Whether a signing request carries the message or its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Raw,
    Digest,
}

impl MessageType {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "RAW" => Ok(MessageType::Raw),
            "DIGEST" => Ok(MessageType::Digest),
            _ => Err(Error::validation("message_type must be RAW or DIGEST")),
        }
    }
}

/// A version's public key in every format keyplane serves.
pub struct PublicKey {
    pub der: Vec<u8>,
    pub pem: String,
    /// `None` where JOSE has no key type (finite-field Diffie-Hellman).
    pub jwk: Option<serde_json::Value>,
}

/// A data key pair: the private key as PKCS#8 DER (zeroized), the public key as DER
/// SubjectPublicKeyInfo.
pub struct DataKeyPair {
    pub private_key: Zeroizing<Vec<u8>>,
    pub public_key: Vec<u8>,
}

/// The mechanism and the bytes the token signs for `algorithm` over `message`.
pub fn to_be_signed(
    algorithm: SigningAlgorithm,
    message_type: MessageType,
    message: &[u8],
) -> Result<(SignMechanism, Vec<u8>)> {
    let Some(hash) = algorithm.hash() else {
        if message_type == MessageType::Digest {
            return Err(Error::validation(
                "ED25519 signs the message itself: message_type must be RAW",
            ));
        }
        return Ok((SignMechanism::Eddsa, message.to_vec()));
    };
    let digest = match message_type {
        MessageType::Raw => hash.digest(message),
        MessageType::Digest => {
            if message.len() != hash.output_len() {
                return Err(Error::validation(format!(
                    "a {} digest is {} bytes (got {})",
                    algorithm.as_str(),
                    hash.output_len(),
                    message.len()
                )));
            }
            message.to_vec()
        }
    };
    Ok(match algorithm {
        SigningAlgorithm::EcdsaSha256 | SigningAlgorithm::EcdsaSha384 => {
            (SignMechanism::Ecdsa, digest)
        }
        SigningAlgorithm::RsaPss(h) => (SignMechanism::RsaPss(h), digest),
        SigningAlgorithm::RsaPkcs1(h) => (SignMechanism::RsaPkcs, digest_info(h, &digest)),
        SigningAlgorithm::Ed25519 => return Err(Error::Internal),
    })
}

impl Keyring {
    /// Run `f` with the handle of a version's object of `kind`, repeated once if the HSM had
    /// to start over (see the module docs of [`super`]).
    async fn with_object<T: Send + 'static>(
        &self,
        kind: ObjKind,
        version: &KeyVersionRow,
        f: impl Fn(&Hsm, Obj) -> Result<T> + Send + Sync + Clone + 'static,
    ) -> Result<T> {
        self.retrying(|| async {
            let key = self.data_plane_handle(kind, version).await?;
            let (hsm, f) = (self.hsm.clone(), f.clone());
            blocking(move || f(&hsm, key)).await
        })
        .await
    }

    /// Sign with a version's private key. ECDSA signatures come back DER-encoded.
    pub async fn sign(
        &self,
        version: &KeyVersionRow,
        spec: KeySpec,
        algorithm: SigningAlgorithm,
        message_type: MessageType,
        message: &[u8],
    ) -> Result<Vec<u8>> {
        let (mechanism, data) = to_be_signed(algorithm, message_type, message)?;
        let data = std::sync::Arc::new(data);
        let signature = self
            .with_object(ObjKind::Private, version, move |hsm, key| {
                hsm.sign(key, mechanism, &data)
            })
            .await?;
        if mechanism == SignMechanism::Ecdsa {
            ecdsa_raw_to_der(spec, &signature)
        } else {
            Ok(signature)
        }
    }

    /// Verify a signature with a version's public key; `Ok(false)` if it does not match.
    pub async fn verify(
        &self,
        version: &KeyVersionRow,
        spec: KeySpec,
        algorithm: SigningAlgorithm,
        message_type: MessageType,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        let (mechanism, data) = to_be_signed(algorithm, message_type, message)?;
        let signature = if mechanism == SignMechanism::Ecdsa {
            match ecdsa_der_to_raw(spec, signature) {
                Some(raw) => raw,
                None => return Ok(false),
            }
        } else {
            signature.to_vec()
        };
        let both = std::sync::Arc::new((data, signature));
        self.with_object(ObjKind::Public, version, move |hsm, key| {
            hsm.verify(key, mechanism, &both.0, &both.1)
        })
        .await
    }

    /// HMAC of `message` with a version's secret key, in the token.
    pub async fn mac(
        &self,
        version: &KeyVersionRow,
        hash: Hash,
        message: &[u8],
    ) -> Result<Vec<u8>> {
        let message = std::sync::Arc::new(message.to_vec());
        self.with_object(ObjKind::Secret, version, move |hsm, key| {
            hsm.sign(key, SignMechanism::Hmac(hash), &message)
        })
        .await
    }

    /// Check an HMAC: computed in the token (`C_Sign`), compared here in constant time. Not
    /// `C_Verify`, whose comparison is the module's: SoftHSM2's is `memcmp` (a MAC compared
    /// byte by byte tells, by its timing, how many leading bytes a forgery got right).
    pub async fn verify_mac(
        &self,
        version: &KeyVersionRow,
        hash: Hash,
        message: &[u8],
        mac: &[u8],
    ) -> Result<bool> {
        use subtle::ConstantTimeEq;
        let expected = self.mac(version, hash, message).await?;
        // `ct_eq` of slices of different lengths is false at once: the length of a MAC is
        // its algorithm's, no secret.
        Ok(bool::from(expected.as_slice().ct_eq(mac)))
    }

    /// RSA OAEP encryption with a version's public key.
    pub async fn oaep_encrypt(
        &self,
        version: &KeyVersionRow,
        hash: Hash,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let plaintext = std::sync::Arc::new(plaintext);
        self.with_object(ObjKind::Public, version, move |hsm, key| {
            hsm.oaep_encrypt(key, hash, &plaintext)
        })
        .await
    }

    /// RSA OAEP decryption with a version's private key.
    pub async fn oaep_decrypt(
        &self,
        version: &KeyVersionRow,
        hash: Hash,
        ciphertext: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let ciphertext = std::sync::Arc::new(ciphertext);
        self.with_object(ObjKind::Private, version, move |hsm, key| {
            hsm.oaep_decrypt(key, hash, &ciphertext)
        })
        .await
    }

    /// ECDH of a version's private key with a validated peer point.
    pub async fn ecdh(
        &self,
        version: &KeyVersionRow,
        spec: KeySpec,
        peer_point: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let len = spec.ecdh_secret_len().ok_or(Error::Internal)?;
        let peer_point = std::sync::Arc::new(peer_point);
        self.with_object(ObjKind::Private, version, move |hsm, key| {
            hsm.ecdh(key, &peer_point, len)
        })
        .await
    }

    /// Finite-field Diffie-Hellman of version `version` (of `group`) with the peer's public
    /// value `y` (checked, the prime's length): the shared secret at the prime's length.
    pub async fn dh(
        &self,
        version: &KeyVersionRow,
        group: &'static crate::algorithms::ffdhe::Group,
        y: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let y = std::sync::Arc::new(y);
        self.with_object(ObjKind::Private, version, move |hsm, key| {
            hsm.dh(key, group, &y)
        })
        .await
    }

    /// A key pair of `spec` (RSA or a NIST curve) made by the HSM and read out of it
    /// ([`Hsm::generate_data_key_pair`]: nothing of it stays in the token), encoded. Made
    /// again once if the HSM had to start over (the first attempt's objects went with its
    /// session).
    pub async fn data_key_pair(&self, spec: KeySpec) -> Result<DataKeyPair> {
        self.retrying(|| {
            let hsm = self.hsm.clone();
            blocking(move || {
                let parts = hsm.generate_data_key_pair(spec)?;
                Ok(DataKeyPair {
                    private_key: pkcs8_der(spec, &parts)?,
                    public_key: spki_der(spec, &parts.public)?,
                })
            })
        })
        .await
    }

    /// A version's public key (read from its public-key object).
    pub async fn public_key(&self, version: &KeyVersionRow, spec: KeySpec) -> Result<PublicKey> {
        let parts = self
            .retrying(|| async {
                let key = self.hsm_handle(ObjKind::Public, version).await?;
                let hsm = self.hsm.clone();
                blocking(move || hsm.public_parts(key, spec)).await
            })
            .await?;
        let der = spki_der(spec, &parts)?;
        Ok(PublicKey {
            pem: crate::algorithms::public_key::spki_pem(&der)?,
            jwk: jwk(spec, &parts)?,
            der,
        })
    }
}
