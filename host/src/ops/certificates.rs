//! X.509 for `sign-verify` keys: a certificate signing request for an external CA
//! (`generate-csr`) and a self-signed certificate of a version's public key (`get-public-key`
//! with `format: CERTIFICATE`), each signed in the HSM by that version itself; no private key
//! leaves the token. rcgen builds and encodes both. Its signer is a synchronous callback and
//! the HSM is reached asynchronously, so each is built twice: the first time the callback only
//! records the bytes to be signed (and answers a placeholder), the HSM signs those bytes, and
//! the second build, from the same parameters, must ask for the same bytes and gets the
//! signature. No thread waits on another (a blocking thread waiting for the HSM's own
//! blocking call could starve the blocking pool under load).
//!
//! Signature algorithms are the spec's: ECDSA with SHA-256 (P-256) or SHA-384 (P-384),
//! Ed25519, and RSASSA-PKCS1-v1_5 with SHA-256 for RSA keys (what every CA accepts).
//!
//! A self-signed certificate takes nothing from the caller: its subject and issuer are the
//! key id, its serial number random, its validity a year from now. `get-public-key` is
//! granted more widely than `sign`, and a certificate whose contents a caller chose would be
//! a signature over the caller's data; `generate-csr`, which takes a subject and names, is
//! an action of its own.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, RemoteKeyPair, SanType,
    SignatureAlgorithm as X509Algorithm,
};
use spki::der::Decode;

use super::OpContext;
use crate::algorithms::{KeySpec, SigningAlgorithm};
use crate::crypto::asym::MessageType;
use crate::error::{Error, Result};
use crate::store::keys::KeyVersionRow;

/// What to make.
pub(super) enum Request {
    /// A CSR for `subject` with subject alternative names `sans`.
    Csr {
        subject: DistinguishedName,
        sans: Vec<SanType>,
    },
    /// A certificate of the key's own public key, issued by itself (see the module docs).
    SelfSigned { key_id: String },
}

/// How long a self-signed certificate is valid.
const SELF_SIGNED_DAYS: i64 = 365;

/// The X.509 signature algorithm of a key of `spec`, and the signing algorithm it is.
fn algorithms(spec: KeySpec) -> Result<(&'static X509Algorithm, SigningAlgorithm)> {
    use crate::algorithms::Hash;
    Ok(match spec {
        KeySpec::EccNistP256 => (
            &rcgen::PKCS_ECDSA_P256_SHA256,
            SigningAlgorithm::EcdsaSha256,
        ),
        KeySpec::EccNistP384 => (
            &rcgen::PKCS_ECDSA_P384_SHA384,
            SigningAlgorithm::EcdsaSha384,
        ),
        KeySpec::Ed25519 => (&rcgen::PKCS_ED25519, SigningAlgorithm::Ed25519),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => (
            &rcgen::PKCS_RSA_SHA256,
            SigningAlgorithm::RsaPkcs1(Hash::Sha256),
        ),
        _ => {
            return Err(Error::InvalidKeyUsage(format!(
                "a {spec} key signs nothing: certificates need a sign-verify key"
            )))
        }
    })
}

/// A key version's public key as rcgen's remote key. Without a signature it records what it
/// is asked to sign; with one, it answers it for exactly those bytes.
struct TwoPass {
    /// The subjectPublicKey bits of its SubjectPublicKeyInfo (what rcgen calls raw).
    public: Vec<u8>,
    x509: &'static X509Algorithm,
    asked: Arc<Mutex<Option<Vec<u8>>>>,
    signature: Option<Vec<u8>>,
}

impl RemoteKeyPair for TwoPass {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let mut asked = self
            .asked
            .lock()
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        match &self.signature {
            None => {
                *asked = Some(msg.to_vec());
                Ok(vec![0; 64])
            }
            Some(signature) if asked.as_deref() == Some(msg) => Ok(signature.clone()),
            Some(_) => Err(rcgen::Error::RemoteKeyError),
        }
    }

    fn algorithm(&self) -> &'static X509Algorithm {
        self.x509
    }
}

/// Encode `params` as `request` says, signed by `key`.
fn encode(
    request: &Request,
    params: &CertificateParams,
    key: TwoPass,
) -> std::result::Result<String, rcgen::Error> {
    let key = KeyPair::from_remote(Box::new(key))?;
    match request {
        Request::Csr { .. } => params.serialize_request(&key)?.pem(),
        Request::SelfSigned { .. } => Ok(params.clone().self_signed(&key)?.pem()),
    }
}

/// The certificate parameters of `request`, made once (a self-signed certificate's serial and
/// dates included) so that both builds encode the same bytes.
fn params(request: &Request, now: i64) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    match request {
        Request::Csr { subject, sans } => {
            params.distinguished_name = subject.clone();
            params.subject_alt_names = sans.clone();
        }
        Request::SelfSigned { key_id } => {
            use chrono::Datelike;
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, key_id.as_str());
            // rcgen takes dates (midnight UTC): valid from today for a year.
            let now = chrono::DateTime::from_timestamp(now, 0).ok_or(Error::Internal)?;
            let until = now + chrono::Duration::days(SELF_SIGNED_DAYS);
            params.not_before =
                rcgen::date_time_ymd(now.year(), now.month() as u8, now.day() as u8);
            params.not_after =
                rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
            let mut serial = [0u8; 16];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
                .map_err(|_| Error::Internal)?;
            serial[0] &= 0x7f;
            params.serial_number = Some(serial.to_vec().into());
        }
    }
    Ok(params)
}

/// Make `request` for `version` of a key of `spec`; returns it as PEM.
pub(super) async fn sign_x509(
    ctx: &OpContext<'_>,
    spec: KeySpec,
    version: KeyVersionRow,
    request: Request,
) -> Result<String> {
    let (x509, algorithm) = algorithms(spec)?;
    let spki = ctx.state.keyring.public_key(&version, spec).await?.der;
    let public = spki::SubjectPublicKeyInfoRef::from_der(&spki)
        .map_err(|_| Error::Internal)?
        .subject_public_key
        .raw_bytes()
        .to_vec();
    let params = params(&request, ctx.state.clock.now())?;
    let asked = Arc::new(Mutex::new(None));
    let pass = |signature| TwoPass {
        public: public.clone(),
        x509,
        asked: asked.clone(),
        signature,
    };
    let failed = |e: rcgen::Error| {
        tracing::error!(error = %e, "could not build an X.509 structure");
        Error::Internal
    };
    encode(&request, &params, pass(None)).map_err(failed)?;
    let tbs = asked
        .lock()
        .map_err(|_| Error::Internal)?
        .clone()
        .ok_or(Error::Internal)?;
    let signature = ctx
        .state
        .keyring
        .sign(&version, spec, algorithm, MessageType::Raw, &tbs)
        .await?;
    encode(&request, &params, pass(Some(signature))).map_err(failed)
}

/// A CSR subject from its parts; each must be 1 to 64 printable characters.
pub(super) fn subject(parts: &[(DnType, &str, Option<&str>)]) -> Result<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    for (kind, field, value) in parts {
        let Some(value) = value else { continue };
        if value.is_empty() || value.chars().count() > 64 || value.chars().any(char::is_control) {
            return Err(Error::validation(format!(
                "subject.{field} must be 1 to 64 characters, none of them control characters"
            )));
        }
        // RFC 5280: countryName is a PrintableString (two letters, checked by the caller).
        if *kind == DnType::CountryName {
            let printable = rcgen::PrintableString::try_from(*value).map_err(|_| {
                Error::validation(format!("subject.{field} must be printable characters"))
            })?;
            dn.push(kind.clone(), rcgen::DnValue::PrintableString(printable));
        } else {
            dn.push(kind.clone(), *value);
        }
    }
    Ok(dn)
}

/// Subject alternative names: DNS names and IP addresses, at most 100 in all.
pub(super) fn sans(dns_names: &[String], ip_addresses: &[String]) -> Result<Vec<SanType>> {
    if dns_names.len() + ip_addresses.len() > 100 {
        return Err(Error::validation(
            "at most 100 subject alternative names (dns_names and ip_addresses)",
        ));
    }
    let mut out = Vec::new();
    for name in dns_names {
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').enumerate().all(|(i, label)| {
                (1..=63).contains(&label.len())
                    && (label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        || (i == 0 && label == "*"))
            });
        if !valid {
            return Err(Error::validation(format!(
                "dns_names: {name:?} is not a DNS name"
            )));
        }
        let ia5 = name
            .as_str()
            .try_into()
            .map_err(|_| Error::validation(format!("dns_names: {name:?} is not a DNS name")))?;
        out.push(SanType::DnsName(ia5));
    }
    for ip in ip_addresses {
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| Error::validation(format!("ip_addresses: {ip:?} is not an IP address")))?;
        out.push(SanType::IpAddress(addr));
    }
    Ok(out)
}
