//! Entry points for the fuzz targets in `fuzz/` (built only with the `fuzzing` feature): each
//! hands arbitrary bytes to one of the decoders that meet what a client sends, exactly as the
//! service runs it. A decoder may refuse its input, never panic, hang or grow without bound;
//! what a target checks beyond that is said on its function.
//!
//! Where a decoder needs a choice (which operation a body is for), the first input byte makes
//! it, so one target covers every operation of a front.

use std::sync::OnceLock;

use crate::config::PluginsConfig;
use crate::plugins::{PluginRuntime, World};

/// The first byte as a selector, and the rest.
fn split(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (usize::from(*first), rest),
        None => (0, data),
    }
}

/// A keyplane ciphertext: parsed; one that parses encodes to bytes that parse to the same.
pub fn ciphertext(data: &[u8]) {
    use crate::crypto::ciphertext::Ciphertext;
    if let Ok(ct) = Ciphertext::parse(data) {
        let again = Ciphertext::parse(&ct.encode()).expect("an encoded ciphertext parses");
        assert_eq!(again.encode(), ct.encode(), "encode ∘ parse is stable");
    }
}

/// A native request body for the operation the first byte selects (decoded into the
/// operation and validated), and the same bytes as a batch.
pub fn native_request(data: &[u8]) {
    let (selector, body) = split(data);
    crate::api::fuzz::native(selector, body);
}

/// An AWS KMS request body for the action the first byte selects (decoded, translated into
/// its operation, validated).
pub fn aws_request(data: &[u8]) {
    let (selector, body) = split(data);
    crate::api::fuzz::aws(selector, body);
}

/// A Transit request line routed to its endpoint, the rest as its body decoded into the
/// operations it becomes (validated), and as a `vault:v<N>:` value.
pub fn transit_request(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        crate::api::fuzz::transit(text);
    }
}

/// An HTTP request (`METHOD uri`, header lines, a blank line, the body) whose Signature
/// Version 4 is parsed and, if it parses, whose canonical request is built.
pub fn sigv4(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return;
    };
    let mut lines = head.lines();
    let Some((method, uri)) = lines.next().and_then(|l| l.split_once(' ')) else {
        return;
    };
    let mut builder = http::Request::builder().method(method).uri(uri);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim_start());
        }
    }
    if let Ok(req) = builder.body(body.to_vec()) {
        crate::authn::sigv4::fuzz(&crate::authn::sigv4::Request::from_http(&req));
    }
}

/// A policy test file (`keyplane policy test`): parsed, and each case evaluated against the
/// shipped policies.
pub fn policy_tests(data: &[u8]) {
    static POLICIES: OnceLock<crate::authz::LoadedPolicies> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = crate::policy_cli::cases::parse_file(text) else {
        return;
    };
    let loaded = POLICIES.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        crate::authz::load_policies(Some(&dir)).expect("the shipped policies load")
    });
    for case in file.cases.iter().take(16) {
        let _ = crate::policy_cli::cases::evaluate(loaded, case, &file.entities);
    }
}

/// An audit archive segment (gzip of JSON lines), read record by record.
pub fn audit_archive(data: &[u8]) {
    for line in crate::audit::archive::lines_of(data).take(10_000) {
        if line.is_err() {
            break;
        }
    }
}

/// A plugin upload: arbitrary bytes as a component, validated and type-checked against a
/// world (the first byte chooses which) by the service's own engine and limits.
pub fn plugin_component(data: &[u8]) {
    static RUNTIME: OnceLock<PluginRuntime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("keyplane-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let db = tokio::runtime::Runtime::new()
            .expect("a runtime")
            .block_on(crate::store::Db::open(&format!(
                "sqlite://{}?mode=rwc",
                dir.join("fuzz.db").display()
            )))
            .expect("a scratch database");
        PluginRuntime::new(PluginsConfig::default(), dir.join("plugins"), db)
            .expect("a plugin runtime")
    });
    let (selector, bytes) = split(data);
    let world = if selector % 2 == 0 {
        World::RotationSchedule
    } else {
        World::StorageBackend
    };
    let _ = runtime.install(bytes, world);
}
