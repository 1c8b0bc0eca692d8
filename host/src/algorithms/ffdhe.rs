//! Finite-field Diffie-Hellman over the groups of RFC 7919 (`FFDHE_2048`, `FFDHE_3072`):
//! their primes, and the SubjectPublicKeyInfo of their public keys.
//!
//! keyplane writes a public key as OpenSSL does for a key of a named group: algorithm
//! `dhKeyAgreement` (PKCS #3, 1.2.840.113549.1.3.1) with parameters `{ prime, base }`, and the
//! public value `y` as a DER INTEGER in the bit string. A peer's key may come that way or as
//! X9.42 `dhpublicnumber` (RFC 3279, 1.2.840.10046.2.1, parameters `{ p, g, q, ... }`), which
//! Python's `cryptography` writes; either way its group must be the key's (same prime,
//! generator 2, and for X9.42 `q = (p - 1) / 2`), and its public value must lie in
//! `2 ..= p - 2` (RFC 7919 section 5.1: the values 0, 1 and p - 1 would fix the shared
//! secret). Every RFC 7919 prime is a safe prime, so no other small subgroup exists.

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, UintRef};
use der::{Decode, Encode, Tag, Tagged};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

use crate::error::{Error, Result};

/// A group: its prime (big-endian) and generator.
pub struct Group {
    pub name: &'static str,
    pub prime: &'static [u8],
    pub generator: u8,
}

impl Group {
    /// Bytes of the prime, of a public value and of a shared secret.
    pub fn bytes(&self) -> usize {
        self.prime.len()
    }
}

/// `ffdhe2048`.
pub static FFDHE2048: Group = Group {
    name: "ffdhe2048",
    prime: &P2048,
    generator: 2,
};

/// `ffdhe3072`.
pub static FFDHE3072: Group = Group {
    name: "ffdhe3072",
    prime: &P3072,
    generator: 2,
};

/// dhKeyAgreement (PKCS #3).
pub const OID_DH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.3.1");
/// dhpublicnumber (X9.42, RFC 3279).
pub const OID_DHX: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10046.2.1");

const fn hex(s: &str) -> [u8; LEN_MAX] {
    let b = s.as_bytes();
    let mut out = [0u8; LEN_MAX];
    let mut i = 0;
    while i < b.len() / 2 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not an upper-case hex digit"),
    }
}

const LEN_MAX: usize = 384;

/// RFC 7919 appendix A.1: `ffdhe2048`'s prime.
const P2048_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B423861285C97FFFFFFFFFFFFFFFF",
);

/// RFC 7919 appendix A.2: `ffdhe3072`'s prime.
const P3072_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B",
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF",
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E",
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF",
);

const P2048: [u8; 256] = prefix(hex(P2048_HEX));
const P3072: [u8; 384] = hex(P3072_HEX);

const fn prefix(all: [u8; LEN_MAX]) -> [u8; 256] {
    let mut out = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        out[i] = all[i];
        i += 1;
    }
    out
}

fn internal(what: &'static str) -> impl Fn(der::Error) -> Error {
    move |e| {
        tracing::error!(error = %e, what, "DH public key encoding failed");
        Error::Internal
    }
}

/// The SubjectPublicKeyInfo DER of public value `y` (big-endian) in `group`.
pub fn spki_der(group: &Group, y: &[u8]) -> Result<Vec<u8>> {
    let params = vec![
        UintRef::new(group.prime).map_err(internal("prime"))?,
        UintRef::new(std::slice::from_ref(&group.generator)).map_err(internal("base"))?,
    ]
    .to_der()
    .map_err(internal("parameters"))?;
    let y = UintRef::new(y)
        .and_then(|y| y.to_der())
        .map_err(internal("public value"))?;
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: OID_DH,
            parameters: Some(AnyRef::from_der(&params).map_err(internal("parameters"))?),
        },
        subject_public_key: BitStringRef::from_bytes(&y).map_err(internal("bit string"))?,
    }
    .to_der()
    .map_err(internal("spki"))
}

/// The public value of SubjectPublicKeyInfo `der`, checked to be a key of `group` (module
/// docs), left-padded to the prime's length. `field` names the input in errors.
pub fn peer_value(group: &Group, field: &str, der: &[u8]) -> Result<Vec<u8>> {
    let bad = |why: &str| {
        Error::validation(format!(
            "{field} is not a usable {} public key: {why}",
            group.name
        ))
    };
    let spki =
        SubjectPublicKeyInfoRef::from_der(der).map_err(|_| bad("not a SubjectPublicKeyInfo"))?;
    let oid = spki.algorithm.oid;
    if oid != OID_DH && oid != OID_DHX {
        return Err(bad("not a Diffie-Hellman key"));
    }
    let params = spki
        .algorithm
        .parameters
        .ok_or_else(|| bad("no group parameters"))?
        .to_der()
        .map_err(|_| bad("unreadable group parameters"))?;
    let params =
        Vec::<AnyRef<'_>>::from_der(&params).map_err(|_| bad("unreadable group parameters"))?;
    let int = |i: usize| -> Option<&[u8]> {
        let any = params.get(i)?;
        (any.tag() == Tag::Integer)
            .then(|| UintRef::try_from(*any).ok().map(|u| u.as_bytes()))
            .flatten()
    };
    let (Some(p), Some(g)) = (int(0), int(1)) else {
        return Err(bad("unreadable group parameters"));
    };
    if p != group.prime || g != [group.generator] {
        return Err(bad("another group"));
    }
    if oid == OID_DHX && int(2) != Some(&half(group.prime)[..]) {
        return Err(bad("another subgroup order"));
    }
    let y = spki
        .subject_public_key
        .as_bytes()
        .and_then(|b| UintRef::from_der(b).ok())
        .ok_or_else(|| bad("unreadable public value"))?;
    let y = y.as_bytes();
    if y.len() > group.bytes() {
        return Err(bad("public value out of range"));
    }
    let mut padded = vec![0u8; group.bytes() - y.len()];
    padded.extend_from_slice(y);
    // 2 <= y <= p - 2, compared as equal-length big-endian numbers.
    let mut two = vec![0u8; group.bytes()];
    two[group.bytes() - 1] = 2;
    if padded < two || padded > minus(group.prime, 2) {
        return Err(bad("public value out of range (it must be 2 to p - 2)"));
    }
    Ok(padded)
}

/// `n - k` for a big-endian `n` >= `k`.
fn minus(n: &[u8], k: u8) -> Vec<u8> {
    let mut out = n.to_vec();
    let mut borrow = u16::from(k);
    for b in out.iter_mut().rev() {
        let v = u16::from(*b);
        if v >= borrow {
            *b = (v - borrow) as u8;
            return out;
        }
        *b = (v + 256 - borrow) as u8;
        borrow = 1;
    }
    out
}

/// `(n - 1) / 2` for an odd big-endian `n`, without leading zero bytes.
fn half(n: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(n.len());
    let mut carry = 0u8;
    for b in n {
        out.push(carry << 7 | b >> 1);
        carry = b & 1;
    }
    let first = out.iter().position(|b| *b != 0).unwrap_or(out.len() - 1);
    out.split_off(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_are_the_rfc_s() {
        // SHA-256 of the primes as OpenSSL has them built in
        // (`openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048`, and 3072).
        let digest = |g: &Group| hex::encode(ring::digest::digest(&ring::digest::SHA256, g.prime));
        assert_eq!(
            digest(&FFDHE2048),
            "9cd3b7f336872f46c09428d1bbc19877a4d440512cda8d1c1cf0cd6e33698966"
        );
        assert_eq!(
            digest(&FFDHE3072),
            "0eaf67db3a839156d5013494a5318a772b5697d270d721f37f092efc69ea5a17"
        );
    }

    #[test]
    fn our_encoding_reads_back_and_bounds_hold() {
        let g = &FFDHE2048;
        let mut y = vec![0u8; 256];
        y[0] = 0x12;
        y[255] = 0x34;
        let der = spki_der(g, &y).unwrap();
        assert_eq!(peer_value(g, "k", &der).unwrap(), y);
        // Another group's key, and the values 0, 1, p - 1 and p are refused.
        assert!(peer_value(&FFDHE3072, "k", &der).is_err());
        for v in [vec![0u8], vec![1u8], minus(g.prime, 1), g.prime.to_vec()] {
            let der = spki_der(g, &v).unwrap();
            let e = peer_value(g, "k", &der).err().unwrap().to_string();
            assert!(e.contains("out of range"), "{e}");
        }
        for v in [vec![2u8], minus(g.prime, 2)] {
            assert!(peer_value(g, "k", &spki_der(g, &v).unwrap()).is_ok());
        }
    }

    #[test]
    fn half_and_minus() {
        assert_eq!(half(&[0x01, 0x03]), vec![0x81]);
        assert_eq!(minus(&[0x01, 0x00], 1), vec![0x00, 0xff]);
    }
}
