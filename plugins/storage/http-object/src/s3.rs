//! The S3 object API, path-style: HEAD/GET/PUT/DELETE on `/<bucket>/<prefix><name>`,
//! ListObjectsV2 on `/<bucket>?list-type=2`, and for deletes ListObjectVersions on
//! `/<bucket>?versions` and DELETE of each version (`?versionId=`). Signs with SigV4 (`aws-sigv4`) when credentials
//! are configured.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use keyplane_plugin_sdk::config::Settings;
use keyplane_plugin_sdk::storage::StorageError;

use crate::transport::{self, Request, Response};

/// The metadata header holding an object's compare-and-swap version.
const VERSION_HEADER: &str = "x-amz-meta-kp-version";

/// Where objects go, and how requests are signed.
pub struct Bucket {
    https: bool,
    authority: String,
    bucket: String,
    prefix: String,
    region: String,
    credentials: Option<Credentials>,
}

/// What a HEAD tells about an object.
pub struct Head {
    pub version: u64,
    pub etag: String,
}

fn invalid(m: impl Into<String>) -> StorageError {
    StorageError::Invalid(m.into())
}

fn unavailable(m: impl Into<String>) -> StorageError {
    StorageError::Unavailable(m.into())
}

/// Percent-encode per SigV4/S3: unreserved characters stay, `/` stays when `keep_slash`.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#13;", "\r")
        .replace("&#10;", "\n")
        .replace("&amp;", "&")
}

/// The text of every `<tag>…</tag>` in `xml`, in order.
fn xml_all(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(xml_unescape(&after[..j]));
        rest = &after[j + close.len()..];
    }
    out
}

impl Bucket {
    /// Read the configuration (see the crate docs).
    pub fn from_settings(s: &Settings<'_>) -> Result<Bucket, StorageError> {
        let endpoint = s.required("endpoint").map_err(invalid)?;
        let (https, authority) = if let Some(a) = endpoint.strip_prefix("https://") {
            (true, a)
        } else if let Some(a) = endpoint.strip_prefix("http://") {
            (false, a)
        } else {
            return Err(invalid("config `endpoint` must start with http:// or https://"));
        };
        let authority = authority.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(invalid("config `endpoint` must be scheme://host[:port] with no path"));
        }
        // The authority is sent as the `host` header and named in errors: credentials in it
        // would go to the store in the clear and into every transport error. They belong in
        // `access-key-id` and `secret-access-key`, which sign the request.
        if authority.contains('@') {
            return Err(invalid(
                "config `endpoint` must not carry user information: give the credentials as access-key-id and secret-access-key",
            ));
        }
        let bucket = s.required("bucket").map_err(invalid)?;
        if bucket.is_empty() || !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.') {
            return Err(invalid("config `bucket` must be a DNS-style bucket name"));
        }
        let credentials = match (s.get("access-key-id"), s.get("secret-access-key")) {
            (Some(id), Some(secret)) => Some(Credentials::new(
                id,
                secret,
                s.get("session-token").map(str::to_string),
                None,
                "keyplane-plugin-config",
            )),
            (None, None) => None,
            _ => return Err(invalid("set both `access-key-id` and `secret-access-key`, or neither")),
        };
        Ok(Bucket {
            https,
            authority: authority.to_string(),
            bucket: bucket.to_string(),
            prefix: s.get("prefix").unwrap_or("").to_string(),
            region: s.get("region").unwrap_or("us-east-1").to_string(),
            credentials,
        })
    }

    fn object_path(&self, name: &str) -> String {
        format!("/{}/{}", self.bucket, encode(&format!("{}{name}", self.prefix), true))
    }

    /// Send one request, signed if credentials are configured.
    fn call(&self, method: &str, path_and_query: &str, mut headers: Vec<(String, String)>, body: &[u8]) -> Result<Response, StorageError> {
        headers.push(("host".into(), self.authority.clone()));
        if let Some(creds) = &self.credentials {
            let identity = creds.clone().into();
            let mut settings = SigningSettings::default();
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            let params = v4::SigningParams::builder()
                .identity(&identity)
                .region(&self.region)
                .name("s3")
                .time(SystemTime::now())
                .settings(settings)
                .build()
                .map_err(|e| invalid(format!("signing parameters: {e}")))?
                .into();
            let scheme = if self.https { "https" } else { "http" };
            let uri = format!("{scheme}://{}{path_and_query}", self.authority);
            let signable = SignableRequest::new(
                method,
                uri,
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                SignableBody::Bytes(body),
            )
            .map_err(|e| invalid(format!("cannot sign request: {e}")))?;
            let (instructions, _signature) = sign(signable, &params)
                .map_err(|e| invalid(format!("cannot sign request: {e}")))?
                .into_parts();
            for (k, v) in instructions.headers() {
                headers.push((k.to_string(), v.to_string()));
            }
        }
        // The host sets `host` from the authority itself.
        headers.retain(|(k, _)| k != "host");
        transport::send(&Request {
            method,
            https: self.https,
            authority: &self.authority,
            path_and_query,
            headers,
            body,
        })
        .map_err(|e| unavailable(format!("{method} {}: {e}", self.authority)))
    }

    fn fail(&self, what: &str, r: &Response) -> StorageError {
        let code = xml_all(&String::from_utf8_lossy(&r.body), "Code").into_iter().next().or_else(|| {
            // HEAD answers carry no body.
            (r.status == 403).then(|| "AccessDenied or SignatureDoesNotMatch: check the credentials".to_string())
        });
        unavailable(format!("{what}: HTTP {}{}", r.status, code.map(|c| format!(" ({c})")).unwrap_or_default()))
    }

    fn version_of(r: &Response) -> Result<u64, StorageError> {
        match r.header(VERSION_HEADER) {
            Some(v) => v.trim().parse().map_err(|_| unavailable(format!("object has a malformed {VERSION_HEADER}"))),
            None => Err(unavailable(format!("object has no {VERSION_HEADER}: not written by this backend"))),
        }
    }

    /// Version and ETag of `name`, if it exists.
    pub fn head(&self, name: &str) -> Result<Option<Head>, StorageError> {
        let r = self.call("HEAD", &self.object_path(name), vec![], &[])?;
        match r.status {
            200 => Ok(Some(Head {
                version: Self::version_of(&r)?,
                etag: r.header("etag").unwrap_or_default(),
            })),
            404 => Ok(None),
            _ => Err(self.fail("head", &r)),
        }
    }

    /// Version and data of `name`, if it exists.
    pub fn get(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let r = self.call("GET", &self.object_path(name), vec![], &[])?;
        match r.status {
            200 => Ok(Some((Self::version_of(&r)?, r.body))),
            404 => Ok(None),
            _ => Err(self.fail("get", &r)),
        }
    }

    /// Write `name` as `version`; `etag`: the object must still be that one (none: must not
    /// exist). `Ok(false)`: the store refused the condition.
    pub fn put(&self, name: &str, data: &[u8], version: u64, etag: Option<&str>) -> Result<bool, StorageError> {
        let mut headers = vec![
            (VERSION_HEADER.to_string(), version.to_string()),
            ("content-type".into(), "application/octet-stream".into()),
            ("content-length".into(), data.len().to_string()),
        ];
        match etag {
            Some(e) if !e.is_empty() => headers.push(("if-match".into(), e.to_string())),
            Some(_) => {}
            None => headers.push(("if-none-match".into(), "*".into())),
        }
        let r = self.call("PUT", &self.object_path(name), headers, data)?;
        match r.status {
            200 | 201 | 204 => Ok(true),
            409 | 412 => Ok(false),
            _ => Err(self.fail("put", &r)),
        }
    }

    /// Delete `name` (absent is fine).
    pub fn delete(&self, name: &str) -> Result<(), StorageError> {
        let r = self.call("DELETE", &self.object_path(name), vec![], &[])?;
        match r.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(self.fail("delete", &r)),
        }
    }

    /// The version ids of what is stored under `name`: every version, and every delete
    /// marker but the `null` one (which holds nothing and a DELETE on a bucket with versioning
    /// suspended leaves). On a bucket with versioning on or suspended a DELETE only hides the
    /// object behind a marker and keeps its earlier versions; on one without, the object
    /// alone is listed (version `null`). A store without the versions listing (HTTP 501, or
    /// the code `NotImplemented`) keeps no versions; one that ignores `?versions` answers a
    /// plain listing, which holds no `<Version>`: none either.
    pub fn versions(&self, name: &str) -> Result<Vec<String>, StorageError> {
        let key = format!("{}{name}", self.prefix);
        // Query parameters in byte order (SigV4 canonical form).
        let query = format!("prefix={}&versions", encode(&key, false));
        let r = self.call("GET", &format!("/{}?{query}", self.bucket), vec![], &[])?;
        // A store without the listing (501, or its `NotImplemented` code) keeps no versions.
        let not_implemented = r.status == 501
            || xml_all(&String::from_utf8_lossy(&r.body), "Code").first().is_some_and(|c| c == "NotImplemented");
        match r.status {
            200 => {}
            _ if not_implemented => return Ok(Vec::new()),
            _ => return Err(self.fail("list object versions (s3:ListBucketVersions)", &r)),
        }
        let xml = String::from_utf8_lossy(&r.body);
        let versions = xml_all(&xml, "Version").into_iter().map(|v| (v, false));
        let markers = xml_all(&xml, "DeleteMarker").into_iter().map(|m| (m, true));
        let mut ids = Vec::new();
        for (entry, marker) in versions.chain(markers) {
            // A longer key with the same beginning is another blob.
            if xml_all(&entry, "Key").first() != Some(&key) {
                continue;
            }
            match xml_all(&entry, "VersionId").into_iter().next() {
                Some(id) if marker && id == "null" => {}
                Some(id) => ids.push(id),
                None => {}
            }
        }
        Ok(ids)
    }

    /// Delete version `version_id` of `name` for good (absent is fine).
    pub fn delete_version(&self, name: &str, version_id: &str) -> Result<(), StorageError> {
        let path = format!("{}?versionId={}", self.object_path(name), encode(version_id, false));
        let r = self.call("DELETE", &path, vec![], &[])?;
        match r.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(self.fail("delete object version (s3:DeleteObjectVersion)", &r)),
        }
    }

    /// Names under `prefix` after `start_after`, at most `limit`, and whether more exist.
    pub fn list(&self, prefix: &str, start_after: Option<&str>, limit: u32) -> Result<(Vec<String>, bool), StorageError> {
        // Query parameters in byte order (SigV4 canonical form).
        let mut query = vec![
            ("list-type".to_string(), "2".to_string()),
            ("max-keys".to_string(), limit.to_string()),
            ("prefix".to_string(), format!("{}{prefix}", self.prefix)),
        ];
        if let Some(s) = start_after {
            query.push(("start-after".to_string(), format!("{}{s}", self.prefix)));
        }
        query.sort();
        let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v, false))).collect();
        let r = self.call("GET", &format!("/{}?{}", self.bucket, qs.join("&")), vec![], &[])?;
        if r.status != 200 {
            return Err(self.fail("list", &r));
        }
        let xml = String::from_utf8_lossy(&r.body);
        let names = xml_all(&xml, "Key")
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string))
            .collect();
        let truncated = xml_all(&xml, "IsTruncated").first().is_some_and(|t| t == "true");
        Ok((names, truncated))
    }
}
