//! PKCS#12 (RFC 7292) bundles: one private key (PKCS#8) and its certificate, protected by a
//! password, written and read here with RustCrypto's structures (`pkcs12`, `cms`) and PBES2
//! (`pkcs5`).
//!
//! Written as OpenSSL 3 writes one by default: the certificate in a PBES2-encrypted safe, the
//! key in a shrouded key bag (PBES2: PBKDF2-HMAC-SHA-256, AES-256-CBC, RFC 8018) in a plain
//! one, both bags named by a `localKeyId` (the certificate's SHA-1) and a `friendlyName`, and an
//! HMAC-SHA-256 MAC, [`EXPORT_ITERATIONS`] iterations each (the PBKDF2 count OWASP recommends
//! for HMAC-SHA-256), salts and IVs fresh from the system's random source. `openssl pkcs12`,
//! Python's `cryptography`, Java's `keytool` and Windows read it. keyplane's copies of the key
//! bytes (encrypted in a buffer of its own), of the password, of the MAC key and of each AES key
//! PBKDF2 derives are wiped, and so are AES round keys and CBC state (the `aes` and `cbc`
//! crates' `zeroize`): PBES2 runs here ([`pbes2_key`], [`pbes2_seal`], [`pbes2_open`]) on
//! `pkcs5`'s parameter types, because `pkcs5` derives the AES key into an array it never wipes.
//! What the libraries keep inside is not wiped: PBKDF2's HMAC blocks, the PKCS#12 KDF's last
//! hash output and its copies of the password for the MAC key (`pkcs12::kdf::derive_key_utf8`
//! encodes it as a BMPString it does not wipe, and grows a wiped copy of that in place, which
//! frees the first buffer unwiped), and `ring`'s HMAC state.
//!
//! Read: a bundle is the caller's input, so every key derivation is bounded before it runs
//! (the general-purpose readers run those they meet, in nested key bags, secret bags and
//! scrypt, unbounded, and follow certificate chains without a cycle guard). What is read: a
//! version 3 PFX with a MAC (HMAC-SHA-256 or -SHA-1; none: refused, nothing else proves the
//! password holder made it), safes of plain or PBES2-encrypted data, and in them shrouded key
//! bags (exactly one) and X.509 certificate bags, at most [`MAX_BAGS`]. Every key derivation is
//! counted before it runs, wherever it sits (the MAC, each encrypted safe, each key bag, nested
//! or not): more than [`MAX_ITERATIONS`] in one or [`MAX_TOTAL_ITERATIONS`] in all is refused,
//! so a bundle cannot pin a worker. PBKDF2 only (scrypt and unknown schemes refused); the
//! legacy PKCS#12 schemes (3DES, RC2: `openssl pkcs12 -legacy`) are refused with the way out
//! (export again with PBES2). The certificate is the one whose `localKeyId` is the key bag's;
//! a bundle with no such certificate is a key alone. No chain is built.

use der::asn1::{BmpString, ContextSpecific, OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use pkcs12::cert_type::CertBag;
use pkcs12::pbe_params::{EncryptedPrivateKeyInfo, Pbes2Params, Pbkdf2Params};
use pkcs12::pfx::Pfx;
use pkcs12::safe_bag::{SafeBag, SafeContents};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier};
use zeroize::Zeroizing;

use super::private_key::OID_EC_PUBLIC_KEY;
use super::public_key::{spki_der, PublicParts, OID_P256, OID_P384, OID_RSA};
use super::KeySpec;
use crate::error::{Error, Result};

/// Largest bundle accepted.
pub const MAX_BUNDLE: usize = 64 * 1024;
/// PBKDF2 and MAC iterations of a bundle keyplane writes.
pub const EXPORT_ITERATIONS: u32 = 600_000;
/// Most iterations one key derivation of a bundle may ask for.
pub const MAX_ITERATIONS: u64 = 2_000_000;
/// Most iterations all key derivations of a bundle visible before decryption may ask for.
pub const MAX_TOTAL_ITERATIONS: u64 = 8_000_000;

const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
/// Most bags a bundle may hold (a key, its certificate and a chain).
const MAX_BAGS: usize = 16;
const CERT_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.3");
const X509_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");
const LOCAL_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.21");
const FRIENDLY_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.20");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const PBKDF2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.12");
/// pkcs-12PbeIds (RFC 7292 appendix C): `1.2.840.113549.1.12.1.<n>`.
const PKCS12_PBE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1");

/// What a bundle held.
pub struct Bundle {
    /// PKCS#8 `PrivateKeyInfo` DER.
    pub private_key: Zeroizing<Vec<u8>>,
    /// The key's own certificate (DER), where the bundle has one.
    pub certificate: Option<Vec<u8>>,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::validation(format!("pkcs12 {what}"))
}

/// A bundle of `private_key` (PKCS#8 DER) and `certificate` (DER), named `name`, under
/// `password`, in the profile of the module docs.
pub fn encode(
    private_key: &[u8],
    certificate: &[u8],
    name: &str,
    password: &str,
) -> Result<Vec<u8>> {
    encode_with(private_key, certificate, name, password, EXPORT_ITERATIONS)
}

fn encode_with(
    private_key: &[u8],
    certificate: &[u8],
    name: &str,
    password: &str,
    iterations: u32,
) -> Result<Vec<u8>> {
    x509_cert::Certificate::from_der(certificate).map_err(encoding)?;
    let rng = ring::rand::SystemRandom::new();
    // The local key id ties the key bag to its certificate bag: the SHA-1 of the
    // certificate, as OpenSSL writes it.
    let local_id = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, certificate);
    let attributes = bag_attributes(local_id.as_ref(), name)?;
    let (encryption_algorithm, sealed) = pbes2(&rng, iterations, password, private_key)?;
    let key_bag = SafeBag {
        bag_id: SHROUDED_KEY_BAG,
        bag_value: EncryptedPrivateKeyInfo {
            encryption_algorithm,
            encrypted_data: OctetString::new(sealed).map_err(encoding)?,
        }
        .to_der()
        .map_err(encoding)?,
        bag_attributes: Some(attributes.clone()),
    };
    let cert_bag = SafeBag {
        bag_id: CERT_BAG,
        bag_value: CertBag {
            cert_id: X509_CERTIFICATE,
            cert_value: OctetString::new(certificate).map_err(encoding)?,
        }
        .to_der()
        .map_err(encoding)?,
        bag_attributes: Some(attributes),
    };
    let certs = vec![cert_bag].to_der().map_err(encoding)?;
    let (alg, sealed) = pbes2(&rng, iterations, password, &certs)?;
    let safes = vec![encrypted_safe(alg, sealed)?, data_safe(vec![key_bag])?];
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&rng, &mut salt).map_err(|_| encoding("no random salt"))?;
    pfx(safes, password, iterations, &salt)
}

fn encoding(e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "PKCS#12 encoding failed");
    Error::Internal
}

/// A bag's `localKeyId` and `friendlyName` attributes.
fn bag_attributes(local_id: &[u8], name: &str) -> Result<x509_cert::attr::Attributes> {
    let attribute = |oid, value: Any| -> Result<x509_cert::attr::Attribute> {
        Ok(x509_cert::attr::Attribute {
            oid,
            values: SetOfVec::try_from(vec![value]).map_err(encoding)?,
        })
    };
    let id = Any::encode_from(&OctetString::new(local_id).map_err(encoding)?).map_err(encoding)?;
    let name =
        Any::encode_from(&BmpString::from_utf8(name).map_err(encoding)?).map_err(encoding)?;
    SetOfVec::try_from(vec![
        attribute(LOCAL_KEY_ID, id)?,
        attribute(FRIENDLY_NAME, name)?,
    ])
    .map_err(encoding)
}

/// `data` encrypted with `password` under PBES2 (PBKDF2-HMAC-SHA-256 of `iterations`,
/// AES-256-CBC) with a fresh salt and IV, and the scheme's algorithm identifier.
fn pbes2(
    rng: &ring::rand::SystemRandom,
    iterations: u32,
    password: &str,
    data: &[u8],
) -> Result<(AlgorithmIdentifierOwned, Vec<u8>)> {
    let (mut salt, mut iv) = ([0u8; 16], [0u8; 16]);
    ring::rand::SecureRandom::fill(rng, &mut salt).map_err(|_| encoding("no random salt"))?;
    ring::rand::SecureRandom::fill(rng, &mut iv).map_err(|_| encoding("no random IV"))?;
    let params = pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(iterations, &salt, &iv)
        .map_err(encoding)?;
    let sealed = pbes2_seal(&params, password, data)?;
    let alg = AlgorithmIdentifierOwned {
        oid: PBES2,
        parameters: Some(Any::encode_from(&params).map_err(encoding)?),
    };
    Ok((alg, sealed))
}

/// A safe of `bags` in the clear (its key bags are shrouded on their own).
fn data_safe(bags: Vec<SafeBag>) -> Result<cms::content_info::ContentInfo> {
    let octets = OctetString::new(bags.to_der().map_err(encoding)?).map_err(encoding)?;
    Ok(cms::content_info::ContentInfo {
        content_type: DATA,
        content: Any::encode_from(&octets).map_err(encoding)?,
    })
}

/// A password-encrypted safe: `sealed`, the bags encrypted under `alg`.
fn encrypted_safe(
    alg: AlgorithmIdentifierOwned,
    sealed: Vec<u8>,
) -> Result<cms::content_info::ContentInfo> {
    let data = cms::encrypted_data::EncryptedData {
        version: cms::content_info::CmsVersion::V0,
        enc_content_info: cms::enveloped_data::EncryptedContentInfo {
            content_type: DATA,
            content_enc_alg: alg,
            encrypted_content: Some(OctetString::new(sealed).map_err(encoding)?),
        },
        unprotected_attrs: None,
    };
    Ok(cms::content_info::ContentInfo {
        content_type: ENCRYPTED_DATA,
        content: Any::encode_from(&data).map_err(encoding)?,
    })
}

/// A version 3 PFX of `safes` with an HMAC-SHA-256 MAC keyed from `password` by the PKCS#12
/// KDF (RFC 7292 appendix B) over `salt` and `iterations`.
fn pfx(
    safes: Vec<cms::content_info::ContentInfo>,
    password: &str,
    iterations: u32,
    salt: &[u8],
) -> Result<Vec<u8>> {
    use pkcs12::kdf::{derive_key_utf8, Pkcs12KeyType};
    let rounds = i32::try_from(iterations).map_err(encoding)?;
    let content = safes.to_der().map_err(encoding)?;
    let key = Zeroizing::new(
        derive_key_utf8::<sha2_10::Sha256>(password, salt, Pkcs12KeyType::Mac, rounds, 32)
            .map_err(|_| bad("password cannot be encoded as PKCS#12 asks (a BMPString)"))?,
    );
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        &content,
    );
    let octets = OctetString::new(content).map_err(encoding)?;
    Pfx {
        version: pkcs12::pfx::Version::V3,
        auth_safe: cms::content_info::ContentInfo {
            content_type: DATA,
            content: Any::encode_from(&octets).map_err(encoding)?,
        },
        mac_data: Some(pkcs12::mac_data::MacData {
            mac: pkcs12::digest_info::DigestInfo {
                algorithm: AlgorithmIdentifierOwned {
                    oid: SHA256,
                    parameters: Some(Any::null()),
                },
                digest: OctetString::new(tag.as_ref()).map_err(encoding)?,
            },
            mac_salt: OctetString::new(salt).map_err(encoding)?,
            iterations: rounds,
        }),
    }
    .to_der()
    .map_err(encoding)
}

/// The private key and certificate of bundle `der`, opened with `password` (module docs):
/// exactly one shrouded key bag; its certificate is the certificate bag with the key bag's
/// local key id, if there is one.
pub fn decode(der: &[u8], password: &str) -> Result<Bundle> {
    decode_with(der, password, MAX_ITERATIONS, MAX_TOTAL_ITERATIONS)
}

fn decode_with(der: &[u8], password: &str, max: u64, max_total: u64) -> Result<Bundle> {
    if der.len() > MAX_BUNDLE {
        return Err(bad(format!("is larger than {} KiB", MAX_BUNDLE / 1024)));
    }
    let pfx = Pfx::from_der(der).map_err(unreadable)?;
    if pfx.version != pkcs12::pfx::Version::V3 {
        return Err(bad("is not a version 3 PFX"));
    }
    let mac = pfx
        .mac_data
        .as_ref()
        .ok_or_else(|| bad("has no MAC: a bundle without integrity protection is refused"))?;
    let mut budget = Budget {
        max,
        max_total,
        spent: 0,
    };
    budget.spend(u64::try_from(mac.iterations).unwrap_or(0))?;
    if pfx.auth_safe.content_type != DATA {
        return Err(bad(
            "is not password-integrity protected (its content is not data)",
        ));
    }
    let content = octets(&pfx.auth_safe.content)?;
    verify_mac(mac, password, &content)?;
    let safes = Vec::<cms::content_info::ContentInfo>::from_der(&content).map_err(unreadable)?;
    let mut keys = Vec::new();
    let mut certs = Vec::new();
    let mut bags_seen = 0usize;
    for safe in &safes {
        let contents = if safe.content_type == DATA {
            Zeroizing::new(octets(&safe.content)?)
        } else if safe.content_type == ENCRYPTED_DATA {
            let data = cms::encrypted_data::EncryptedData::from_der(
                &safe.content.to_der().map_err(unreadable)?,
            )
            .map_err(unreadable)?;
            let info = &data.enc_content_info;
            budget.spend(iterations(&info.content_enc_alg)?)?;
            let sealed = info
                .encrypted_content
                .as_ref()
                .ok_or_else(|| bad("holds an encrypted safe without content"))?;
            decrypt(&info.content_enc_alg, sealed.as_bytes(), password)?
        } else {
            return Err(bad(
                "holds a safe that is neither data nor password-encrypted",
            ));
        };
        let bags = SafeContents::from_der(&contents).map_err(unreadable)?;
        for bag in bags {
            bags_seen += 1;
            if bags_seen > MAX_BAGS {
                return Err(bad(format!("holds more than {MAX_BAGS} bags")));
            }
            let id = local_key_id(&bag);
            if bag.bag_id == SHROUDED_KEY_BAG {
                let value = ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value)
                    .map_err(unreadable)?
                    .value;
                budget.spend(iterations(&value.encryption_algorithm)?)?;
                let key = decrypt(
                    &value.encryption_algorithm,
                    value.encrypted_data.as_bytes(),
                    password,
                )?;
                keys.push((id, key));
            } else if bag.bag_id == CERT_BAG {
                let cert = ContextSpecific::<CertBag>::from_der(&bag.bag_value)
                    .map_err(unreadable)?
                    .value;
                if cert.cert_id != X509_CERTIFICATE {
                    return Err(bad("holds a certificate that is not X.509"));
                }
                certs.push((id, cert.cert_value.as_bytes().to_vec()));
            } else {
                return Err(bad(format!(
                    "holds a bag of type {} (only shrouded key bags and certificate bags are read)",
                    bag.bag_id
                )));
            }
        }
    }
    let (id, private_key) = match keys.len() {
        0 => return Err(bad("holds no private key (a shrouded key bag)")),
        1 => keys.remove(0),
        _ => return Err(bad("holds more than one private key")),
    };
    let certificate = id.and_then(|id| {
        certs
            .into_iter()
            .find(|(c, _)| c.as_ref() == Some(&id))
            .map(|(_, der)| der)
    });
    Ok(Bundle {
        private_key,
        certificate,
    })
}

fn unreadable(e: der::Error) -> Error {
    bad(format!("is not a PKCS#12 PFX: {e}"))
}

/// Key-derivation work a bundle may still ask for (module docs).
struct Budget {
    max: u64,
    max_total: u64,
    spent: u64,
}

impl Budget {
    /// Account for one derivation of `n` iterations, before it runs.
    fn spend(&mut self, n: u64) -> Result<()> {
        self.spent = self.spent.saturating_add(n);
        if n == 0 || n > self.max || self.spent > self.max_total {
            return Err(bad(format!(
                "asks for {n} key-derivation iterations; at most {} each and {} in all are accepted",
                self.max, self.max_total
            )));
        }
        Ok(())
    }
}

/// The content of an OCTET STRING held in `any`.
fn octets(any: &der::Any) -> Result<Vec<u8>> {
    Ok(OctetString::from_der(&any.to_der().map_err(unreadable)?)
        .map_err(unreadable)?
        .into_bytes())
}

/// The `localKeyId` attribute of a bag (RFC 7292 section 4.2), if it has one.
fn local_key_id(bag: &pkcs12::safe_bag::SafeBag) -> Option<Vec<u8>> {
    let attrs = bag.bag_attributes.as_ref()?;
    let attr = attrs.iter().find(|a| a.oid == LOCAL_KEY_ID)?;
    let value = attr.values.iter().next()?.to_der().ok()?;
    Some(OctetString::from_der(&value).ok()?.into_bytes())
}

/// Check the bundle's MAC over `content` (HMAC keyed by the PKCS#12 KDF, RFC 7292 appendix
/// B), in constant time.
fn verify_mac(mac: &pkcs12::mac_data::MacData, password: &str, content: &[u8]) -> Result<()> {
    use pkcs12::kdf::{derive_key_utf8, Pkcs12KeyType};
    let (salt, rounds) = (mac.mac_salt.as_bytes(), mac.iterations);
    let unencodable = |_| bad("password cannot be encoded as PKCS#12 asks (a BMPString)");
    let (algorithm, key) = match mac.mac.algorithm.oid {
        SHA256 => (
            ring::hmac::HMAC_SHA256,
            derive_key_utf8::<sha2_10::Sha256>(password, salt, Pkcs12KeyType::Mac, rounds, 32)
                .map_err(unencodable)?,
        ),
        SHA1 => (
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            derive_key_utf8::<sha1_10::Sha1>(password, salt, Pkcs12KeyType::Mac, rounds, 20)
                .map_err(unencodable)?,
        ),
        other => {
            return Err(bad(format!(
                "uses MAC algorithm {other} (HMAC-SHA-256 or HMAC-SHA-1 expected)"
            )))
        }
    };
    let key = Zeroizing::new(key);
    ring::hmac::verify(
        &ring::hmac::Key::new(algorithm, &key),
        content,
        mac.mac.digest.as_bytes(),
    )
    .map_err(|_| bad("could not be opened: its MAC does not match (wrong password?)"))
}

/// Decrypt `data` under the password-based scheme `alg` (PBES2 with PBKDF2, checked by
/// [`iterations`] before this runs).
fn decrypt(
    alg: &AlgorithmIdentifierOwned,
    data: &[u8],
    password: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| bad("names an encryption scheme without parameters"))?;
    let params = pkcs5::pbes2::Parameters::try_from(der::AnyRef::from(params))
        .map_err(|e| bad(format!("names unusable PBES2 parameters: {e}")))?;
    pbes2_open(&params, password, data)
}

/// The AES key PBES2 `params` derive from `password` (PBKDF2 with an HMAC-SHA-2), in a buffer
/// wiped on drop.
fn pbes2_key(params: &pkcs5::pbes2::Parameters, password: &str) -> Result<Zeroizing<Vec<u8>>> {
    use pkcs5::pbes2::{Kdf, Pbkdf2Prf};
    let Kdf::Pbkdf2(kdf) = &params.kdf else {
        return Err(bad("uses a key derivation other than PBKDF2"));
    };
    let len = params.encryption.key_size();
    if kdf.key_length.is_some_and(|l| usize::from(l) != len) {
        return Err(bad("names a PBKDF2 key length its cipher does not take"));
    }
    let mut key = Zeroizing::new(vec![0u8; len]);
    let (password, salt, rounds) = (password.as_bytes(), kdf.salt, kdf.iteration_count);
    match kdf.prf {
        Pbkdf2Prf::HmacWithSha224 => {
            pbkdf2::pbkdf2_hmac::<sha2_10::Sha224>(password, salt, rounds, &mut key)
        }
        Pbkdf2Prf::HmacWithSha256 => {
            pbkdf2::pbkdf2_hmac::<sha2_10::Sha256>(password, salt, rounds, &mut key)
        }
        Pbkdf2Prf::HmacWithSha384 => {
            pbkdf2::pbkdf2_hmac::<sha2_10::Sha384>(password, salt, rounds, &mut key)
        }
        Pbkdf2Prf::HmacWithSha512 => {
            pbkdf2::pbkdf2_hmac::<sha2_10::Sha512>(password, salt, rounds, &mut key)
        }
        _ => {
            return Err(bad(
                "uses PBKDF2 with HMAC-SHA-1: export it again with HMAC-SHA-256 (the default \
                 of OpenSSL 3)",
            ))
        }
    }
    Ok(key)
}

/// `data` encrypted under PBES2 `params` (AES-256-CBC) with `password`, in a buffer of ours
/// (the plaintext is copied there, so the buffer is wiped whatever happens).
fn pbes2_seal(params: &pkcs5::pbes2::Parameters, password: &str, data: &[u8]) -> Result<Vec<u8>> {
    use cbc::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
    let pkcs5::pbes2::EncryptionScheme::Aes256Cbc { iv } = params.encryption else {
        return Err(encoding("PBES2 is written with AES-256-CBC only"));
    };
    let key = pbes2_key(params, password)?;
    let mut buf = Zeroizing::new(vec![0u8; data.len() + 16]);
    buf[..data.len()].copy_from_slice(data);
    let sealed = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, iv)
        .map_err(encoding)?
        .encrypt_padded_mut::<Pkcs7>(&mut buf, data.len())
        .map_err(encoding)?;
    Ok(sealed.to_vec())
}

/// `data` decrypted under PBES2 `params` (AES-CBC of any size) with `password`.
fn pbes2_open(
    params: &pkcs5::pbes2::Parameters,
    password: &str,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
    use pkcs5::pbes2::EncryptionScheme;
    fn open<C>(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Option<usize>
    where
        cbc::Decryptor<C>: KeyIvInit + BlockDecryptMut,
        C: cbc::cipher::BlockDecryptMut + cbc::cipher::BlockCipher,
    {
        let cipher = cbc::Decryptor::<C>::new_from_slices(key, iv).ok()?;
        cipher
            .decrypt_padded_mut::<Pkcs7>(buf)
            .ok()
            .map(<[u8]>::len)
    }
    let key = pbes2_key(params, password)?;
    let mut buf = Zeroizing::new(data.to_vec());
    let len = match params.encryption {
        EncryptionScheme::Aes128Cbc { iv } => open::<aes::Aes128>(&key, iv, &mut buf),
        EncryptionScheme::Aes192Cbc { iv } => open::<aes::Aes192>(&key, iv, &mut buf),
        EncryptionScheme::Aes256Cbc { iv } => open::<aes::Aes256>(&key, iv, &mut buf),
        _ => return Err(bad("uses a cipher other than AES-CBC")),
    }
    .ok_or_else(|| bad("could not be decrypted with this password"))?;
    buf.truncate(len);
    Ok(buf)
}

/// The iteration count of a password-based encryption scheme.
fn iterations(alg: &AlgorithmIdentifierOwned) -> Result<u64> {
    let params = || -> Result<Vec<u8>> {
        alg.parameters
            .as_ref()
            .ok_or_else(|| bad("names an encryption scheme without parameters"))?
            .to_der()
            .map_err(bad)
    };
    if alg.oid == PBES2 {
        let pbes2 = Pbes2Params::from_der(&params()?).map_err(bad)?;
        if pbes2.kdf.oid != PBKDF2 {
            return Err(bad(format!(
                "uses key derivation {} (only PBKDF2 is accepted)",
                pbes2.kdf.oid
            )));
        }
        let kdf = pbes2
            .kdf
            .parameters
            .as_ref()
            .ok_or_else(|| bad("names PBKDF2 without parameters"))?;
        let kdf = Pbkdf2Params::from_der(&kdf.to_der().map_err(bad)?).map_err(bad)?;
        return Ok(kdf.iteration_count.into());
    }
    if alg.oid.parent() == Some(PKCS12_PBE) {
        return Err(bad(
            "uses legacy PKCS#12 encryption (3DES or RC2, as `openssl pkcs12 -legacy` writes): \
             export it again with PBES2 (AES-256-CBC, the default of OpenSSL 3)",
        ));
    }
    Err(bad(format!(
        "uses encryption scheme {} (PBES2 expected)",
        alg.oid
    )))
}

/// The spec family and public key of a PKCS#8 private key: an RSA key (its size decides
/// among `RSA_2048/3072/4096`) or a P-256 / P-384 key. The public key comes from the private
/// key itself (for EC keys, computed from the scalar), so it cannot disagree with it.
pub fn private_key_public(pkcs8: &[u8]) -> Result<(KeySpec, PublicParts)> {
    let info = pkcs8::PrivateKeyInfo::from_der(pkcs8)
        .map_err(|_| bad("key bag does not hold a PKCS#8 private key"))?;
    let oid = info.algorithm.oid;
    if oid == OID_RSA {
        let key = pkcs1::RsaPrivateKey::from_der(info.private_key)
            .map_err(|_| bad("holds an RSA key that is not a valid RSAPrivateKey"))?;
        let modulus = key.modulus.as_bytes();
        let spec = match super::public_key::rsa_bits(modulus) {
            2048 => KeySpec::Rsa2048,
            3072 => KeySpec::Rsa3072,
            4096 => KeySpec::Rsa4096,
            bits => return Err(bad(format!("holds an RSA key of {bits} bits"))),
        };
        return Ok((
            spec,
            PublicParts::Rsa {
                modulus: modulus.to_vec(),
                exponent: key.public_exponent.as_bytes().to_vec(),
            },
        ));
    }
    if oid == OID_EC_PUBLIC_KEY {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::DecodePrivateKey;
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(|_| bad("holds an EC key without a named curve"))?;
        let invalid = |_| bad("holds an EC private key that is not valid on its curve");
        return if curve == OID_P256 {
            let key = p256::SecretKey::from_pkcs8_der(pkcs8).map_err(invalid)?;
            let point = key.public_key().to_encoded_point(false);
            Ok((
                KeySpec::EccNistP256,
                PublicParts::Ec(point.as_bytes().to_vec()),
            ))
        } else if curve == OID_P384 {
            let key = p384::SecretKey::from_pkcs8_der(pkcs8).map_err(invalid)?;
            let point = key.public_key().to_encoded_point(false);
            Ok((
                KeySpec::EccNistP384,
                PublicParts::Ec(point.as_bytes().to_vec()),
            ))
        } else {
            Err(bad(format!(
                "holds an EC key on curve {curve} (P-256 or P-384 expected)"
            )))
        };
    }
    Err(bad(format!(
        "holds a private key of algorithm {oid} (RSA or EC expected)"
    )))
}

/// The SubjectPublicKeyInfo DER of an X.509 certificate, named `field` in errors.
pub fn certificate_spki(field: &str, certificate: &[u8]) -> Result<Vec<u8>> {
    let cert = x509_cert::Certificate::from_der(certificate)
        .map_err(|_| Error::validation(format!("{field} is not a DER X.509 certificate")))?;
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| Error::validation(format!("{field} has an unreadable public key")))
}

/// Whether certificate `certificate` (DER) is of the public key `spec`/`parts`: the same
/// SubjectPublicKeyInfo once both are in keyplane's canonical form.
pub fn certificate_matches(
    field: &str,
    certificate: &[u8],
    spec: KeySpec,
    parts: &PublicParts,
) -> Result<bool> {
    let theirs = certificate_spki(field, certificate)?;
    let ours = spki_der(spec, parts)?;
    if theirs == ours {
        return Ok(true);
    }
    // The same key may be written differently (an EC point compressed, an RSA modulus with
    // a redundant zero byte): compare the parts, read from the caller's certificate as
    // untrusted input (anything unreadable simply does not match).
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::DecodePublicKey;
    Ok(match (spec, parts) {
        (KeySpec::EccNistP256, PublicParts::Ec(point)) => {
            p256::PublicKey::from_public_key_der(&theirs)
                .is_ok_and(|k| k.to_encoded_point(false).as_bytes() == point.as_slice())
        }
        (KeySpec::EccNistP384, PublicParts::Ec(point)) => {
            p384::PublicKey::from_public_key_der(&theirs)
                .is_ok_and(|k| k.to_encoded_point(false).as_bytes() == point.as_slice())
        }
        (_, PublicParts::Rsa { modulus, exponent }) => {
            spki::SubjectPublicKeyInfoRef::from_der(&theirs)
                .ok()
                .filter(|k| k.algorithm.oid == OID_RSA)
                .and_then(|k| k.subject_public_key.as_bytes())
                .and_then(|b| pkcs1::RsaPublicKey::from_der(b).ok())
                .is_some_and(|k| {
                    trim(k.modulus.as_bytes()) == trim(modulus)
                        && trim(k.public_exponent.as_bytes()) == trim(exponent)
                })
        }
        _ => false,
    })
}

fn trim(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key and a certificate of it (rcgen, self-signed).
    fn p256_pair() -> (Zeroizing<Vec<u8>>, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (Zeroizing::new(key.serialize_der()), cert.der().to_vec())
    }

    #[test]
    fn a_bundle_round_trips_and_names_its_key() {
        let (key, cert) = p256_pair();
        let der = encode_with(&key, &cert, "k", "correct horse", 1000).unwrap();
        let bundle = decode(&der, "correct horse").unwrap();
        assert_eq!(*bundle.private_key, *key);
        assert_eq!(bundle.certificate.as_deref(), Some(&cert[..]));
        let (spec, parts) = private_key_public(&bundle.private_key).unwrap();
        assert_eq!(spec, KeySpec::EccNistP256);
        assert!(certificate_matches("c", &cert, spec, &parts).unwrap());
        let (_, other) = p256_pair();
        assert!(!certificate_matches("c", &other, spec, &parts).unwrap());
    }

    /// The shape of the module docs: the certificate in an encrypted safe, the shrouded key in
    /// a plain one, both bags named, the MAC's salt fresh, nothing of the key in the clear.
    #[test]
    fn a_bundle_has_the_shape_of_the_module_docs() {
        let (key, cert) = p256_pair();
        let der = encode_with(&key, &cert, "k-1", "pw", 1000).unwrap();
        assert!(!der.windows(key.len()).any(|w| w == &key[..]));
        let pfx = Pfx::from_der(&der).unwrap();
        let mac = pfx.mac_data.as_ref().unwrap();
        assert_eq!((mac.iterations, mac.mac.algorithm.oid), (1000, SHA256));
        assert_eq!(mac.mac.algorithm.parameters, Some(Any::null()));
        assert_eq!(mac.mac_salt.as_bytes().len(), 16);
        let content = octets(&pfx.auth_safe.content).unwrap();
        let safes = Vec::<cms::content_info::ContentInfo>::from_der(&content).unwrap();
        let types: Vec<_> = safes.iter().map(|s| s.content_type).collect();
        assert_eq!(types, [ENCRYPTED_DATA, DATA]);
        let bags = SafeContents::from_der(&octets(&safes[1].content).unwrap()).unwrap();
        assert_eq!(bags.len(), 1);
        assert_eq!(bags[0].bag_id, SHROUDED_KEY_BAG);
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
        let data =
            cms::encrypted_data::EncryptedData::from_der(&safes[0].content.to_der().unwrap())
                .unwrap();
        let info = &data.enc_content_info;
        assert_eq!(iterations(&info.content_enc_alg).unwrap(), 1000);
        let sealed = info.encrypted_content.as_ref().unwrap().as_bytes();
        let certs = decrypt(&info.content_enc_alg, sealed, "pw").unwrap();
        let certs = SafeContents::from_der(&certs).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].bag_id, CERT_BAG);
        for bag in [&bags[0], &certs[0]] {
            assert_eq!(local_key_id(bag).as_deref(), Some(sha1.as_ref()));
            let attrs = bag.bag_attributes.as_ref().unwrap();
            let name = attrs.iter().find(|a| a.oid == FRIENDLY_NAME).unwrap();
            let name = name.values.iter().next().unwrap().to_der().unwrap();
            assert_eq!(BmpString::from_der(&name).unwrap().to_string(), "k-1");
        }
        // Salts and IVs are fresh: the same input never makes the same bundle.
        assert_ne!(der, encode_with(&key, &cert, "k-1", "pw", 1000).unwrap());
    }

    #[test]
    fn a_wrong_password_is_a_clear_refusal() {
        let (key, cert) = p256_pair();
        let der = encode_with(&key, &cert, "k", "correct horse", 1000).unwrap();
        let e = decode(&der, "battery staple").err().unwrap().to_string();
        assert!(e.contains("wrong password"), "{e}");
    }

    /// PBES2 runs here (so that the derived key is wiped); `pkcs5`'s own PBES2 is the
    /// reference it must agree with, both ways, for every PRF and AES size it reads.
    #[test]
    fn pbes2_agrees_with_pkcs5() {
        use pkcs5::pbes2::{EncryptionScheme, Kdf, Parameters, Pbkdf2Params, Pbkdf2Prf};
        let (salt, iv, data) = (
            [3u8; 16],
            [5u8; 16],
            b"a private key, more or less".to_vec(),
        );
        let ours = Parameters::pbkdf2_sha256_aes256cbc(1000, &salt, &iv).unwrap();
        let sealed = pbes2_seal(&ours, "pw", &data).unwrap();
        assert_eq!(ours.decrypt("pw", &sealed).unwrap(), data);
        for prf in [
            Pbkdf2Prf::HmacWithSha224,
            Pbkdf2Prf::HmacWithSha256,
            Pbkdf2Prf::HmacWithSha384,
            Pbkdf2Prf::HmacWithSha512,
        ] {
            for encryption in [
                EncryptionScheme::Aes128Cbc { iv: &iv },
                EncryptionScheme::Aes192Cbc { iv: &iv },
                EncryptionScheme::Aes256Cbc { iv: &iv },
            ] {
                let mut kdf = Pbkdf2Params::hmac_with_sha256(1000, &salt).unwrap();
                kdf.prf = prf;
                let params = Parameters {
                    kdf: Kdf::Pbkdf2(kdf),
                    encryption,
                };
                let sealed = params.encrypt("pw", &data).unwrap();
                assert_eq!(*pbes2_open(&params, "pw", &sealed).unwrap(), data);
                let e = pbes2_open(&params, "wrong", &sealed).err().unwrap();
                assert!(e.to_string().contains("this password"), "{e}");
            }
        }
        let mut kdf = Pbkdf2Params::hmac_with_sha256(1000, &salt).unwrap();
        kdf.prf = Pbkdf2Prf::HmacWithSha1;
        let params = Parameters {
            kdf: Kdf::Pbkdf2(kdf),
            encryption: EncryptionScheme::Aes256Cbc { iv: &iv },
        };
        let e = pbes2_open(&params, "pw", &sealed).err().unwrap();
        assert!(e.to_string().contains("HMAC-SHA-1"), "{e}");
    }

    #[test]
    fn work_is_bounded_before_any_derivation() {
        let (key, cert) = p256_pair();
        let der = encode_with(&key, &cert, "k", "pw", 1000).unwrap();
        decode_with(&der, "pw", 1000, 3000).unwrap();
        // The MAC, the certificate safe and the key bag each ask for 1000.
        let e = decode_with(&der, "pw", 999, 10_000)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("1000 key-derivation iterations"), "{e}");
        let e = decode_with(&der, "pw", 1000, 2999)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("in all"), "{e}");
    }

    /// Hand-made bundles: what a general-purpose reader would run unbounded or trip on.
    mod hostile {
        use super::*;
        use der::asn1::OctetString;
        use der::Any;

        const PBES2_ID: ObjectIdentifier = PBES2;

        /// A bag's value as `SafeBag` takes it to encode (it adds the `[0]` wrapper itself,
        /// and hands the wrapped TLV back when decoding).
        fn explicit<T: Encode>(value: T) -> Vec<u8> {
            value.to_der().unwrap()
        }

        /// A PBES2 (PBKDF2-SHA-256, AES-256-CBC) algorithm identifier of `iterations`, and
        /// `data` encrypted under it with `password`.
        fn pbes2(
            iterations: u32,
            password: &str,
            data: &[u8],
        ) -> (AlgorithmIdentifierOwned, Vec<u8>) {
            let params =
                pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(iterations, &[7; 16], &[9; 16])
                    .unwrap();
            // The ciphertext only matters where a test decrypts it: derive nothing else.
            let sealed = if iterations <= 10 {
                params.encrypt(password.as_bytes(), data).unwrap()
            } else {
                vec![0; 32]
            };
            let alg = AlgorithmIdentifierOwned {
                oid: PBES2_ID,
                parameters: Some(Any::from_der(&params.to_der().unwrap()).unwrap()),
            };
            (alg, sealed)
        }

        fn key_bag(iterations: u32, password: &str) -> SafeBag {
            let (key, _) = p256_pair();
            let (encryption_algorithm, sealed) = pbes2(iterations, password, &key);
            SafeBag {
                bag_id: SHROUDED_KEY_BAG,
                bag_value: explicit(EncryptedPrivateKeyInfo {
                    encryption_algorithm,
                    encrypted_data: OctetString::new(sealed).unwrap(),
                }),
                bag_attributes: None,
            }
        }

        fn data_safe(bags: Vec<SafeBag>) -> cms::content_info::ContentInfo {
            super::super::data_safe(bags).unwrap()
        }

        fn encrypted_safe(bags: Vec<SafeBag>, password: &str) -> cms::content_info::ContentInfo {
            let (alg, sealed) = pbes2(1, password, &bags.to_der().unwrap());
            super::super::encrypted_safe(alg, sealed).unwrap()
        }

        /// A PFX of `safes` with a one-iteration HMAC-SHA-256 MAC under `password`.
        fn pfx(safes: Vec<cms::content_info::ContentInfo>, password: &str) -> Vec<u8> {
            super::super::pfx(safes, password, 1, &[3; 8]).unwrap()
        }

        #[test]
        fn a_key_bag_inside_an_encrypted_safe_is_bounded_too() {
            // The outer safe costs one iteration; the key bag inside asks for 50 million.
            let der = pfx(
                vec![encrypted_safe(
                    vec![key_bag(50_000_000, "pw-pw-pw")],
                    "pw-pw-pw",
                )],
                "pw-pw-pw",
            );
            let started = std::time::Instant::now();
            let e = decode(&der, "pw-pw-pw").err().unwrap().to_string();
            assert!(e.contains("50000000 key-derivation iterations"), "{e}");
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
        }

        #[test]
        fn the_reader_opens_what_it_bounds() {
            // The same shape with a bag of few iterations opens: the bound, not the shape,
            // refused the one above. No certificate: a key alone.
            let der = pfx(
                vec![encrypted_safe(vec![key_bag(2, "pw-pw-pw")], "pw-pw-pw")],
                "pw-pw-pw",
            );
            let bundle = decode(&der, "pw-pw-pw").unwrap();
            assert_eq!(
                private_key_public(&bundle.private_key).unwrap().0,
                KeySpec::EccNistP256
            );
            assert!(bundle.certificate.is_none());
        }

        #[test]
        fn bags_of_other_kinds_and_other_schemes_are_refused() {
            let secret = SafeBag {
                bag_id: ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.5"),
                bag_value: explicit(OctetString::new(vec![1, 2, 3]).unwrap()),
                bag_attributes: None,
            };
            let der = pfx(
                vec![data_safe(vec![key_bag(2, "pw-pw-pw"), secret])],
                "pw-pw-pw",
            );
            let e = decode(&der, "pw-pw-pw").err().unwrap().to_string();
            assert!(e.contains("1.2.840.113549.1.12.10.1.5"), "{e}");
            // scrypt in place of PBKDF2.
            let mut bag = key_bag(2, "pw-pw-pw");
            let mut value = EncryptedPrivateKeyInfo::from_der(&bag.bag_value).unwrap();
            let mut params = Pbes2Params::from_der(
                &value
                    .encryption_algorithm
                    .parameters
                    .as_ref()
                    .unwrap()
                    .to_der()
                    .unwrap(),
            )
            .unwrap();
            params.kdf.oid = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11591.4.11");
            value.encryption_algorithm.parameters =
                Some(Any::from_der(&params.to_der().unwrap()).unwrap());
            bag.bag_value = explicit(value);
            let der = pfx(vec![data_safe(vec![bag])], "pw-pw-pw");
            let e = decode(&der, "pw-pw-pw").err().unwrap().to_string();
            assert!(e.contains("only PBKDF2"), "{e}");
            // Too many bags.
            let bags = (0..MAX_BAGS + 1).map(|_| key_bag(2, "pw-pw-pw")).collect();
            let e = decode(&pfx(vec![data_safe(bags)], "pw-pw-pw"), "pw-pw-pw")
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("more than 16 bags"), "{e}");
        }
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for input in [&b""[..], b"\x30\x03\x02\x01\x03", &[0x30; 200]] {
            assert!(decode(input, "pw").is_err());
        }
        let (key, cert) = p256_pair();
        let der = encode_with(&key, &cert, "k", "pw", 1000).unwrap();
        for cut in [1, der.len() / 2, der.len() - 1] {
            assert!(decode(&der[..cut], "pw").is_err());
        }
    }
}
