//! One blocking HTTP exchange over `wasi:http/outgoing-handler`: build the request, stream the
//! body out, wait for the response, read its body up to a cap. The host decides whether the
//! destination may be reached; a refusal comes back as `HTTP-request-denied`.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// Largest response body read (blobs are small; listings are paged).
const MAX_BODY: usize = 4 << 20;
/// Per-request timeouts handed to the host (which may cap them further).
const CONNECT_TIMEOUT_NS: u64 = 2_000_000_000;
const FIRST_BYTE_TIMEOUT_NS: u64 = 5_000_000_000;

/// A request to send.
pub struct Request<'a> {
    pub method: &'a str,
    pub https: bool,
    pub authority: &'a str,
    /// Already percent-encoded path and query.
    pub path_and_query: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

/// A response received.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
    }
}

fn describe(e: &ErrorCode) -> String {
    match e {
        ErrorCode::HttpRequestDenied => {
            "the host refused the request: destination not granted to this plugin".into()
        }
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => "timed out".into(),
        other => format!("{other:?}"),
    }
}

/// Send `req` and wait for the whole response.
pub fn send(req: &Request<'_>) -> Result<Response, String> {
    let entries: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&entries).map_err(|e| format!("bad header: {e:?}"))?;
    let out = OutgoingRequest::new(headers);
    let method = match req.method {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "HEAD" => Method::Head,
        "DELETE" => Method::Delete,
        "POST" => Method::Post,
        other => Method::Other(other.to_string()),
    };
    out.set_method(&method).map_err(|_| "bad method")?;
    out.set_scheme(Some(if req.https { &Scheme::Https } else { &Scheme::Http }))
        .map_err(|_| "bad scheme")?;
    out.set_authority(Some(req.authority)).map_err(|_| "bad authority")?;
    out.set_path_with_query(Some(req.path_and_query)).map_err(|_| "bad path")?;
    let body = out.body().map_err(|_| "request body taken")?;

    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(CONNECT_TIMEOUT_NS));
    let _ = options.set_first_byte_timeout(Some(FIRST_BYTE_TIMEOUT_NS));
    let pending = outgoing_handler::handle(out, Some(options)).map_err(|e| describe(&e))?;

    {
        let stream = body.write().map_err(|_| "request stream taken")?;
        for chunk in req.body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| format!("sending body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| describe(&e))?;

    let response = loop {
        match pending.get() {
            Some(result) => break result,
            None => pending.subscribe().block(),
        }
    };
    let response = response
        .map_err(|_| "response already taken".to_string())?
        .map_err(|e| describe(&e))?;
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().map_err(|_| "response body taken")?;
    let body = read_all(&incoming)?;
    drop(response);
    Ok(Response { status, headers, body })
}

fn read_all(incoming: &IncomingBody) -> Result<Vec<u8>, String> {
    let stream = incoming.stream().map_err(|_| "response stream taken")?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(format!("response larger than {MAX_BODY} bytes"));
                }
            }
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading response: {}", e.to_debug_string()))
            }
        }
    }
}
