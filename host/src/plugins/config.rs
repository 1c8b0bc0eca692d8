//! A plugin's configuration as the host holds it for a call, and which of its values are
//! secrets. What is secret decides what `ops::plugin_config` seals in the database and
//! redacts in answers, and what [`PluginConfig::scrub`] takes out of the text a plugin writes
//! into its errors: a backend that repeats its endpoint in a transport error ("GET
//! user:password@store:9000: connection refused") would otherwise hand the credentials in it
//! to every caller whose request touched a blob, and to the logs.

use zeroize::Zeroize;

/// A plugin's configuration as the host hands it to a call: its values opened (some are
/// secrets: API keys, passphrases), every key and value wiped from memory when it is dropped.
/// Each copy the host makes on the way to the call is one of these; the call itself borrows
/// it (as the `&[(String, String)]` it derefs to), and wasmtime copies it into the instance's
/// linear memory, which the pooling allocator clears when the instance goes.
#[derive(Clone, Default)]
pub struct PluginConfig(pub(super) Vec<(String, String)>);

impl PluginConfig {
    /// Wipe every key and value (what dropping does).
    fn wipe(&mut self) {
        for (k, v) in &mut self.0 {
            k.zeroize();
            v.zeroize();
        }
    }

    /// Add an entry.
    pub fn push(&mut self, key: String, value: String) {
        self.0.push((key, value));
    }
}

impl Drop for PluginConfig {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl std::ops::Deref for PluginConfig {
    type Target = [(String, String)];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl FromIterator<(String, String)> for PluginConfig {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        PluginConfig(iter.into_iter().collect())
    }
}

impl From<&[(String, String)]> for PluginConfig {
    fn from(entries: &[(String, String)]) -> Self {
        PluginConfig(entries.to_vec())
    }
}

impl std::fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, _)| (k, "<redacted>")))
            .finish()
    }
}

/// How answers show a sealed value.
pub const REDACTED: &str = "<sealed>";

/// Configuration keys whose values are stored and shown in the clear: locations, periods
/// and limits of the shipped plugins and their like (compared case-insensitively, `-` and `_`
/// alike). Every other value is sealed.
pub const PLAIN_KEYS: &[&str] = &[
    "bucket",
    "region",
    "endpoint",
    "prefix",
    "dir",
    "path",
    "host",
    "port",
    "url",
    "period",
    "period_days",
    "days",
    "hour",
    "start_hour",
    "end_hour",
    "weekday",
    "weekdays",
    "timezone",
    "interval",
    "max_age",
    "max_encryptions",
    "max_decryptions",
];

/// Whether `value`, the value of `key`, is sealed: everything but the values of
/// [`PLAIN_KEYS`], and those too where they hold a `@`, `?`, `#` or `;`: an endpoint or URL
/// carries credentials in its user information (`https://user:password@host`) and
/// signatures or tokens in its parameters (`?sig=…`). A `url`, `endpoint` or `host` with a
/// path is sealed too: webhooks and presigned locations carry their secret there
/// (`https://hooks.example/services/T0/B0/<secret>`).
pub fn is_sensitive(key: &str, value: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    if !PLAIN_KEYS.contains(&k.as_str()) || value.contains(['@', '?', '#', ';']) {
        return true;
    }
    let address = matches!(k.as_str(), "url" | "endpoint" | "host");
    let after_scheme = value.split_once("://").map_or(value, |(_, rest)| rest);
    address
        && after_scheme
            .split_once('/')
            .is_some_and(|(_, path)| !path.is_empty())
}

/// Secrets shorter than this are not looked for in a plugin's error text: replacing every
/// "user" or "admin" in a message would leave it unreadable, and a credential that short
/// protects nothing.
const MIN_SCRUBBED: usize = 6;

impl PluginConfig {
    /// `text` (written by the plugin: an error, a refusal), cut to about `max_chars`
    /// characters, with every secret of this configuration in it replaced by [`REDACTED`]:
    /// each sensitive value whole, and the parts of it that a plugin is likely to repeat alone
    /// (see [`secret_parts`]). One pass from the start that stops once the output is long
    /// enough, so a plugin's megabytes of error text cost no more than its first lines, and no
    /// secret is cut in two by the clipping.
    pub fn scrub(&self, text: &str, max_chars: usize) -> String {
        let mut parts: Vec<&str> = self
            .0
            .iter()
            .filter(|(k, v)| is_sensitive(k, v))
            .flat_map(|(_, v)| secret_parts(v))
            .filter(|p| p.len() >= MIN_SCRUBBED)
            .collect();
        // Longest first: a whole value is taken before a part of it would break it up.
        parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let (mut out, mut written, mut rest) = (String::new(), 0, text);
        while written < max_chars {
            if let Some(part) = parts.iter().find(|p| rest.starts_with(**p)) {
                out.push_str(REDACTED);
                written += REDACTED.len();
                rest = &rest[part.len()..];
                continue;
            }
            let Some(c) = rest.chars().next() else { break };
            out.push(c);
            written += 1;
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

/// The value whole, and what of it is secret when it is an address: the user information
/// (and the user and password in it), the path and its segments, the parameters (after `?`
/// or `;`) and their values, the fragment. The scheme, host and port stay: they say where a
/// failing backend was looking.
fn secret_parts(value: &str) -> Vec<&str> {
    let mut parts = vec![value];
    let rest = value.split_once("://").map_or(value, |(_, rest)| rest);
    let end = rest.find(['/', '?', '#', ';']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        parts.push(userinfo);
        parts.extend(userinfo.split(':'));
    }
    if !tail.is_empty() {
        parts.push(tail);
        parts.extend(tail.split(['/', '?', '&', '#', ';', '=']));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entries: &[(&str, &str)]) -> PluginConfig {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secrets_are_scrubbed_from_a_plugins_text_and_locations_kept() {
        let c = config(&[
            (
                "endpoint",
                "http://AKIAEXAMPLE:s3cr3tValue@store.example:9000",
            ),
            ("secret-access-key", "wJalrXUtnFEMI/K7MDENG"),
            (
                "url",
                "https://hooks.example/services/T0B0/xoxb-webhook-secret?sig=abcdef12",
            ),
            ("bucket", "kp-blobs"),
            ("pin", "123"),
        ]);
        let said = "PUT AKIAEXAMPLE:s3cr3tValue@store.example:9000/kp-blobs: refused; \
                    signed with wJalrXUtnFEMI/K7MDENG; password s3cr3tValue; \
                    webhook xoxb-webhook-secret said abcdef12; pin 123";
        let scrubbed = c.scrub(said, 1000);
        for secret in [
            "AKIAEXAMPLE",
            "s3cr3tValue",
            "wJalrXUtnFEMI",
            "xoxb-webhook-secret",
            "abcdef12",
        ] {
            assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
        }
        // Where it looked, and what is no secret, stay readable.
        assert!(
            scrubbed.contains("<sealed>@store.example:9000/kp-blobs"),
            "{scrubbed}"
        );
        // Too short to look for (and a PIN that short protects nothing).
        assert!(scrubbed.ends_with("pin 123"), "{scrubbed}");
        // Nothing sensitive: the text as written.
        let plain = config(&[("bucket", "kp-blobs"), ("endpoint", "http://store:9000")]);
        assert_eq!(
            plain.scrub("GET http://store:9000/kp-blobs", 1000),
            "GET http://store:9000/kp-blobs"
        );
        // Cut to length, never through a secret: a secret at the cut goes whole.
        let long = format!("{}s3cr3tValue and more", "x".repeat(195));
        let cut = c.scrub(&long, 200);
        assert_eq!(cut, format!("{}<sealed>", "x".repeat(195)));
        assert_eq!(c.scrub(&"y".repeat(5000), 200).len(), 200);
    }

    #[test]
    fn a_plugin_config_is_wiped_and_never_shown() {
        let mut config: PluginConfig = [("api_key".to_string(), "s3cr3t-value".to_string())]
            .into_iter()
            .collect();
        assert_eq!(format!("{config:?}"), r#"{"api_key": "<redacted>"}"#);
        let copy = config.clone();
        assert_eq!(&*copy, &*config);
        let (ptr, cap) = (config.0[0].1.as_ptr(), config.0[0].1.capacity());
        config.wipe();
        assert!(config.0[0].1.is_empty());
        // SAFETY: the string still owns its buffer (a wipe clears it but keeps the
        // allocation), and zeroize wrote every byte of its capacity, so all are initialized;
        // nothing else touches it meanwhile.
        let buffer = unsafe { std::slice::from_raw_parts(ptr, cap) };
        assert!(buffer.iter().all(|b| *b == 0), "{buffer:?}");
        // What a call gets is borrowed from it, not copied out.
        let entries: &[(String, String)] = &copy;
        assert_eq!(entries[0].1, "s3cr3t-value");
    }
}
