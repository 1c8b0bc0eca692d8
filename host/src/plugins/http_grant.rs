//! Outbound HTTP for plugins (`wasi:http`): which destinations a plugin may reach and how long
//! a request may take. A plugin is granted `http:<host>:<port>` capabilities at upload; the
//! operator's `plugins.http_hosts` bounds what any plugin may be granted, and is checked again
//! on every request (shrinking it takes effect at once). Anything else is refused with
//! `HTTP-request-denied` before a connection is made. Timeouts are capped by the plugin's
//! deadline, so a stalled server cannot hold a call beyond it.

use std::time::Duration;

use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// Prefix of an outbound-HTTP capability: `http:<host>:<port>`.
pub const CAP_HTTP_PREFIX: &str = "http:";

/// Normalise `host:port` (lowercase host, explicit port). `None` if malformed.
pub fn normalise_destination(dest: &str) -> Option<String> {
    let (host, port) = dest.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty()
        || port == 0
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
    {
        return None;
    }
    let host = host.to_ascii_lowercase();
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// The destinations a capability list grants (`http:<host>:<port>` entries).
pub fn granted_destinations(capabilities: &[String]) -> Vec<String> {
    capabilities
        .iter()
        .filter_map(|c| c.strip_prefix(CAP_HTTP_PREFIX))
        .filter_map(normalise_destination)
        .collect()
}

/// The outbound-HTTP policy of one invocation.
pub struct HttpGrant {
    /// Granted to this plugin and allowed by the operator (already intersected).
    allowed: Vec<String>,
    /// Upper bound on every timeout of a request.
    max_wait: Duration,
}

impl HttpGrant {
    /// `granted`: the plugin's destinations; `operator`: the operator's allowlist.
    pub fn new(granted: &[String], operator: &[String], max_wait: Duration) -> Self {
        let operator: Vec<String> = operator
            .iter()
            .filter_map(|d| normalise_destination(d))
            .collect();
        HttpGrant {
            allowed: granted
                .iter()
                .filter(|d| operator.contains(d))
                .cloned()
                .collect(),
            max_wait,
        }
    }

    /// Nothing may be reached.
    pub fn none() -> Self {
        HttpGrant {
            allowed: Vec::new(),
            max_wait: Duration::ZERO,
        }
    }

    fn permits(&self, uri: &http::Uri) -> bool {
        let Some(authority) = uri.authority() else {
            return false;
        };
        let port =
            authority
                .port_u16()
                .unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
                    443
                } else {
                    80
                });
        normalise_destination(&format!("{}:{port}", authority.host()))
            .is_some_and(|d| self.allowed.contains(&d))
    }

    fn capped(&self, options: Option<RequestOptions>) -> RequestOptions {
        let cap = |d: Option<Duration>| Some(d.map_or(self.max_wait, |d| d.min(self.max_wait)));
        let o = options.unwrap_or_default();
        RequestOptions {
            connect_timeout: cap(o.connect_timeout),
            first_byte_timeout: cap(o.first_byte_timeout),
            between_bytes_timeout: cap(o.between_bytes_timeout),
        }
    }
}

type ResponseFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

/// Where a request goes, as logs and spans may show it: host and port, never the user
/// information an authority may carry (`user:password@`), which a plugin's configuration (a
/// storage endpoint) may put there.
fn destination(uri: &http::Uri) -> String {
    match uri.authority() {
        Some(a) => match a.port_u16() {
            Some(port) => format!("{}:{port}", a.host()),
            None => a.host().to_string(),
        },
        None => String::new(),
    }
}

impl WasiHttpHooks for HttpGrant {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> ResponseFuture {
        if !self.permits(request.uri()) {
            tracing::warn!(
                destination = %destination(request.uri()),
                "plugin HTTP request refused: destination not granted"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let options = self.capped(options);
        let span = tracing::info_span!(
            "plugin.http",
            otel.name = format!("plugin HTTP {}", request.method()),
            http.request.method = %request.method(),
            server.address = %destination(request.uri()),
        );
        let _ = fut;
        Box::new(tracing::Instrument::instrument(
            async move {
                use http_body_util::BodyExt;
                let (res, io) =
                    wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
                Ok((
                    res.map(BodyExt::boxed_unsync),
                    Box::new(io)
                        as Box<
                            dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                                + Send,
                        >,
                ))
            },
            span,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_is_shown_without_user_information() {
        for (uri, shown) in [
            ("http://u:s3cret@127.0.0.1:9000/b/k", "127.0.0.1:9000"),
            ("https://token@storage.example/k", "storage.example"),
            ("http://[::1]:8080/", "[::1]:8080"),
        ] {
            assert_eq!(destination(&uri.parse().unwrap()), shown, "{uri}");
        }
    }

    #[test]
    fn destinations_are_normalised_and_intersected() {
        assert_eq!(
            normalise_destination("S3.Example.com:443").as_deref(),
            Some("s3.example.com:443")
        );
        assert_eq!(normalise_destination("host"), None);
        assert_eq!(normalise_destination("host:0"), None);
        assert_eq!(normalise_destination("a/b:80"), None);
        let g = HttpGrant::new(
            &["127.0.0.1:9000".into(), "evil.example:80".into()],
            &["127.0.0.1:9000".into()],
            Duration::from_secs(1),
        );
        assert!(g.permits(&"http://127.0.0.1:9000/b/k".parse().unwrap()));
        assert!(!g.permits(&"http://127.0.0.1:9001/b/k".parse().unwrap()));
        assert!(!g.permits(&"http://evil.example/".parse().unwrap()));
        assert!(!HttpGrant::none().permits(&"http://127.0.0.1:9000/".parse().unwrap()));
    }
}
