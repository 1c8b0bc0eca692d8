//! Transit's `random(/<source>)(/<bytes>)` and `hash(/<algorithm>)` on keyplane's
//! `generate-random` (the HSM's generator, whichever source is named) and `hash`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::wire::{hash_name, weak, B64};
use super::{done, err, Call, Failure, Reply};
use crate::error::Error;
use crate::ops;

type Answer = std::result::Result<Reply, Failure>;

/// `hex` or `base64` output.
fn encode(
    format: Option<&str>,
    default_hex: bool,
    bytes: &[u8],
) -> Result<Zeroizing<String>, Error> {
    match format {
        Some("hex") => Ok(Zeroizing::new(hex::encode(bytes))),
        Some("base64") => Ok(Zeroizing::new(STANDARD.encode(bytes))),
        None if default_hex => Ok(Zeroizing::new(hex::encode(bytes))),
        None => Ok(Zeroizing::new(STANDARD.encode(bytes))),
        Some(other) => Err(Error::validation(format!(
            "unsupported encoding format {other:?}; must be \"hex\" or \"base64\""
        ))),
    }
}

#[derive(Debug, Deserialize)]
struct RandomRequest {
    #[serde(default, deserialize_with = "weak::opt_int")]
    bytes: Option<i64>,
    format: Option<String>,
}

#[derive(Serialize)]
struct RandomData<'a> {
    random_bytes: &'a str,
}

/// `POST random`: `bytes` (default 32) from the HSM.
pub async fn random(call: &Call<'_>, path_bytes: Option<String>) -> Answer {
    let req: RandomRequest = call.decode().map_err(err)?;
    let op = random_op(&req, path_bytes).map_err(err)?;
    let out = call.run(Ok(op)).await.map_err(done)?;
    let text = encode(req.format.as_deref(), false, &out.random.0).map_err(done)?;
    Reply::data(&RandomData {
        random_bytes: &text,
    })
}

#[derive(Debug, Deserialize)]
struct HashRequest {
    input: Option<B64>,
    algorithm: Option<String>,
    format: Option<String>,
}

#[derive(Serialize)]
struct HashData<'a> {
    sum: &'a str,
}

/// `POST hash`: the digest of `input` (base64), hex by default.
pub async fn hash(call: &Call<'_>, path_algorithm: Option<String>) -> Answer {
    let req: HashRequest = call.decode().map_err(err)?;
    let format = req.format.clone();
    let op = hash_op(req, path_algorithm).map_err(err)?;
    let out = call.run(Ok(op)).await.map_err(done)?;
    let text = encode(format.as_deref(), true, &out.digest.0).map_err(done)?;
    Reply::data(&HashData { sum: &text })
}

/// `bytes` (the path's, else the body's, else 32: as Vault's `HandleRandomAPI`) and the
/// format, checked before any random bytes are drawn.
fn random_op(
    req: &RandomRequest,
    path_bytes: Option<String>,
) -> Result<ops::generate_random::GenerateRandom, Error> {
    let bytes = match (path_bytes, req.bytes) {
        (Some(p), _) => p.parse().ok(),
        (None, Some(n)) => u64::try_from(n).ok(),
        (None, None) => Some(32),
    }
    .ok_or_else(|| Error::validation("bytes must be a positive number"))?;
    encode(req.format.as_deref(), false, &[])?;
    Ok(ops::generate_random::GenerateRandom {
        number_of_bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
    })
}

fn hash_op(req: HashRequest, path_algorithm: Option<String>) -> Result<ops::hash::Hash, Error> {
    // As Vault: the path's algorithm first, then the body's.
    let algorithm = path_algorithm
        .as_deref()
        .or(req.algorithm.as_deref())
        .unwrap_or("sha2-256");
    let algorithm = hash_name(algorithm)?;
    let input = req
        .input
        .ok_or_else(|| Error::validation("missing input to hash"))?;
    encode(req.format.as_deref(), true, &[])?;
    Ok(ops::hash::Hash {
        input: ops::Base64(input.0),
        algorithm: Some(algorithm.into()),
    })
}

/// A `random` body decoded and translated into its operation (validated).
#[cfg(feature = "fuzzing")]
pub(super) fn fuzz_random(body: &[u8], path_bytes: Option<String>) {
    if let Ok(req) = super::decode::<RandomRequest>(body) {
        super::fuzz_validate(random_op(&req, path_bytes));
    }
}

/// A `hash` body decoded and translated into its operation (validated).
#[cfg(feature = "fuzzing")]
pub(super) fn fuzz_hash(body: &[u8], path_algorithm: Option<String>) {
    if let Ok(req) = super::decode::<HashRequest>(body) {
        super::fuzz_validate(hash_op(req, path_algorithm));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Vault: what the path names wins over the body.
    #[test]
    fn the_path_comes_before_the_body() {
        let req: HashRequest =
            serde_json::from_value(serde_json::json!({ "input": "aGk=", "algorithm": "sha2-256" }))
                .unwrap();
        let op = hash_op(req, Some("sha2-512".into())).unwrap();
        assert_eq!(op.algorithm.as_deref(), Some("SHA_512"));
        let req: RandomRequest =
            serde_json::from_value(serde_json::json!({ "bytes": 32 })).unwrap();
        assert_eq!(
            random_op(&req, Some("16".into())).unwrap().number_of_bytes,
            16
        );
        assert_eq!(random_op(&req, None).unwrap().number_of_bytes, 32);
    }
}
