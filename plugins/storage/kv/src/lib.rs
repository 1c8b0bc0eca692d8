//! Storage backend `kv` (the default): blobs in the host's tenant-scoped key-value table.
//! Each blob is stored as an 8-byte big-endian version followed by its data.

use keyplane_plugin_sdk::storage::kv;
use keyplane_plugin_sdk::storage::{Blob, BlobPage, Config, Storage, StorageError};

struct Kv;

fn read(name: &str) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
    match kv::get(name)? {
        None => Ok(None),
        Some(raw) if raw.len() >= 8 => {
            let mut v = [0u8; 8];
            v.copy_from_slice(&raw[..8]);
            Ok(Some((u64::from_be_bytes(v), raw[8..].to_vec())))
        }
        Some(_) => Err(StorageError::Unavailable(format!("stored value of {name:?} is corrupt"))),
    }
}

fn check(current: Option<u64>, expected: Option<u64>) -> Result<(), StorageError> {
    match expected {
        None => Ok(()),
        Some(e) if e == current.unwrap_or(0) => Ok(()),
        Some(_) => Err(StorageError::Conflict(current.unwrap_or(0))),
    }
}

impl Storage for Kv {
    fn get(_config: Config, name: String) -> Result<Option<Blob>, StorageError> {
        Ok(read(&name)?.map(|(version, data)| Blob { name, version, data }))
    }

    fn put(_config: Config, name: String, data: Vec<u8>, expected_version: Option<u64>) -> Result<u64, StorageError> {
        let current = read(&name)?.map(|(v, _)| v);
        check(current, expected_version)?;
        let version = current.unwrap_or(0) + 1;
        let mut raw = version.to_be_bytes().to_vec();
        raw.extend_from_slice(&data);
        kv::set(&name, &raw)?;
        Ok(version)
    }

    fn delete(_config: Config, name: String, expected_version: Option<u64>) -> Result<bool, StorageError> {
        let current = read(&name)?.map(|(v, _)| v);
        check(current, expected_version)?;
        kv::delete(&name)
    }

    fn list_blobs(_config: Config, prefix: String, cursor: Option<String>, limit: u32) -> Result<BlobPage, StorageError> {
        let limit = limit.clamp(1, 1000);
        let names = kv::list_keys(&prefix, cursor.as_deref(), limit)?;
        let next_cursor = if names.len() as u32 == limit { names.last().cloned() } else { None };
        Ok(BlobPage { names, next_cursor })
    }
}

keyplane_plugin_sdk::storage::export_storage_backend!(Kv);
