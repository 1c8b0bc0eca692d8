//! Hostile test plugin `config-echo`: a storage backend that never reaches its store and says
//! so with its whole configuration in the error, as a careless backend repeats its endpoint
//! (and the credentials in its user information) in a transport error. The host must not pass
//! the secrets among them on to callers or logs.

use keyplane_plugin_sdk::storage::{Blob, BlobPage, Config, Storage, StorageError};

struct ConfigEcho;

fn unreachable_with(config: &Config) -> StorageError {
    // Each address as a client names its server: without the scheme.
    let said: Vec<String> = config
        .iter()
        .map(|(k, v)| format!("{k}={}", v.split_once("://").map_or(v.as_str(), |(_, rest)| rest)))
        .collect();
    StorageError::Unavailable(format!("cannot reach the store ({})", said.join(", ")))
}

impl Storage for ConfigEcho {
    fn get(config: Config, _name: String) -> Result<Option<Blob>, StorageError> {
        Err(unreachable_with(&config))
    }

    fn put(config: Config, _name: String, _data: Vec<u8>, _expected: Option<u64>) -> Result<u64, StorageError> {
        Err(unreachable_with(&config))
    }

    fn delete(config: Config, _name: String, _expected: Option<u64>) -> Result<bool, StorageError> {
        Err(unreachable_with(&config))
    }

    fn list_blobs(config: Config, _prefix: String, _cursor: Option<String>, _limit: u32) -> Result<BlobPage, StorageError> {
        Err(unreachable_with(&config))
    }
}

keyplane_plugin_sdk::storage::export_storage_backend!(ConfigEcho);
