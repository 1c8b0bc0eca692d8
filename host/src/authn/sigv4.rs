//! Server-side verification of AWS Signature Version 4 (`AWS4-HMAC-SHA256` in the
//! `Authorization` header), for an AWS-compatible front such as KMS or STS.
//!
//! # Use
//!
//! ```text
//! let req = sigv4::Request::from_parts(&parts, &body);
//! let claim = sigv4::parse(&req, "kms")?;              // no secret needed yet
//! claim.check_clock(clock.now())?;                      // optional: refuse stale requests before a lookup
//! let secret = lookup(claim.access_key_id())?;          // unknown key: UnrecognizedClientException (caller's)
//! let key = cache.get_or_insert(claim.key_scope(), || {
//!     sigv4::signing_key(&secret, claim.scope_date(), claim.region(), claim.service())
//! });
//! sigv4::verify(&req, &claim, &key, clock.now())?;
//! ```
//!
//! The split into [`parse`] and [`verify`] exists because the caller must learn the access key
//! id before it can find the secret. [`signing_key`] runs the four HMACs of the key derivation
//! once per (access key, date, region, service); a server caches the [`SigningKey`] under
//! [`Claim::key_scope`] (and must evict it when the secret changes), so a request costs one
//! SHA-256 of the body, one of the canonical request and one HMAC. `now` is always a value
//! passed in (seconds since the Unix epoch, as keyplane's `Clock::now()` gives): nothing here
//! reads a clock, so tests and the service clock decide.
//!
//! # What is checked, in order
//!
//! [`parse`] (the request alone): an `Authorization` header is present, exactly once, and no
//! presigned-URL query parameters (`X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Signature`,
//! `X-Amz-SignedHeaders`) — query-string authentication is not supported: no SDK presigns KMS
//! calls, and leaving it out removes a second parser and the `X-Amz-Expires` rules. The header
//! is `AWS4-HMAC-SHA256` then comma-separated `Credential=`, `SignedHeaders=`, `Signature=` in
//! any order, with any spaces or tabs around the commas (botocore and the AWS CLI send
//! `", "`, as do aws-sdk-go v1/v2 and aws-sigv4; hand-written clients send `","`); keys are
//! case-sensitive, each exactly once, unknown keys refused. A date is required: `X-Amz-Date`
//! (basic ISO 8601, `20150830T123600Z`), else `Date` (RFC 1123 / RFC 2822, as botocore writes
//! it when a `Date` header is present), and whichever is used must be signed. `host` must be
//! signed (for HTTP/2, where there is no `Host` header, its value is the URI authority). The
//! credential scope must be `<date>/<region>/<expected service>/aws4_request` and its date the
//! request's UTC date. Every name in `SignedHeaders` must be present in the request, and
//! `X-Amz-Target` (which names the action) must be signed when sent.
//!
//! [`verify`] (needs the key and the time): the request time is within 5 minutes of `now`; the
//! key is for the claim's scope; `x-amz-content-sha256`, when sent, equals the SHA-256 of the
//! body (`UNSIGNED-PAYLOAD` and the streaming markers are refused: the body is always hashed
//! here, as non-S3 AWS services do); then the signature over the canonical request, compared
//! in constant time ([`subtle`]).
//!
//! # Canonical request (non-S3 rules)
//!
//! - Method as received.
//! - URI: the raw path as received (still percent-encoded), dot segments removed and empty
//!   segments collapsed as RFC 3986 §5.2.4 says (`//example//` → `/example/`, `/a/b/..` →
//!   `/a/`), then every byte outside `A-Za-z0-9-._~` and `/` percent-encoded again, `%`
//!   included: a path that arrives as `/a%3Ab` signs as `/a%253Ab` ("double encoding"). This is
//!   what aws-sigv4 and aws-c-auth (the test suite's reference) do. Clients differ only on
//!   paths no SDK sends to KMS (whose path is always `/`): botocore also normalizes but drops
//!   the trailing slash of a path ending in `/.` or `/..`; the Go SDKs double-encode but do not
//!   remove dot segments.
//! - Query: split on `&` (empty pieces dropped), name and value split at the first `=` (a
//!   missing `=` is an empty value), each percent-decoded (`+` as a space, as
//!   `application/x-www-form-urlencoded` and aws-sigv4/aws-sdk-go read it; a malformed `%`
//!   escape is kept literally) and re-encoded with the unreserved set `A-Za-z0-9-._~`, sorted by
//!   name then value, joined as `name=value` with `&`.
//! - Headers: only those named in `SignedHeaders`, lowercase names, each value with leading and
//!   trailing spaces removed and inner runs of spaces made one (spaces only, as aws-sigv4 and
//!   the Go SDKs do; botocore would also fold an inner tab, and an HTTP server has already
//!   removed outer ones), the values of a repeated header joined with `,` in arrival order.
//!   For HTTP/2, which has no `Host` header, `host` takes the URI authority (`:authority`);
//!   that is why [`Request`] carries `authority`.
//! - The `SignedHeaders` list as sent (it must already be sorted, lowercase, without repeats).
//! - The hex SHA-256 of the body.
//!
//! # Errors, and the names AWS gives them
//!
//! [`SigV4Error::class`] tells apart the three kinds AWS names differently; the fronts map them
//! (through `error::AuthFailure`) to the name a JSON-protocol service (KMS: awsJson 1.1)
//! answers with in `__type`, or a query-protocol service (STS, IAM) puts in `<Code>`:
//!
//! | variant | JSON protocol (KMS) | query protocol (STS) |
//! | --- | --- | --- |
//! | `Missing` | `MissingAuthenticationTokenException` | `MissingAuthenticationToken` |
//! | `Incomplete` | `IncompleteSignatureException` | `IncompleteSignature` |
//! | `Scope`, `SignedHeaders`, `Expired`, `NotYetValid`, `PayloadHash`, `Invalid` | `InvalidSignatureException` | `SignatureDoesNotMatch` |
//!
//! Sources: public AWS responses quoted in SDK issue trackers — `InvalidSignatureException` with
//! HTTP 400 and `x-amz-json-1.1` for "Credential should be scoped to correct service: '…'."
//! (SageMaker, EMR, Batch), for "Signature expired: … - 5 min.)" (Kinesis, Rekognition, Secrets
//! Manager) and "Signature not yet current: …" (Kinesis); `SignatureDoesNotMatch` for the
//! expiry text from STS (whose window is 15 minutes, "- 15 min.)"; this module's is 5, as the
//! JSON services'); `IncompleteSignatureException` (HTTP 400) for a malformed
//! Authorization parameter (Cloud9); `MissingAuthenticationTokenException` "Request is missing
//! Authentication Token" with HTTP 400 from DynamoDB (the same awsJson stack as KMS); the IAM
//! user guide's "Troubleshoot signed requests" page for the scope and date wording; and the
//! scratchstack-aws-signature crate, which reproduces AWS's own ordering of these checks (host
//! not signed and credential-scope errors are `SignatureDoesNotMatch`, a credential without
//! five parts is `IncompleteSignature`). A wrong `x-amz-content-sha256` on a non-S3 service is
//! not an error of its own at AWS: the service hashes the body, so the signature the client
//! computed over the header's value does not match — `InvalidSignatureException`. (S3 alone
//! answers `XAmzContentSHA256Mismatch`.) An unknown access key is the caller's to report
//! (`UnrecognizedClientException` for KMS, `InvalidClientTokenId` for STS).
//!
//! Messages never contain the secret, the signing key or the expected signature, and neither
//! does any `Debug` output here; the claimed signature and session token are redacted too.
//!
//! # Why hand-written, and why `hmac` + `sha2`
//!
//! The `aws-sigv4` crate is a signer: its canonical-request builder is private, and its public
//! `sign` chooses the headers to sign itself (everything but a deny-list) and takes the time
//! from its own parameters, so it cannot rebuild the canonical request a client made from the
//! client's `SignedHeaders` list or a `Date` header. Its public
//! `sign::v4::generate_signing_key` would fit, but it copies the secret into an ordinary
//! `String` (`"AWS4" + secret`) and returns the key unzeroized, and the crate pulls in about 70
//! crates (tokio, the smithy runtime, `time`) for four HMACs; so it is a dev-dependency only,
//! used as the independent signer in the tests and to cross-check [`signing_key`]. The HMACs
//! here use `hmac` 0.13 and `sha2` 0.11 with their `zeroize` feature, which wipe the HMAC and
//! SHA-256 states and MAC outputs on drop; `ring` (already in keyplane) would add no crate, but
//! its `hmac::Key` and `Tag` keep key-equivalent state that cannot be wiped. The intermediate
//! keys (kDate, kRegion, kService) and the signing key live in `Zeroizing` buffers.
//! (Best effort: the padded key block `hmac` builds on the stack while keying is not wiped.)

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, DATE, HOST};
use http::Method;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far the request time may be from `now`, either way, in seconds (AWS: 5 minutes).
pub const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;

const TERMINATOR: &str = "aws4_request";
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
/// Headers that must be signed when a request carries them (name, as AWS spells it). Not the
/// session token: AWS's own suite signs one added after signing (`post-sts-header-after`), and
/// a request carrying one is refused whether it is signed or not.
const MUST_SIGN_IF_SENT: &[(&str, &str)] = &[("x-amz-target", "X-Amz-Target")];

/// AWS's message for a signature mismatch, word for word.
pub const MSG_SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// AWS's message for a request without any authentication (DynamoDB's, the same awsJson stack
/// as KMS).
pub const MSG_MISSING: &str = "Request is missing Authentication Token";

/// Longest piece of client input echoed back in an error message.
const ECHO_MAX: usize = 64;

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a request was refused, grouped by cause. `Display` gives the message to send back.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigV4Error {
    /// No `Authorization` header and no presigned-URL query parameters: the request is not
    /// signed at all.
    Missing,
    /// An `Authorization` header (or query signature) is there but malformed: not
    /// `AWS4-HMAC-SHA256`, a part missing or repeated, a bad credential or signature format,
    /// no usable date, or presigned-URL (query) authentication, which is not supported.
    Incomplete(String),
    /// The credential scope cannot be right for this request: another service, another date
    /// than the request's, an unusable region, or a terminator other than `aws4_request`.
    Scope(String),
    /// `SignedHeaders` leaves out a header that must be signed (`host`, the date header used)
    /// or names one the request does not carry.
    SignedHeaders(String),
    /// The request time is more than 5 minutes before `now`.
    Expired(String),
    /// The request time is more than 5 minutes after `now`.
    NotYetValid(String),
    /// `x-amz-content-sha256` is not the SHA-256 of the body (or is `UNSIGNED-PAYLOAD`, a
    /// streaming marker, or repeated).
    PayloadHash(String),
    /// The signature does not match (or the key passed is for another scope).
    Invalid,
}

impl SigV4Error {
    /// How AWS classes the failure: `Missing` (no signature), `Incomplete` (a malformed one),
    /// or an invalid signature (every other variant). Fronts name the three their own way
    /// (see the table above).
    pub fn class(&self) -> SigV4Class {
        match self {
            SigV4Error::Missing => SigV4Class::Missing,
            SigV4Error::Incomplete(_) => SigV4Class::Incomplete,
            _ => SigV4Class::Invalid,
        }
    }
}

/// The three kinds of SigV4 failure AWS services tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigV4Class {
    Missing,
    Incomplete,
    Invalid,
}

impl fmt::Display for SigV4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigV4Error::Missing => f.write_str(MSG_MISSING),
            SigV4Error::Incomplete(m)
            | SigV4Error::Scope(m)
            | SigV4Error::SignedHeaders(m)
            | SigV4Error::Expired(m)
            | SigV4Error::NotYetValid(m)
            | SigV4Error::PayloadHash(m) => f.write_str(m),
            SigV4Error::Invalid => f.write_str(MSG_SIGNATURE_MISMATCH),
        }
    }
}

impl fmt::Debug for SigV4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            SigV4Error::Missing => "Missing",
            SigV4Error::Incomplete(_) => "Incomplete",
            SigV4Error::Scope(_) => "Scope",
            SigV4Error::SignedHeaders(_) => "SignedHeaders",
            SigV4Error::Expired(_) => "Expired",
            SigV4Error::NotYetValid(_) => "NotYetValid",
            SigV4Error::PayloadHash(_) => "PayloadHash",
            SigV4Error::Invalid => "Invalid",
        };
        write!(f, "{name}({self})")
    }
}

impl std::error::Error for SigV4Error {}

fn incomplete(msg: impl Into<String>) -> SigV4Error {
    SigV4Error::Incomplete(msg.into())
}

/// Client input made safe to echo: at most [`ECHO_MAX`] characters, visible ASCII only.
fn echo(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(ECHO_MAX)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().count() > ECHO_MAX {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The request view

/// A borrowed view of an incoming HTTP request: what the signature covers.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The method, as received.
    pub method: &'a Method,
    /// The path as received, still percent-encoded (`http::Uri::path`).
    pub path: &'a str,
    /// The raw query string after `?`, if any (`http::Uri::query`).
    pub query: Option<&'a str>,
    /// The URI authority, used as the `host` value when there is no `Host` header (HTTP/2
    /// carries it as `:authority`, which hyper leaves in the URI).
    pub authority: Option<&'a str>,
    /// All request headers.
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The view of a request split into parts (as axum and hyper hand it over) and its body.
    pub fn from_parts(parts: &'a http::request::Parts, body: &'a [u8]) -> Self {
        Request {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            authority: parts.uri.authority().map(|a| a.as_str()),
            headers: &parts.headers,
            body,
        }
    }

    /// The view of a whole `http::Request` with a byte body.
    pub fn from_http<B: AsRef<[u8]>>(req: &'a http::Request<B>) -> Self {
        Request {
            method: req.method(),
            path: req.uri().path(),
            query: req.uri().query(),
            authority: req.uri().authority().map(|a| a.as_str()),
            headers: req.headers(),
            body: req.body().as_ref(),
        }
    }
}

impl fmt::Debug for Request<'_> {
    /// Header names only: values can hold tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("authority", &self.authority)
            .field("header_names", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// The claim

/// What an `Authorization` header claims, checked for form and scope by [`parse`]. (No
/// `PartialEq`: it holds the claimed signature, which is only ever compared in constant time.)
#[derive(Clone)]
pub struct Claim {
    access_key_id: String,
    scope_date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: [u8; 32],
    request_time: i64,
    amz_date: String,
    security_token: Option<String>,
}

/// The cache key for a [`SigningKey`]: the access key id and the credential scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyScope {
    /// The access key id.
    pub access_key_id: String,
    /// `YYYYMMDD`.
    pub date: String,
    /// The region.
    pub region: String,
    /// The service.
    pub service: String,
}

impl Claim {
    /// The access key id, to look the secret up by.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The credential scope's date, `YYYYMMDD` (equal to the request's UTC date).
    pub fn scope_date(&self) -> &str {
        &self.scope_date
    }

    /// The credential scope's region. Whether it is one this server serves is the caller's
    /// decision (AWS: "Credential should be scoped to a valid region, not '…'.",
    /// `InvalidSignatureException`).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The credential scope's service (always the expected one).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The signed header names, lowercase and sorted.
    pub fn signed_headers(&self) -> &[String] {
        &self.signed_headers
    }

    /// The request time, seconds since the Unix epoch.
    pub fn request_time(&self) -> i64 {
        self.request_time
    }

    /// The request time in basic ISO 8601, as it goes into the string to sign.
    pub fn amz_date(&self) -> &str {
        &self.amz_date
    }

    /// The `x-amz-security-token` header (temporary credentials), if the request carries one.
    /// Not part of this check: a caller that issues no session tokens should refuse a request
    /// that has one.
    pub fn security_token(&self) -> Option<&str> {
        self.security_token.as_deref()
    }

    /// The key under which to cache the [`SigningKey`] for this claim.
    pub fn key_scope(&self) -> KeyScope {
        KeyScope {
            access_key_id: self.access_key_id.clone(),
            date: self.scope_date.clone(),
            region: self.region.clone(),
            service: self.service.clone(),
        }
    }

    /// Whether the request time is within [`MAX_CLOCK_SKEW_SECS`] of `now` (seconds since the
    /// Unix epoch), with AWS's messages. [`verify`] calls it too; calling it early saves a
    /// secret lookup for a stale request.
    pub fn check_clock(&self, now: i64) -> Result<(), SigV4Error> {
        let earliest = now.saturating_sub(MAX_CLOCK_SKEW_SECS);
        let latest = now.saturating_add(MAX_CLOCK_SKEW_SECS);
        if self.request_time < earliest {
            return Err(SigV4Error::Expired(format!(
                "Signature expired: {} is now earlier than {} ({} - 5 min.)",
                self.amz_date,
                format_basic(earliest),
                format_basic(now)
            )));
        }
        if self.request_time > latest {
            return Err(SigV4Error::NotYetValid(format!(
                "Signature not yet current: {} is still later than {} ({} + 5 min.)",
                self.amz_date,
                format_basic(latest),
                format_basic(now)
            )));
        }
        Ok(())
    }

    fn credential_scope(&self) -> String {
        format!(
            "{}/{}/{}/{TERMINATOR}",
            self.scope_date, self.region, self.service
        )
    }
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("access_key_id", &self.access_key_id)
            .field("scope", &self.credential_scope())
            .field("signed_headers", &self.signed_headers)
            .field("amz_date", &self.amz_date)
            .field("signature", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets and signing keys

/// A secret access key, however the caller holds it.
pub trait SecretBytes {
    /// The secret's bytes (an AWS secret access key is ASCII).
    fn secret_bytes(&self) -> &[u8];
}

impl SecretBytes for secrecy::SecretString {
    fn secret_bytes(&self) -> &[u8] {
        secrecy::ExposeSecret::expose_secret(self).as_bytes()
    }
}

impl SecretBytes for secrecy::SecretSlice<u8> {
    fn secret_bytes(&self) -> &[u8] {
        secrecy::ExposeSecret::expose_secret(self)
    }
}

impl SecretBytes for Zeroizing<Vec<u8>> {
    fn secret_bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

impl SecretBytes for Zeroizing<Box<[u8]>> {
    fn secret_bytes(&self) -> &[u8] {
        self
    }
}

impl SecretBytes for Zeroizing<String> {
    fn secret_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// The derived SigV4 signing key (`kSigning`) for one date, region and service. Zeroized on
/// drop; `Debug` shows the scope only. Cheap to clone (32 bytes and three short strings).
#[derive(Clone)]
pub struct SigningKey {
    key: Zeroizing<[u8; 32]>,
    date: String,
    region: String,
    service: String,
}

impl SigningKey {
    /// Whether this key is for the claim's credential scope.
    pub fn is_for(&self, claim: &Claim) -> bool {
        self.date == claim.scope_date
            && self.region == claim.region
            && self.service == claim.service
    }

    /// The scope this key signs for: `(date, region, service)`.
    pub fn scope(&self) -> (&str, &str, &str) {
        (&self.date, &self.region, &self.service)
    }

    fn sign(&self, data: &[u8]) -> Zeroizing<[u8; 32]> {
        hmac_sha256(self.key.as_ref(), data)
    }

    #[cfg(test)]
    fn bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("date", &self.date)
            .field("region", &self.region)
            .field("service", &self.service)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The first step of the key derivation (`kDate`) for one secret and date: what every signing
/// key of that day derives from with three HMACs, whatever the region and service. Zeroized on
/// drop; `Debug` shows the date only.
pub struct DateKey {
    key: Zeroizing<[u8; 32]>,
    date: String,
}

impl DateKey {
    /// kSecret = "AWS4" + secret, kDate = HMAC(kSecret, date). `date` is `YYYYMMDD`
    /// ([`Claim::scope_date`]).
    pub fn derive<S: SecretBytes + ?Sized>(secret: &S, date: &str) -> DateKey {
        let secret = secret.secret_bytes();
        // Sized up front so that extending never reallocates and leaves a copy behind.
        let mut k_secret = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
        k_secret.extend_from_slice(b"AWS4");
        k_secret.extend_from_slice(secret);
        DateKey {
            key: hmac_sha256(&k_secret, date.as_bytes()),
            date: date.to_owned(),
        }
    }

    /// kRegion = HMAC(kDate, region), kService = HMAC(kRegion, service), kSigning =
    /// HMAC(kService, "aws4_request").
    pub fn signing_key(&self, region: &str, service: &str) -> SigningKey {
        let k_region = hmac_sha256(self.key.as_ref(), region.as_bytes());
        let k_service = hmac_sha256(k_region.as_ref(), service.as_bytes());
        SigningKey {
            key: hmac_sha256(k_service.as_ref(), TERMINATOR.as_bytes()),
            date: self.date.clone(),
            region: region.to_owned(),
            service: service.to_owned(),
        }
    }
}

impl fmt::Debug for DateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DateKey")
            .field("date", &self.date)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Derives the signing key: kSecret = "AWS4" + secret, kDate = HMAC(kSecret, date), kRegion =
/// HMAC(kDate, region), kService = HMAC(kRegion, service), kSigning = HMAC(kService,
/// "aws4_request"). `date` is `YYYYMMDD` ([`Claim::scope_date`]).
pub fn signing_key<S: SecretBytes + ?Sized>(
    secret: &S,
    date: &str,
    region: &str,
    service: &str,
) -> SigningKey {
    DateKey::derive(secret, date).signing_key(region, service)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 accepts a key of any length");
    mac.update(data);
    let tag = mac.finalize(); // zeroized when dropped
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(tag.as_bytes());
    out
}

fn sha256_hex(data: &[u8]) -> String {
    hex_lower(&Sha256::digest(data))
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Reads and checks the request's `Authorization` header against everything that needs no
/// secret and no clock (see the module documentation for the list). `expected_service` is the
/// signing name this endpoint answers to (`kms`, `sts`).
pub fn parse(req: &Request<'_>, expected_service: &str) -> Result<Claim, SigV4Error> {
    let mut auth_values = req.headers.get_all(AUTHORIZATION).iter();
    let auth = auth_values.next();
    let query_auth = query_has_auth_params(req.query);
    let auth = match (auth, query_auth) {
        (None, false) => return Err(SigV4Error::Missing),
        (None, true) => {
            return Err(incomplete(
                "Query-string (presigned URL) authentication is not supported here; sign the \
                 request with an Authorization header.",
            ))
        }
        (Some(_), true) => {
            return Err(incomplete(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
                 Signature query string parameter or the Authorization header should be \
                 specified",
            ))
        }
        (Some(v), false) => v,
    };
    if auth_values.next().is_some() {
        return Err(incomplete("Only one Authorization header is allowed."));
    }
    let auth = auth
        .to_str()
        .map_err(|_| incomplete("The Authorization header must be visible ASCII."))?;
    let fields = AuthFields::parse(auth)?;

    // AWS reports every missing part at once, the date included.
    let amz_date = single_header(req.headers, X_AMZ_DATE)?;
    let date = if amz_date.is_none() {
        single_header(req.headers, DATE.as_str())?
    } else {
        None
    };
    let mut missing = Vec::new();
    if fields.credential.is_none() {
        missing.push("Authorization header requires 'Credential' parameter.");
    }
    if fields.signature.is_none() {
        missing.push("Authorization header requires 'Signature' parameter.");
    }
    if fields.signed_headers.is_none() {
        missing.push("Authorization header requires 'SignedHeaders' parameter.");
    }
    if amz_date.is_none() && date.is_none() {
        missing.push(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
             header.",
        );
    }
    let (Some(credential), Some(signature), Some(signed_headers)) =
        (fields.credential, fields.signature, fields.signed_headers)
    else {
        return Err(incomplete(format!(
            "{} Authorization={ALGORITHM}",
            missing.join(" ")
        )));
    };
    if !missing.is_empty() {
        return Err(incomplete(format!(
            "{} Authorization={ALGORITHM}",
            missing.join(" ")
        )));
    }

    let signed_headers = parse_signed_headers(signed_headers)?;
    let signature = parse_signature(signature)?;
    let signed = |name: &str| {
        signed_headers
            .binary_search_by(|h| h.as_str().cmp(name))
            .is_ok()
    };

    if !signed(HOST.as_str()) {
        return Err(SigV4Error::SignedHeaders(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }

    // The request time: X-Amz-Date first, else Date; whichever is used must be signed.
    let (request_time, date_header) = match (amz_date, date) {
        (Some(v), _) => {
            let text = v.to_str().ok();
            let t = text.and_then(parse_basic).ok_or_else(|| {
                incomplete(format!(
                    "Date must be in ISO-8601 'basic format'. Got '{}'. See \
                     http://en.wikipedia.org/wiki/ISO_8601",
                    echo(&String::from_utf8_lossy(v.as_bytes()))
                ))
            })?;
            (t, X_AMZ_DATE)
        }
        (None, Some(v)) => {
            let t = v.to_str().ok().and_then(parse_http_date).ok_or_else(|| {
                incomplete(format!(
                    "The Date header must be an RFC 1123 date such as 'Sun, 30 Aug 2015 \
                     12:36:00 GMT' (or send X-Amz-Date). Got '{}'.",
                    echo(&String::from_utf8_lossy(v.as_bytes()))
                ))
            })?;
            (t, "date")
        }
        (None, None) => {
            return Err(incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
                 header.",
            ))
        }
    };
    if !signed(date_header) {
        let shown = if date_header == X_AMZ_DATE {
            "X-Amz-Date"
        } else {
            "Date"
        };
        return Err(SigV4Error::SignedHeaders(format!(
            "'{shown}' must be a 'SignedHeader' in the AWS Authorization."
        )));
    }
    let amz_date = format_basic(request_time);
    // Headers that say what the request does must be covered by the signature when sent: the
    // KMS front takes the action from `X-Amz-Target`, so an unsigned one would let whoever
    // sees a signed `DescribeKey` replay its body as `DisableKey` or `ScheduleKeyDeletion`
    // within the clock window. Every SDK signs both (botocore and the AWS SDKs sign all
    // headers but a few transport ones: `User-Agent`, `X-Amzn-Trace-Id`, `Expect`...).
    for (name, shown) in MUST_SIGN_IF_SENT {
        if req.headers.contains_key(*name) && !signed(name) {
            return Err(SigV4Error::SignedHeaders(format!(
                "'{shown}' must be a 'SignedHeader' in the AWS Authorization."
            )));
        }
    }

    // The credential: <access key id>/<date>/<region>/<service>/aws4_request.
    let parts: Vec<&str> = credential.split('/').collect();
    let [akid, scope_date, region, service, terminator] = parts[..] else {
        return Err(incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got '{}'",
            echo(credential)
        )));
    };
    if akid.is_empty() || akid.len() > 128 || !akid.bytes().all(is_unreserved) {
        return Err(incomplete(
            "The access key id in Credential must be 1 to 128 characters from A-Z a-z 0-9 - . _ ~",
        ));
    }
    let mut scope_errors = Vec::new();
    if region.is_empty()
        || region.len() > 64
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        scope_errors.push(format!(
            "Credential should be scoped to a valid region, not '{}'.",
            echo(region)
        ));
    }
    if service != expected_service {
        scope_errors.push(format!(
            "Credential should be scoped to correct service: '{expected_service}'."
        ));
    }
    if terminator != TERMINATOR {
        scope_errors.push(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'.",
            echo(terminator)
        ));
    }
    let request_day = &amz_date[..8];
    if scope_date != request_day {
        scope_errors.push(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
             from HTTP: '{}' != '{request_day}', from '{amz_date}'.",
            echo(scope_date)
        ));
    }
    if !scope_errors.is_empty() {
        return Err(SigV4Error::Scope(scope_errors.join(" ")));
    }

    for name in &signed_headers {
        let present = if name == HOST.as_str() {
            req.headers.contains_key(HOST) || req.authority.is_some()
        } else {
            req.headers.contains_key(name.as_str())
        };
        if !present {
            return Err(SigV4Error::SignedHeaders(format!(
                "'{name}' is listed in SignedHeaders but the request has no such header."
            )));
        }
    }

    // Present is what counts (a value that is not visible ASCII is still a session token
    // the caller means keyplane to honour, and it does not issue any).
    let security_token = req
        .headers
        .get(X_AMZ_SECURITY_TOKEN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());

    Ok(Claim {
        access_key_id: akid.to_owned(),
        scope_date: scope_date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature,
        request_time,
        amz_date,
        security_token,
    })
}

/// The three parameters of an `Authorization` header, each still unchecked.
struct AuthFields<'h> {
    credential: Option<&'h str>,
    signed_headers: Option<&'h str>,
    signature: Option<&'h str>,
}

impl<'h> AuthFields<'h> {
    fn parse(header: &'h str) -> Result<Self, SigV4Error> {
        let is_ws = |c: char| c == ' ' || c == '\t';
        let header = header.trim_matches(is_ws);
        let (algorithm, params) = header.split_once(is_ws).unwrap_or((header, ""));
        if algorithm != ALGORITHM {
            // Echo the scheme only when it looks like an AWS one: anything else may be a
            // bearer token.
            let shown = if algorithm.starts_with("AWS")
                && algorithm.len() <= 32
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                format!("'{algorithm}'")
            } else {
                "(not shown)".to_owned()
            };
            return Err(incomplete(format!(
                "Unsupported AWS 'algorithm': {shown}. Only {ALGORITHM} is accepted."
            )));
        }
        let mut fields = AuthFields {
            credential: None,
            signed_headers: None,
            signature: None,
        };
        for param in params.split(',') {
            let param = param.trim_matches(is_ws);
            if param.is_empty() {
                continue;
            }
            let Some((key, value)) = param.split_once('=') else {
                return Err(incomplete(format!(
                    "'{}' not a valid key=value pair (missing equal-sign) in Authorization header.",
                    echo(param)
                )));
            };
            let key = key.trim_matches(is_ws);
            let value = value.trim_matches(is_ws);
            let slot = match key {
                "Credential" => &mut fields.credential,
                "SignedHeaders" => &mut fields.signed_headers,
                "Signature" => &mut fields.signature,
                other => {
                    return Err(incomplete(format!(
                        "Unknown parameter '{}' in Authorization header; only Credential, \
                         SignedHeaders and Signature are allowed.",
                        echo(other)
                    )))
                }
            };
            if slot.replace(value).is_some() {
                return Err(incomplete(format!(
                    "Authorization header has more than one '{key}' parameter."
                )));
            }
        }
        Ok(fields)
    }
}

fn parse_signed_headers(list: &str) -> Result<Vec<String>, SigV4Error> {
    if list.is_empty() {
        // AWS answers this with the missing-host error, which follows.
        return Ok(Vec::new());
    }
    let names: Vec<&str> = list.split(';').collect();
    let well_formed = names
        .iter()
        .all(|n| !n.is_empty() && n.bytes().all(is_lower_tchar));
    let sorted_unique = names.windows(2).all(|w| w[0] < w[1]);
    if !well_formed || !sorted_unique || names.len() > 64 {
        return Err(incomplete(
            "SignedHeaders must be a ';'-separated list of lowercase header names in ascending \
             order, each once (at most 64).",
        ));
    }
    Ok(names.into_iter().map(str::to_owned).collect())
}

fn parse_signature(hex: &str) -> Result<[u8; 32], SigV4Error> {
    let bad = || incomplete("Signature must be 64 lowercase hexadecimal digits.");
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
        let hi = lower_hex_value(pair[0]).ok_or_else(bad)?;
        let lo = lower_hex_value(pair[1]).ok_or_else(bad)?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

/// The one value of a header, `None` when absent, an error when repeated.
fn single_header<'m>(
    headers: &'m HeaderMap,
    name: &str,
) -> Result<Option<&'m HeaderValue>, SigV4Error> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(incomplete(format!("Only one '{name}' header is allowed.")));
    }
    Ok(first)
}

fn query_has_auth_params(query: Option<&str>) -> bool {
    const NAMES: [&[u8]; 4] = [
        b"X-Amz-Algorithm",
        b"X-Amz-Credential",
        b"X-Amz-Signature",
        b"X-Amz-SignedHeaders",
    ];
    query.is_some_and(|q| {
        q.split('&').any(|piece| {
            let name = piece.split_once('=').map_or(piece, |(n, _)| n);
            NAMES.contains(&percent_decode(name).as_slice())
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Verification

/// Verifies the request's signature with `key`, at time `now` (seconds since the Unix epoch).
/// `claim` comes from [`parse`] on the same request; `key` from [`signing_key`] for the claim's
/// scope (a key for another scope is refused as [`SigV4Error::Invalid`]).
pub fn verify(
    req: &Request<'_>,
    claim: &Claim,
    key: &SigningKey,
    now: i64,
) -> Result<(), SigV4Error> {
    claim.check_clock(now)?;
    if !key.is_for(claim) {
        return Err(SigV4Error::Invalid);
    }
    let payload_hash = sha256_hex(req.body);
    check_content_sha256(req.headers, &payload_hash)?;
    let canonical = canonical_request(req, claim, &payload_hash);
    let string_to_sign = string_to_sign(claim, &canonical);
    let expected = key.sign(string_to_sign.as_bytes());
    if bool::from(expected.as_ref().ct_eq(&claim.signature)) {
        Ok(())
    } else {
        Err(SigV4Error::Invalid)
    }
}

fn check_content_sha256(headers: &HeaderMap, payload_hash: &str) -> Result<(), SigV4Error> {
    let mut values = headers.get_all(X_AMZ_CONTENT_SHA256).iter();
    let Some(value) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err(SigV4Error::PayloadHash(
            "Only one 'x-amz-content-sha256' header is allowed.".into(),
        ));
    }
    let value = value.as_bytes();
    if value == payload_hash.as_bytes() {
        return Ok(());
    }
    if value == b"UNSIGNED-PAYLOAD" || value.starts_with(b"STREAMING-") {
        return Err(SigV4Error::PayloadHash(
            "x-amz-content-sha256 must be the hex SHA-256 of the body: unsigned and streaming \
             payloads are not accepted by this service."
                .into(),
        ));
    }
    Err(SigV4Error::PayloadHash(
        "The provided 'x-amz-content-sha256' header does not match what was computed.".into(),
    ))
}

/// The canonical request, as bytes (header values need not be UTF-8).
/// Parse `req`'s signature and, if it parses, build its canonical request and string to sign
/// (everything before the secret is needed): for the fuzz targets (`crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub fn fuzz(req: &Request<'_>) {
    for service in ["kms", "sts"] {
        if let Ok(claim) = parse(req, service) {
            let _ = claim.check_clock(0);
            let _ = claim.key_scope();
            let payload_hash = sha256_hex(req.body);
            let _ = check_content_sha256(req.headers, &payload_hash);
            let canonical = canonical_request(req, &claim, &payload_hash);
            let _ = string_to_sign(&claim, &canonical);
        }
    }
}

fn canonical_request(req: &Request<'_>, claim: &Claim, payload_hash: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + req.path.len() + req.query.map_or(0, str::len));
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(req.path).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(req.query).as_bytes());
    out.push(b'\n');
    for name in &claim.signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut values = req.headers.get_all(name.as_str()).iter().peekable();
        if values.peek().is_none() && name == HOST.as_str() {
            if let Some(authority) = req.authority {
                push_trimmed(&mut out, authority.as_bytes());
            }
        }
        let mut first = true;
        for value in values {
            if !first {
                out.push(b',');
            }
            first = false;
            push_trimmed(&mut out, value.as_bytes());
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(claim.signed_headers.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

fn string_to_sign(claim: &Claim, canonical_request: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        claim.amz_date,
        claim.credential_scope(),
        hex_lower(&Sha256::digest(canonical_request))
    )
}

/// Appends `value` without leading and trailing spaces, inner runs of spaces made one.
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let start = value.iter().position(|&b| b != b' ');
    let Some(start) = start else { return };
    let end = value
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |e| e + 1);
    let mut prev_space = false;
    for &b in &value[start..end] {
        if b == b' ' {
            if !prev_space {
                out.push(b);
            }
            prev_space = true;
        } else {
            out.push(b);
            prev_space = false;
        }
    }
}

/// The raw path normalized (RFC 3986 §5.2.4, empty segments dropped) and encoded again.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    // Per RFC 3986, a path ending in "/", "/." or "/.." keeps a trailing slash.
    let trailing_slash = ["/", "/.", "/.."].iter().any(|end| path.ends_with(end));
    let mut out = String::with_capacity(path.len() + 16);
    out.push('/');
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        percent_encode_into(&mut out, segment.as_bytes());
    }
    if trailing_slash && !segments.is_empty() {
        out.push('/');
    }
    out
}

fn canonical_query(query: Option<&str>) -> String {
    let Some(query) = query else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            let mut n = String::new();
            let mut v = String::new();
            percent_encode_into(&mut n, &percent_decode(name));
            percent_encode_into(&mut v, &percent_decode(value));
            (n, v)
        })
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(query.len() + 16);
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A character allowed in a lowercase header name (RFC 9110 `tchar`, letters lowercase).
fn is_lower_tchar(b: u8) -> bool {
    b.is_ascii_lowercase()
        || b.is_ascii_digit()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn percent_encode_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// Percent-decoding for query components: `+` is a space, a malformed escape stays as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match (any_hex_value(bytes[i + 1]), any_hex_value(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi << 4) | lo);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn any_hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn lower_hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Time (UTC, seconds since the Unix epoch; no clock is read here)

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn to_unix(year: i64, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<i64> {
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && min < 60
        && sec < 60;
    valid.then(|| {
        days_from_civil(year, month, day) * 86_400
            + i64::from(hour) * 3600
            + i64::from(min) * 60
            + i64::from(sec)
    })
}

/// `YYYYMMDDTHHMMSSZ`.
fn format_basic(t: i64) -> String {
    let (y, mo, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// Strict basic ISO 8601 in UTC: `20150830T123600Z`.
fn parse_basic(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    to_unix(
        i64::from(digits(&b[0..4])?),
        digits(&b[4..6])?,
        digits(&b[6..8])?,
        digits(&b[9..11])?,
        digits(&b[11..13])?,
        digits(&b[13..15])?,
    )
}

/// An RFC 1123 / RFC 2822 date: `[Www, ]D[D] Mon YYYY HH:MM:SS ZONE`, the zone `GMT`, `UT`,
/// `UTC`, `Z` or `±HHMM` (botocore writes `-0000`).
fn parse_http_date(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let mut rest = s.trim();
    if let Some((weekday, after)) = rest.split_once(',') {
        if !DAYS.contains(&weekday.trim()) {
            return None;
        }
        rest = after;
    }
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let [day, month, year, time, zone] = fields[..] else {
        return None;
    };
    if day.len() > 2 || year.len() != 4 {
        return None;
    }
    let day = digits(day.as_bytes())?;
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let year = i64::from(digits(year.as_bytes())?);
    let t = time.as_bytes();
    if t.len() != 8 || t[2] != b':' || t[5] != b':' {
        return None;
    }
    let (hour, min, sec) = (digits(&t[0..2])?, digits(&t[3..5])?, digits(&t[6..8])?);
    let offset_secs = match zone {
        "GMT" | "UT" | "UTC" | "Z" => 0,
        _ => {
            let z = zone.as_bytes();
            if z.len() != 5 || !matches!(z[0], b'+' | b'-') {
                return None;
            }
            let (hh, mm) = (digits(&z[1..3])?, digits(&z[3..5])?);
            if hh > 23 || mm > 59 {
                return None;
            }
            let secs = i64::from(hh * 3600 + mm * 60);
            if z[0] == b'-' {
                -secs
            } else {
                secs
            }
        }
    };
    Some(to_unix(year, month, day, hour, min, sec)? - offset_secs)
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    //! Vectors from AWS's SigV4 test suite (`sigv4_vectors/`, see its README), requests signed
    //! by an independent signer (the `aws-sigv4` crate), property tests of tampering and of
    //! arbitrary input, and one test per refusal.

    use super::*;
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
    };
    use aws_sigv4::sign::v4 as aws_v4;
    use http::header::HeaderName;
    use proptest::prelude::*;
    use secrecy::SecretString;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SUITE_TIME: &str = "20150830T123600Z";

    fn secret() -> SecretString {
        SecretString::from(SECRET)
    }

    fn t(basic: &str) -> i64 {
        parse_basic(basic).expect("valid basic date")
    }

    fn system_time(unix: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).expect("after 1970"))
    }

    /// An owned request, for tests to build and change.
    #[derive(Clone, Debug)]
    struct Owned {
        method: Method,
        path: String,
        query: Option<String>,
        authority: Option<String>,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Owned {
        fn view(&self) -> Request<'_> {
            Request {
                method: &self.method,
                path: &self.path,
                query: self.query.as_deref(),
                authority: self.authority.as_deref(),
                headers: &self.headers,
                body: &self.body,
            }
        }

        fn from_http(req: &http::Request<Vec<u8>>) -> Self {
            Owned {
                method: req.method().clone(),
                path: req.uri().path().to_owned(),
                query: req.uri().query().map(str::to_owned),
                authority: req.uri().authority().map(|a| a.as_str().to_owned()),
                headers: req.headers().clone(),
                body: req.body().clone(),
            }
        }

        /// Verifies with a freshly derived key for the claim.
        fn check(&self, service: &str, now: i64) -> Result<Claim, SigV4Error> {
            let claim = parse(&self.view(), service)?;
            let key = signing_key(
                &secret(),
                claim.scope_date(),
                claim.region(),
                claim.service(),
            );
            verify(&self.view(), &claim, &key, now)?;
            Ok(claim)
        }
    }

    /// Reads a test-suite `request.txt`: request line, headers (obs-fold continuation lines
    /// unfolded into one space, as an HTTP server must), blank line, body. The request target
    /// is taken as is, raw spaces and UTF-8 included.
    fn parse_request_txt(text: &str) -> Owned {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let request_line = lines.next().expect("request line");
        let (method, rest) = request_line.split_once(' ').expect("method");
        let target = rest.rsplit_once(' ').map_or(rest, |(t, _version)| t);
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let last = fields.last_mut().expect("continuation after a field");
                last.1.push(' ');
                last.1.push_str(line.trim());
            } else {
                let (name, value) = line.split_once(':').expect("name:value");
                fields.push((name.to_owned(), value.trim().to_owned()));
            }
        }
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(&value).expect("header value"),
            );
        }
        Owned {
            method: Method::from_bytes(method.as_bytes()).expect("method"),
            path,
            query,
            authority: None,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    struct Vector {
        name: &'static str,
        request: &'static str,
        canonical_request: &'static str,
        string_to_sign: &'static str,
        signature: &'static str,
    }

    macro_rules! vectors {
        ($($name:literal),* $(,)?) => {
            [$(Vector {
                name: $name,
                request: include_str!(concat!("sigv4_vectors/", $name, "/request.txt")),
                canonical_request:
                    include_str!(concat!("sigv4_vectors/", $name, "/canonical-request.txt")),
                string_to_sign:
                    include_str!(concat!("sigv4_vectors/", $name, "/string-to-sign.txt")),
                signature: include_str!(concat!("sigv4_vectors/", $name, "/signature")),
            }),*]
        };
    }

    /// Region, service and time of the suite (all but `double-url-encode`).
    fn context(name: &str) -> (&'static str, &'static str, &'static str) {
        if name == "double-url-encode" {
            ("us-east-2", "lambda", "20210511T154045Z")
        } else {
            ("us-east-1", "service", SUITE_TIME)
        }
    }

    #[test]
    fn aws_test_suite_vectors() {
        let vectors = vectors![
            "double-url-encode",
            "get-header-key-duplicate",
            "get-header-value-multiline",
            "get-header-value-order",
            "get-header-value-trim",
            "get-relative-normalized",
            "get-relative-relative-normalized",
            "get-slash-dot-slash-normalized",
            "get-slash-normalized",
            "get-slash-pointless-dot-normalized",
            "get-slashes-normalized",
            "get-space-normalized",
            "get-unreserved",
            "get-utf8",
            "get-vanilla",
            "get-vanilla-empty-query-key",
            "get-vanilla-query",
            "get-vanilla-query-order-encoded",
            "get-vanilla-query-order-key-case",
            "get-vanilla-query-unreserved",
            "get-vanilla-utf8-query",
            "get-vanilla-with-session-token",
            "post-header-key-case",
            "post-header-key-sort",
            "post-header-value-case",
            "post-sts-header-after",
            "post-sts-header-before",
            "post-vanilla",
            "post-vanilla-empty-query-value",
            "post-vanilla-query",
            "post-x-www-form-urlencoded",
            "post-x-www-form-urlencoded-parameters",
        ];
        for v in &vectors {
            let (region, service, time) = context(v.name);
            let req = parse_request_txt(v.request);
            let claim =
                parse(&req.view(), service).unwrap_or_else(|e| panic!("{}: parse: {e:?}", v.name));
            assert_eq!(claim.access_key_id(), AKID, "{}", v.name);
            assert_eq!(claim.region(), region, "{}", v.name);
            assert_eq!(claim.amz_date(), time, "{}", v.name);

            let payload_hash = sha256_hex(&req.body);
            let canonical = canonical_request(&req.view(), &claim, &payload_hash);
            assert_eq!(
                String::from_utf8_lossy(&canonical),
                v.canonical_request.trim_end_matches('\n'),
                "{}: canonical request",
                v.name
            );
            let sts = string_to_sign(&claim, &canonical);
            assert_eq!(
                sts,
                v.string_to_sign.trim_end_matches('\n'),
                "{}: string to sign",
                v.name
            );

            let key = signing_key(&secret(), claim.scope_date(), region, service);
            assert_eq!(
                hex_lower(key.sign(sts.as_bytes()).as_ref()),
                v.signature.trim(),
                "{}: signature",
                v.name
            );
            verify(&req.view(), &claim, &key, t(time))
                .unwrap_or_else(|e| panic!("{}: verify: {e:?}", v.name));
        }
    }

    /// The `*-unnormalized` cases sign the path as sent (S3's way). A non-S3 verifier
    /// normalizes, so it must refuse them whenever normalizing changes the path.
    #[test]
    fn unnormalized_signatures_are_refused() {
        for v in &vectors!["get-slash-unnormalized", "get-relative-unnormalized"] {
            let req = parse_request_txt(v.request);
            assert_eq!(
                req.check("service", t(SUITE_TIME)).unwrap_err(),
                SigV4Error::Invalid,
                "{}",
                v.name
            );
        }
    }

    #[test]
    fn double_encode_path_canonical_uri() {
        // From the suite's double-encode-path case (its canonical request has another date).
        assert_eq!(
            canonical_uri("/test/@connections/JBDvjfGEIAMCERw%3D"),
            "/test/%40connections/JBDvjfGEIAMCERw%253D"
        );
    }

    #[test]
    fn canonical_uri_normalization() {
        for (raw, canonical) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/./", "/"),
            ("/..", "/"),
            ("/../../a", "/a"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/./b", "/a/b"),
            ("//example//", "/example/"),
            ("/a%2Fb", "/a%252Fb"),
            ("/%2E%2E/x", "/%252E%252E/x"),
            ("/a b", "/a%20b"),
            ("/~user/-._", "/~user/-._"),
        ] {
            assert_eq!(canonical_uri(raw), canonical, "{raw:?}");
        }
    }

    #[test]
    fn canonical_query_rules() {
        for (raw, canonical) in [
            (None, ""),
            (Some(""), ""),
            (Some("b=2&a=1"), "a=1&b=2"),
            (Some("a=2&a=1"), "a=1&a=2"),
            (Some("a"), "a="),
            (Some("a&&b="), "a=&b="),
            (Some("q=a+b"), "q=a%20b"),
            (Some("q=a%2bb"), "q=a%2Bb"),
            (Some("q=%zz%"), "q=%25zz%25"),
            (Some("k=v=w"), "k=v%3Dw"),
            (Some("%7e=~"), "~=~"),
        ] {
            assert_eq!(canonical_query(raw), canonical, "{raw:?}");
        }
    }

    // -- The AWS documentation's signing-key example, and aws-sigv4 as a second opinion ----

    #[test]
    fn signing_key_matches_aws_documentation_example() {
        // "Examples of how to derive a signing key for Signature Version 4" (AWS General
        // Reference): 20120215 / us-east-1 / iam with the example secret.
        let key = signing_key(&secret(), "20120215", "us-east-1", "iam");
        assert_eq!(
            hex_lower(key.bytes()),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
        // Every way of holding the secret derives the same key.
        let from_vec = signing_key(
            &Zeroizing::new(SECRET.as_bytes().to_vec()),
            "20120215",
            "us-east-1",
            "iam",
        );
        let from_string = signing_key(
            &Zeroizing::new(SECRET.to_owned()),
            "20120215",
            "us-east-1",
            "iam",
        );
        let from_box = signing_key(
            &Zeroizing::new(SECRET.as_bytes().to_vec().into_boxed_slice()),
            "20120215",
            "us-east-1",
            "iam",
        );
        let from_slice = signing_key(
            &secrecy::SecretSlice::from(SECRET.as_bytes().to_vec()),
            "20120215",
            "us-east-1",
            "iam",
        );
        for other in [from_vec, from_string, from_box, from_slice] {
            assert_eq!(other.bytes(), key.bytes());
        }
    }

    proptest! {
        #[test]
        fn signing_key_matches_aws_sigv4(
            secret in "[A-Za-z0-9/+]{1,60}",
            day in 0i64..40_000,
            region in "[a-z0-9-]{1,20}",
            service in "[a-z0-9-]{1,20}",
        ) {
            let time = day * 86_400 + 12_345;
            let date = &format_basic(time)[..8];
            let ours = signing_key(&SecretString::from(secret.clone()), date, &region, &service);
            let theirs = aws_v4::generate_signing_key(&secret, system_time(time), &region, &service);
            prop_assert_eq!(&ours.bytes()[..], theirs.as_ref());
        }
    }

    // -- Requests signed by aws-sigv4 -------------------------------------------------------

    struct SignOptions<'a> {
        service: &'a str,
        time: i64,
        token: Option<&'a str>,
        checksum_header: bool,
        unsigned_payload: bool,
    }

    impl Default for SignOptions<'_> {
        fn default() -> Self {
            SignOptions {
                service: "kms",
                time: t("20240115T093000Z"),
                token: None,
                checksum_header: false,
                unsigned_payload: false,
            }
        }
    }

    /// Signs with the aws-sigv4 crate and returns the request as a server would see it over
    /// HTTP/1.1: with a `Host` header and an origin-form target (no URI authority).
    fn aws_signed(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        opts: &SignOptions<'_>,
    ) -> Owned {
        let identity =
            Credentials::new(AKID, SECRET, opts.token.map(str::to_owned), None, "test").into();
        let mut settings = SigningSettings::default();
        if opts.checksum_header {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = aws_v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(opts.service)
            .time(system_time(opts.time))
            .settings(settings)
            .build()
            .expect("signing params")
            .into();
        let body_for_signing = if opts.unsigned_payload {
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Bytes(body)
        };
        let signable = SignableRequest::new(method, uri, headers.iter().copied(), body_for_signing)
            .expect("signable request");
        let (instructions, _signature) = sign(signable, &params).expect("sign").into_parts();
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut req = builder.body(body.to_vec()).expect("request");
        instructions.apply_to_request_http1x(&mut req);
        let mut owned = Owned::from_http(&req);
        let authority = owned.authority.take().expect("absolute URI");
        if !owned.headers.contains_key(HOST) {
            owned
                .headers
                .insert(HOST, HeaderValue::from_str(&authority).expect("host"));
        }
        owned
    }

    const KMS_URI: &str = "https://kms.us-east-1.amazonaws.com/";
    const KMS_BODY: &[u8] = br#"{"KeyId":"alias/app","Plaintext":"aGVsbG8gd29ybGQ="}"#;
    const KMS_HEADERS: &[(&str, &str)] = &[
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", "TrentService.Encrypt"),
    ];

    #[test]
    fn kms_request_signed_by_aws_sigv4_verifies() {
        let opts = SignOptions::default();
        let req = aws_signed("POST", KMS_URI, KMS_HEADERS, KMS_BODY, &opts);
        let claim = req.check("kms", opts.time).expect("verifies");
        assert_eq!(claim.access_key_id(), AKID);
        assert_eq!(claim.region(), "us-east-1");
        assert_eq!(claim.service(), "kms");
        assert_eq!(claim.scope_date(), "20240115");
        assert_eq!(
            claim.signed_headers(),
            ["content-type", "host", "x-amz-date", "x-amz-target"]
        );
        assert_eq!(claim.security_token(), None);
        // The same request refused for another service name.
        assert!(matches!(
            req.check("sts", opts.time),
            Err(SigV4Error::Scope(_))
        ));
    }

    #[test]
    fn kms_request_with_session_token_verifies() {
        let opts = SignOptions {
            token: Some("FwoGZXIvYXdzEXAMPLETOKEN"),
            ..SignOptions::default()
        };
        let req = aws_signed("POST", KMS_URI, KMS_HEADERS, KMS_BODY, &opts);
        let claim = req.check("kms", opts.time).expect("verifies");
        assert!(claim
            .signed_headers()
            .iter()
            .any(|h| h == "x-amz-security-token"));
        assert_eq!(claim.security_token(), Some("FwoGZXIvYXdzEXAMPLETOKEN"));
        assert!(!format!("{claim:?}").contains("EXAMPLETOKEN"));
    }

    #[test]
    fn x_amz_content_sha256_equal_to_the_body_hash_verifies() {
        let opts = SignOptions {
            checksum_header: true,
            ..SignOptions::default()
        };
        let req = aws_signed("POST", KMS_URI, KMS_HEADERS, KMS_BODY, &opts);
        assert_eq!(
            req.headers[X_AMZ_CONTENT_SHA256].as_bytes(),
            sha256_hex(KMS_BODY).as_bytes()
        );
        req.check("kms", opts.time).expect("verifies");
    }

    #[test]
    fn unsigned_payload_is_refused() {
        let opts = SignOptions {
            checksum_header: true,
            unsigned_payload: true,
            ..SignOptions::default()
        };
        let req = aws_signed("POST", KMS_URI, KMS_HEADERS, KMS_BODY, &opts);
        assert_eq!(req.headers[X_AMZ_CONTENT_SHA256], "UNSIGNED-PAYLOAD");
        let err = req.check("kms", opts.time).unwrap_err();
        assert!(matches!(err, SigV4Error::PayloadHash(_)), "{err:?}");
        assert_eq!(err.class(), SigV4Class::Invalid);
    }

    #[test]
    fn x_amz_content_sha256_mismatch_is_refused() {
        let opts = SignOptions {
            checksum_header: true,
            ..SignOptions::default()
        };
        let mut req = aws_signed("POST", KMS_URI, KMS_HEADERS, KMS_BODY, &opts);
        // The body changed in transit; the header still names the old hash.
        req.body.extend_from_slice(b" ");
        let err = req.check("kms", opts.time).unwrap_err();
        assert_eq!(
            err,
            SigV4Error::PayloadHash(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into()
            )
        );
        // Unsigned, wrong, and sent twice: refused all the same.
        let mut req = aws_signed(
            "POST",
            KMS_URI,
            KMS_HEADERS,
            KMS_BODY,
            &SignOptions::default(),
        );
        req.headers.insert(
            X_AMZ_CONTENT_SHA256,
            HeaderValue::from_static(
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        );
        assert!(matches!(
            req.check("kms", SignOptions::default().time),
            Err(SigV4Error::PayloadHash(_))
        ));
        let hash = sha256_hex(KMS_BODY);
        req.headers
            .insert(X_AMZ_CONTENT_SHA256, HeaderValue::from_str(&hash).unwrap());
        req.check("kms", SignOptions::default().time)
            .expect("unsigned but right: fine");
        req.headers
            .append(X_AMZ_CONTENT_SHA256, HeaderValue::from_str(&hash).unwrap());
        assert!(matches!(
            req.check("kms", SignOptions::default().time),
            Err(SigV4Error::PayloadHash(_))
        ));
    }

    /// Over HTTP/2 there is no Host header: the URI authority stands in for it.
    #[test]
    fn http2_authority_stands_in_for_host() {
        let opts = SignOptions::default();
        let mut req = aws_signed("POST", KMS_URI, KMS_HEADERS, KMS_BODY, &opts);
        req.headers.remove(HOST);
        assert!(matches!(
            req.check("kms", opts.time),
            Err(SigV4Error::SignedHeaders(_))
        ));
        req.authority = Some("kms.us-east-1.amazonaws.com".into());
        req.check("kms", opts.time).expect("verifies");
        req.authority = Some("evil.example".into());
        assert_eq!(
            req.check("kms", opts.time).unwrap_err(),
            SigV4Error::Invalid
        );
    }

    #[test]
    fn request_from_http_and_from_parts() {
        let opts = SignOptions::default();
        let owned = aws_signed("POST", KMS_URI, KMS_HEADERS, KMS_BODY, &opts);
        let mut builder = http::Request::builder().method("POST").uri("/");
        for (name, value) in &owned.headers {
            builder = builder.header(name, value);
        }
        let req = builder.body(KMS_BODY.to_vec()).unwrap();
        let view = Request::from_http(&req);
        let claim = parse(&view, "kms").unwrap();
        let key = signing_key(
            &secret(),
            claim.scope_date(),
            claim.region(),
            claim.service(),
        );
        verify(&view, &claim, &key, opts.time).unwrap();
        let (parts, body) = req.into_parts();
        let view = Request::from_parts(&parts, &body);
        verify(&view, &claim, &key, opts.time).unwrap();
        let shown = format!("{view:?}");
        assert!(
            shown.contains("authorization") && !shown.contains("Signature="),
            "{shown}"
        );
    }

    // -- Tampering: any change to what was signed is refused --------------------------------

    #[derive(Clone, Debug)]
    enum Tamper {
        SignedHeaderValue(usize),
        RemoveSignedHeader(usize),
        Method,
        Path,
        Query,
        Body,
    }

    fn tamper_strategy() -> impl Strategy<Value = Tamper> {
        prop_oneof![
            any::<usize>().prop_map(Tamper::SignedHeaderValue),
            any::<usize>().prop_map(Tamper::RemoveSignedHeader),
            Just(Tamper::Method),
            Just(Tamper::Path),
            Just(Tamper::Query),
            Just(Tamper::Body),
        ]
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9._~-]{1,6}",
            Just(String::new()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("%20".to_owned()),
            Just("a%3Ab".to_owned()),
            Just("%E1%88%B4".to_owned()),
            Just("@!$".to_owned()),
        ]
    }

    fn query_part() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9._~-]{0,6}",
            Just("a+b".to_owned()),
            Just("%2B".to_owned()),
            Just("%E1%88%B4".to_owned()),
            Just("x%20y".to_owned()),
            Just("%7E".to_owned()),
        ]
    }

    #[derive(Clone, Debug)]
    struct RandomRequest {
        method: &'static str,
        path: String,
        query: Vec<(String, String)>,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        time: i64,
    }

    impl RandomRequest {
        fn uri(&self) -> String {
            let mut uri = format!("https://example.amazonaws.com{}", self.path);
            if !self.query.is_empty() {
                uri.push('?');
                let pairs: Vec<String> =
                    self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                uri.push_str(&pairs.join("&"));
            }
            uri
        }

        fn signed(&self) -> Owned {
            let headers: Vec<(&str, &str)> =
                self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let opts = SignOptions {
                service: "service",
                time: self.time,
                ..SignOptions::default()
            };
            aws_signed(self.method, &self.uri(), &headers, &self.body, &opts)
        }
    }

    fn random_request() -> impl Strategy<Value = RandomRequest> {
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
            prop::collection::vec(segment(), 0..5),
            any::<bool>(),
            prop::collection::vec((query_part(), query_part()), 0..4),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "x-test-a",
                        "x-test-b",
                        "content-type",
                        "x-amz-target",
                        "x-amz-meta-list",
                    ]),
                    "[!-~]([ -~]{0,10}[!-~])?",
                ),
                0..5,
            ),
            prop::collection::vec(any::<u8>(), 0..64),
            1_400_000_000i64..2_000_000_000,
        )
            .prop_map(|(method, segments, trailing, query, headers, body, time)| {
                let mut path = format!("/{}", segments.join("/"));
                if trailing && !path.ends_with('/') {
                    path.push('/');
                }
                RandomRequest {
                    method,
                    path,
                    query,
                    headers,
                    body,
                    time,
                }
            })
    }

    fn apply(req: &mut Owned, claim: &Claim, tamper: &Tamper) {
        // Headers whose change must be caught (all signed; x-amz-date moves the time).
        let signed = claim.signed_headers();
        match tamper {
            Tamper::SignedHeaderValue(i) => {
                let name = &signed[i % signed.len()];
                let old = req
                    .headers
                    .get(name.as_str())
                    .expect("signed header")
                    .clone();
                let mut new = old.as_bytes().to_vec();
                new.push(if name == X_AMZ_DATE { b'0' } else { b'Z' });
                req.headers.insert(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_bytes(&new).unwrap(),
                );
            }
            Tamper::RemoveSignedHeader(i) => {
                let name = &signed[i % signed.len()];
                req.headers.remove(name.as_str());
            }
            Tamper::Method => {
                req.method = if req.method == Method::POST {
                    Method::GET
                } else {
                    Method::POST
                };
            }
            Tamper::Path => req.path.push_str("/zz"),
            Tamper::Query => {
                let q = req.query.get_or_insert_with(String::new);
                if !q.is_empty() {
                    q.push('&');
                }
                q.push_str("zz=1");
            }
            Tamper::Body => req.body.push(b'!'),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random requests signed by aws-sigv4 verify (a cross-check of the canonical form on
        /// random paths, queries and headers), and any change to a signed part is refused.
        #[test]
        fn tampering_is_refused(rr in random_request(), tamper in tamper_strategy()) {
            let req = rr.signed();
            let claim = req.check("service", rr.time);
            prop_assert!(claim.is_ok(), "untouched request refused: {:?} {:?}", claim, req);
            let claim = claim.unwrap();

            let mut changed = req.clone();
            apply(&mut changed, &claim, &tamper);
            let result = changed.check("service", rr.time);
            prop_assert!(result.is_err(), "{:?} accepted after {:?}", changed, tamper);

            // Also with the claim parsed from the original request (a changed x-amz-date or
            // Authorization is then not even consulted): still refused.
            let key = signing_key(&secret(), claim.scope_date(), claim.region(), claim.service());
            prop_assert!(verify(&changed.view(), &claim, &key, rr.time).is_err());
        }

        /// Headers outside SignedHeaders may change, appear and disappear freely.
        #[test]
        fn unsigned_headers_may_change(
            rr in random_request(),
            value in "[!-~]([ -~]{0,20}[!-~])?",
            drop_user_agent in any::<bool>(),
        ) {
            let mut req = rr.signed();
            req.headers.insert("x-unsigned", HeaderValue::from_str(&value).unwrap());
            req.headers.insert(http::header::USER_AGENT, HeaderValue::from_static("curl/8"));
            if drop_user_agent {
                req.headers.remove(http::header::USER_AGENT);
            }
            let result = req.check("service", rr.time);
            prop_assert!(result.is_ok(), "{:?}", result);
        }
    }

    // -- The clock -----------------------------------------------------------------------------

    #[test]
    fn clock_skew_limits_and_messages() {
        let req = parse_request_txt(vectors!["get-vanilla"][0].request);
        let at = t(SUITE_TIME);
        for ok in [at, at + 299, at - 299, at + 300, at - 300] {
            req.check("service", ok)
                .unwrap_or_else(|e| panic!("{ok}: {e:?}"));
        }
        // The request is 5m01s old.
        let err = req.check("service", at + 301).unwrap_err();
        assert_eq!(
            err,
            SigV4Error::Expired(
                "Signature expired: 20150830T123600Z is now earlier than 20150830T123601Z \
                 (20150830T124101Z - 5 min.)"
                    .into()
            )
        );
        assert_eq!(err.class(), SigV4Class::Invalid);
        // AWS's own example wording, 10 minutes late.
        assert_eq!(
            req.check("service", t("20150830T124600Z"))
                .unwrap_err()
                .to_string(),
            "Signature expired: 20150830T123600Z is now earlier than 20150830T124100Z \
             (20150830T124600Z - 5 min.)"
        );
        // The request is 5m01s in the future.
        let err = req.check("service", at - 301).unwrap_err();
        assert_eq!(
            err,
            SigV4Error::NotYetValid(
                "Signature not yet current: 20150830T123600Z is still later than \
                 20150830T123559Z (20150830T123059Z + 5 min.)"
                    .into()
            )
        );
        assert_eq!(err.class(), SigV4Class::Invalid);
        // check_clock alone gives the same answers, and survives extreme values.
        let claim = parse(&req.view(), "service").unwrap();
        assert!(claim.check_clock(at + 299).is_ok());
        assert!(matches!(
            claim.check_clock(i64::MAX),
            Err(SigV4Error::Expired(_))
        ));
        assert!(matches!(
            claim.check_clock(i64::MIN),
            Err(SigV4Error::NotYetValid(_))
        ));
    }

    // -- Refusals, one by one ----------------------------------------------------------------

    const VANILLA_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

    fn vanilla_with(auth: Option<&str>, amz_date: Option<&str>) -> Owned {
        let mut req = parse_request_txt(vectors!["get-vanilla"][0].request);
        req.headers.remove(AUTHORIZATION);
        req.headers.remove(X_AMZ_DATE);
        if let Some(auth) = auth {
            req.headers
                .insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        }
        if let Some(date) = amz_date {
            req.headers
                .insert(X_AMZ_DATE, HeaderValue::from_str(date).unwrap());
        }
        req
    }

    fn parse_err(auth: &str) -> SigV4Error {
        parse(
            &vanilla_with(Some(auth), Some(SUITE_TIME)).view(),
            "service",
        )
        .unwrap_err()
    }

    #[test]
    fn vanilla_variants_accepted() {
        // Whitespace and comma variants: ", " (botocore, Go, aws-sigv4), "," and tabs, any order.
        for auth in [
            VANILLA_AUTH.to_owned(),
            VANILLA_AUTH.replace(", ", ","),
            VANILLA_AUTH.replace(", ", " ,\t"),
            format!("  {VANILLA_AUTH}  "),
            VANILLA_AUTH.replace("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA256\t  "),
            format!("{VANILLA_AUTH},"),
            "AWS4-HMAC-SHA256 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31, SignedHeaders=host;x-amz-date, Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request".to_owned(),
        ] {
            vanilla_with(Some(&auth), Some(SUITE_TIME))
                .check("service", t(SUITE_TIME))
                .unwrap_or_else(|e| panic!("{auth}: {e:?}"));
        }
    }

    #[test]
    fn missing_authentication() {
        let req = vanilla_with(None, Some(SUITE_TIME));
        let err = parse(&req.view(), "service").unwrap_err();
        assert_eq!(err, SigV4Error::Missing);
        assert_eq!(err.class(), SigV4Class::Missing);
        assert_eq!(err.to_string(), "Request is missing Authentication Token");
        // A query without presigning parameters is still "missing".
        let mut req = vanilla_with(None, Some(SUITE_TIME));
        req.query = Some("X-Amz-Date=20150830T123600Z&Action=List".into());
        assert_eq!(
            parse(&req.view(), "service").unwrap_err(),
            SigV4Error::Missing
        );
    }

    #[test]
    fn presigned_query_is_incomplete() {
        let mut req = vanilla_with(None, Some(SUITE_TIME));
        req.query = Some("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00".into());
        assert!(matches!(
            parse(&req.view(), "service"),
            Err(SigV4Error::Incomplete(_))
        ));
        let mut req = vanilla_with(Some(VANILLA_AUTH), Some(SUITE_TIME));
        req.query = Some("X%2DAmz%2DCredential=x".into());
        let err = parse(&req.view(), "service").unwrap_err();
        assert!(matches!(err, SigV4Error::Incomplete(_)), "{err:?}");
        assert_eq!(err.class(), SigV4Class::Incomplete);
    }

    #[test]
    fn malformed_authorization_is_incomplete() {
        let sig = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let cred = "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";
        let sh = "SignedHeaders=host;x-amz-date";
        for (auth, why) in [
            ("", "empty"),
            ("AWS4-HMAC-SHA256", "no parameters"),
            (&format!("AWS4-HMAC-SHA256 {cred}, {sh}") as &str, "no Signature="),
            (&format!("AWS4-HMAC-SHA256 {cred}, Signature={sig}"), "no SignedHeaders="),
            (&format!("AWS4-HMAC-SHA256 {sh}, Signature={sig}"), "no Credential="),
            (&format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={}", &sig[..63]), "short signature"),
            (&format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={}g", &sig[..63]), "non-hex signature"),
            (&format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={}", sig.to_uppercase()), "uppercase hex"),
            (&format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature="), "empty signature"),
            (&format!("AWS4-HMAC-SHA512 {cred}, {sh}, Signature={sig}"), "wrong algorithm"),
            (&format!("aws4-hmac-sha256 {cred}, {sh}, Signature={sig}"), "algorithm case"),
            (&format!("AWS AKIDEXAMPLE:{sig}"), "SigV2"),
            ("Bearer kp_c2VjcmV0LXRva2VuLXZhbHVl", "a bearer token"),
            (&format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={sig}, Signature={sig}"), "repeated"),
            (&format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={sig}, Extra=1"), "unknown key"),
            (&format!("AWS4-HMAC-SHA256 {cred}, {sh}, signature={sig}"), "key case"),
            (&format!("AWS4-HMAC-SHA256 {cred} {sh} Signature={sig}"), "no commas"),
            (&format!("AWS4-HMAC-SHA256,{cred},{sh},Signature={sig}"), "comma after algorithm"),
            (&format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature"), "no equal sign"),
            (&format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service, {sh}, Signature={sig}"), "4-part credential"),
            (&format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request/x, {sh}, Signature={sig}"), "6-part credential"),
            (&format!("AWS4-HMAC-SHA256 Credential=/20150830/us-east-1/service/aws4_request, {sh}, Signature={sig}"), "empty access key"),
            (&format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date;host, Signature={sig}"), "unsorted SignedHeaders"),
            (&format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=Host;x-amz-date, Signature={sig}"), "uppercase SignedHeaders"),
            (&format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;host;x-amz-date, Signature={sig}"), "repeated SignedHeaders"),
            (&format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;;x-amz-date, Signature={sig}"), "empty SignedHeaders name"),
        ] {
            let err = parse_err(auth);
            assert!(matches!(err, SigV4Error::Incomplete(_)), "{why}: {err:?}");
            assert_eq!(err.class(), SigV4Class::Incomplete, "{why}");
            assert!(!err.to_string().contains("kp_"), "{why}: echoed a token: {err}");
        }
        // AWS's wording for missing parts, all at once.
        assert_eq!(
            parse_err(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
            )
            .to_string(),
            "Authorization header requires 'Signature' parameter. Authorization header requires \
             'SignedHeaders' parameter. Authorization=AWS4-HMAC-SHA256"
        );
        assert_eq!(
            parse_err(&format!("AWS4-HMAC-SHA512 {cred}, {sh}, Signature={sig}")).to_string(),
            "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'. Only AWS4-HMAC-SHA256 is accepted."
        );
        // Two Authorization headers.
        let mut req = vanilla_with(Some(VANILLA_AUTH), Some(SUITE_TIME));
        req.headers
            .append(AUTHORIZATION, HeaderValue::from_static(VANILLA_AUTH));
        assert!(matches!(
            parse(&req.view(), "service"),
            Err(SigV4Error::Incomplete(_))
        ));
        // An Authorization header that is not visible ASCII.
        let mut req = vanilla_with(None, Some(SUITE_TIME));
        req.headers.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"AWS4-HMAC-SHA256 Credential=\xe9").unwrap(),
        );
        assert!(matches!(
            parse(&req.view(), "service"),
            Err(SigV4Error::Incomplete(_))
        ));
    }

    #[test]
    fn date_problems() {
        // No date at all: incomplete, in AWS's words.
        let err = parse(&vanilla_with(Some(VANILLA_AUTH), None).view(), "service").unwrap_err();
        assert_eq!(
            err,
            SigV4Error::Incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
                 header. Authorization=AWS4-HMAC-SHA256"
                    .into()
            )
        );
        // Not basic ISO 8601.
        for bad in [
            "2015-08-30T12:36:00Z",
            "20150830T123600",
            "20150830t123600z",
            "20150230T123600Z",
            "20150830T246000Z",
            "20150830T123660Z",
            "+0150830T123600Z",
        ] {
            let err = parse(
                &vanilla_with(Some(VANILLA_AUTH), Some(bad)).view(),
                "service",
            )
            .unwrap_err();
            assert!(
                matches!(err, SigV4Error::Incomplete(ref m) if m.starts_with("Date must be in ISO-8601 'basic format'")),
                "{bad}: {err:?}"
            );
        }
        // Two X-Amz-Date headers.
        let mut req = vanilla_with(Some(VANILLA_AUTH), Some(SUITE_TIME));
        req.headers
            .append(X_AMZ_DATE, HeaderValue::from_static(SUITE_TIME));
        assert!(matches!(
            parse(&req.view(), "service"),
            Err(SigV4Error::Incomplete(_))
        ));
        // Scope date one day off the request's: AWS's "Date in Credential scope..." message.
        let err = parse_err(&VANILLA_AUTH.replace("/20150830/", "/20150829/"));
        assert_eq!(
            err,
            SigV4Error::Scope(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '20150829' != '20150830', from '20150830T123600Z'."
                    .into()
            )
        );
        assert_eq!(err.class(), SigV4Class::Invalid);
        // x-amz-date present but not signed.
        let err =
            parse_err(&VANILLA_AUTH.replace("SignedHeaders=host;x-amz-date", "SignedHeaders=host"));
        assert_eq!(
            err,
            SigV4Error::SignedHeaders(
                "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.".into()
            )
        );
    }

    #[test]
    fn scope_problems() {
        let err = parse_err(&VANILLA_AUTH.replace("/service/", "/sts/"));
        assert_eq!(
            err,
            SigV4Error::Scope("Credential should be scoped to correct service: 'service'.".into())
        );
        assert_eq!(err.class(), SigV4Class::Invalid);
        assert!(matches!(
            parse_err(&VANILLA_AUTH.replace("aws4_request", "aws5_request")),
            SigV4Error::Scope(_)
        ));
        assert!(matches!(
            parse_err(&VANILLA_AUTH.replace("us-east-1", "us east")),
            SigV4Error::Incomplete(_) | SigV4Error::Scope(_)
        ));
        assert!(matches!(
            parse_err(&VANILLA_AUTH.replace("/us-east-1/", "//")),
            SigV4Error::Scope(_)
        ));
        // Several at once, joined as AWS does.
        let err = parse_err(
            &VANILLA_AUTH.replace("/20150830/us-east-1/service/", "/20150829/us-east-1/kms/"),
        );
        assert_eq!(
            err.to_string(),
            "Credential should be scoped to correct service: 'service'. Date in Credential scope \
             does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20150829' != \
             '20150830', from '20150830T123600Z'."
        );
    }

    #[test]
    fn signed_header_problems() {
        // host not signed.
        let auth =
            VANILLA_AUTH.replace("SignedHeaders=host;x-amz-date", "SignedHeaders=x-amz-date");
        let err = parse_err(&auth);
        assert_eq!(
            err,
            SigV4Error::SignedHeaders(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into()
            )
        );
        assert_eq!(err.class(), SigV4Class::Invalid);
        // An empty SignedHeaders list: the same, as AWS answers.
        let auth = VANILLA_AUTH.replace("SignedHeaders=host;x-amz-date", "SignedHeaders=");
        assert!(matches!(parse_err(&auth), SigV4Error::SignedHeaders(_)));
        // A signed header the request does not carry.
        let auth = VANILLA_AUTH.replace(
            "SignedHeaders=host;x-amz-date",
            "SignedHeaders=host;x-amz-date;x-amz-target",
        );
        assert_eq!(
            parse_err(&auth),
            SigV4Error::SignedHeaders(
                "'x-amz-target' is listed in SignedHeaders but the request has no such header."
                    .into()
            )
        );
        // No Host header and no authority.
        let mut req = vanilla_with(Some(VANILLA_AUTH), Some(SUITE_TIME));
        req.headers.remove(HOST);
        assert!(matches!(
            parse(&req.view(), "service"),
            Err(SigV4Error::SignedHeaders(_))
        ));
        // The action header sent but left out of the signature: a signed DescribeKey must not
        // be replayable as another action.
        let mut req = vanilla_with(Some(VANILLA_AUTH), Some(SUITE_TIME));
        req.headers.insert(
            HeaderName::from_static("x-amz-target"),
            HeaderValue::from_static("TrentService.DisableKey"),
        );
        assert_eq!(
            parse(&req.view(), "service").unwrap_err(),
            SigV4Error::SignedHeaders(
                "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.".into()
            )
        );
    }

    #[test]
    fn a_session_token_counts_whatever_its_bytes() {
        let owned = aws_signed(
            "POST",
            KMS_URI,
            KMS_HEADERS,
            KMS_BODY,
            &SignOptions {
                token: Some("session"),
                ..SignOptions::default()
            },
        );
        let claim = parse(&owned.view(), "kms").unwrap();
        assert_eq!(claim.security_token(), Some("session"));
        // Not visible ASCII: still a token (and still signed: the signature check fails, but
        // the caller refuses sessions before that).
        let mut owned = owned;
        owned.headers.insert(
            X_AMZ_SECURITY_TOKEN,
            HeaderValue::from_bytes(b"\xffsession").unwrap(),
        );
        let claim = parse(&owned.view(), "kms").unwrap();
        assert!(claim.security_token().is_some());
    }

    #[test]
    fn signature_mismatch_and_wrong_key() {
        let wrong = VANILLA_AUTH.replace("5fa00fa3", "5fa00fa4");
        let req = vanilla_with(Some(&wrong), Some(SUITE_TIME));
        let err = req.check("service", t(SUITE_TIME)).unwrap_err();
        assert_eq!(err, SigV4Error::Invalid);
        assert_eq!(err.to_string(), MSG_SIGNATURE_MISMATCH);
        assert_eq!(err.class(), SigV4Class::Invalid);

        let req = vanilla_with(Some(VANILLA_AUTH), Some(SUITE_TIME));
        let claim = parse(&req.view(), "service").unwrap();
        // Another secret.
        let other = signing_key(
            &SecretString::from("not-the-secret"),
            "20150830",
            "us-east-1",
            "service",
        );
        assert_eq!(
            verify(&req.view(), &claim, &other, t(SUITE_TIME)),
            Err(SigV4Error::Invalid)
        );
        // The right secret, but a key for another scope.
        let key = signing_key(&secret(), "20150831", "us-east-1", "service");
        assert!(!key.is_for(&claim));
        assert_eq!(
            verify(&req.view(), &claim, &key, t(SUITE_TIME)),
            Err(SigV4Error::Invalid)
        );
        let key = signing_key(&secret(), "20150830", "us-east-1", "service");
        assert!(key.is_for(&claim));
        assert_eq!(key.scope(), ("20150830", "us-east-1", "service"));
        assert_eq!(
            claim.key_scope(),
            KeyScope {
                access_key_id: AKID.into(),
                date: "20150830".into(),
                region: "us-east-1".into(),
                service: "service".into()
            }
        );
        verify(&req.view(), &claim, &key, t(SUITE_TIME)).unwrap();
    }

    #[test]
    fn nothing_secret_in_debug_or_messages() {
        let key = signing_key(&secret(), "20150830", "us-east-1", "service");
        let key_hex = hex_lower(key.bytes());
        let shown = format!("{key:?}");
        assert!(
            !shown.contains(&key_hex) && !shown.contains(SECRET),
            "{shown}"
        );

        let req = vanilla_with(Some(VANILLA_AUTH), Some(SUITE_TIME));
        let claim = parse(&req.view(), "service").unwrap();
        let shown = format!("{claim:?}");
        assert!(!shown.contains("5fa00fa3"), "{shown}");

        // On a mismatch, neither the expected signature nor the canonical request leaks.
        let wrong = VANILLA_AUTH.replace("5fa00fa3", "00000000");
        let req = vanilla_with(Some(&wrong), Some(SUITE_TIME));
        let err = req.check("service", t(SUITE_TIME)).unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(
                !text.contains("5fa00fa3") && !text.contains(&key_hex) && !text.contains(SECRET)
            );
        }
    }

    /// botocore signs a `Date` header instead of X-Amz-Date when the request already has
    /// one, formatted by `email.utils.formatdate` (`-0000`). Signed here by hand from the spec.
    #[test]
    fn date_header_instead_of_x_amz_date() {
        for date in [
            "Sun, 30 Aug 2015 12:36:00 -0000",
            "Sun, 30 Aug 2015 12:36:00 GMT",
            "30 Aug 2015 14:36:00 +0200",
        ] {
            let canonical = format!(
                "GET\n/\n\ndate:{date}\nhost:example.amazonaws.com\n\ndate;host\n{}",
                sha256_hex(b"")
            );
            let sts = format!(
                "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n{}",
                sha256_hex(canonical.as_bytes())
            );
            let key = signing_key(&secret(), "20150830", "us-east-1", "service");
            let signature = hex_lower(key.sign(sts.as_bytes()).as_ref());
            let mut req = vanilla_with(
                Some(&format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=date;host, Signature={signature}"
                )),
                None,
            );
            req.headers
                .insert(DATE, HeaderValue::from_str(date).unwrap());
            let claim = req
                .check("service", t(SUITE_TIME))
                .unwrap_or_else(|e| panic!("{date}: {e:?}"));
            assert_eq!(claim.amz_date(), SUITE_TIME);
            assert_eq!(claim.request_time(), t(SUITE_TIME));
        }
        // A Date header that is present but unsigned does not count.
        let mut req = vanilla_with(Some(&VANILLA_AUTH.replace("host;x-amz-date", "host")), None);
        req.headers.insert(
            DATE,
            HeaderValue::from_static("Sun, 30 Aug 2015 12:36:00 GMT"),
        );
        assert_eq!(
            parse(&req.view(), "service").unwrap_err(),
            SigV4Error::SignedHeaders(
                "'Date' must be a 'SignedHeader' in the AWS Authorization.".into()
            )
        );
        // An unparseable one is incomplete.
        req.headers.insert(
            DATE,
            HeaderValue::from_static("Sunday, 30-Aug-15 12:36:00 GMT"),
        );
        assert!(matches!(
            parse(&req.view(), "service"),
            Err(SigV4Error::Incomplete(_))
        ));
    }

    #[test]
    fn date_parsing() {
        assert_eq!(parse_basic("19700101T000000Z"), Some(0));
        assert_eq!(parse_basic("20000229T000000Z"), Some(951_782_400));
        assert_eq!(parse_basic("19000229T000000Z"), None);
        assert_eq!(parse_basic("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Some(1_440_938_160)
        );
        assert_eq!(
            parse_http_date("Mon, 30 Aug 2015 12:36:00 GMT"),
            Some(1_440_938_160)
        ); // weekday not cross-checked
        assert_eq!(parse_http_date("Xyz, 30 Aug 2015 12:36:00 GMT"), None);
        assert_eq!(parse_http_date("30 Aug 2015 12:36:00 PST"), None);
        assert_eq!(parse_http_date("30 aug 2015 12:36:00 GMT"), None);
        for (t, basic) in [
            (0, "19700101T000000Z"),
            (951_782_400, "20000229T000000Z"),
            (253_402_300_799, "99991231T235959Z"),
            (-1, "19691231T235959Z"),
        ] {
            assert_eq!(format_basic(t), basic);
        }
    }

    proptest! {
        #[test]
        fn basic_dates_round_trip(t in 0i64..253_402_300_800) {
            prop_assert_eq!(parse_basic(&format_basic(t)), Some(t));
        }

        /// Nothing panics on arbitrary Authorization headers, dates, paths and queries.
        #[test]
        fn arbitrary_input_never_panics(
            auth in prop::collection::vec(
                prop_oneof![
                    Just("AWS4-HMAC-SHA256".to_owned()),
                    Just(" Credential=".to_owned()),
                    Just("AKIDEXAMPLE/20150830/us-east-1/service/aws4_request".to_owned()),
                    Just("SignedHeaders=".to_owned()),
                    Just("host;x-amz-date".to_owned()),
                    Just("Signature=".to_owned()),
                    Just("5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31".to_owned()),
                    Just(",".to_owned()),
                    Just(" ".to_owned()),
                    Just("/".to_owned()),
                    Just(";".to_owned()),
                    Just("=".to_owned()),
                    "[ -~]{0,8}",
                    "\\PC{0,4}",
                ],
                0..16,
            ).prop_map(|parts| parts.concat()),
            raw_auth in prop::collection::vec(any::<u8>(), 0..80),
            amz_date in prop_oneof![Just(SUITE_TIME.to_owned()), "[0-9TZ:+ -]{0,20}", "\\PC{0,20}"],
            date in prop_oneof![Just("Sun, 30 Aug 2015 12:36:00 GMT".to_owned()), "[ -~]{0,40}"],
            path in "\\PC{0,30}",
            query in proptest::option::of("\\PC{0,30}"),
            body in prop::collection::vec(any::<u8>(), 0..32),
            now in any::<i64>(),
        ) {
            for candidate in [auth.as_bytes(), raw_auth.as_slice()] {
                let mut req = vanilla_with(None, None);
                if let Ok(v) = HeaderValue::from_bytes(candidate) {
                    req.headers.insert(AUTHORIZATION, v);
                }
                if let Ok(v) = HeaderValue::from_str(&amz_date) {
                    req.headers.insert(X_AMZ_DATE, v);
                }
                if let Ok(v) = HeaderValue::from_str(&date) {
                    req.headers.insert(DATE, v);
                }
                req.path = path.clone();
                req.query = query.clone();
                req.body = body.clone();
                if let Ok(claim) = parse(&req.view(), "service") {
                    let key = signing_key(&secret(), claim.scope_date(), claim.region(), claim.service());
                    let _ = verify(&req.view(), &claim, &key, now);
                    let _ = claim.check_clock(now);
                }
            }
            let _ = canonical_uri(&path);
            let _ = canonical_query(query.as_deref());
            let _ = parse_http_date(&date);
            let _ = parse_basic(&amz_date);
            let _ = format_basic(now);
        }
    }
}
