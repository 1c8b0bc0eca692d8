//! Storage backend `kv` (the default): blobs in the host's tenant-scoped key-value table.
//! Each blob is stored as an 8-byte big-endian version followed by its data. Conditional
//! writes and deletes are compare-and-swaps on the stored value (`kv.set-if`,
//! `kv.delete-if`), so two calls racing on one name cannot both succeed.

use keyplane_plugin_sdk::storage::kv;
use keyplane_plugin_sdk::storage::{Blob, BlobPage, Config, Storage, StorageError};

struct Kv;

/// A stored value: its version, its data, and the raw bytes (what a compare-and-swap expects).
struct Stored {
    version: u64,
    raw: Vec<u8>,
}

fn read(name: &str) -> Result<Option<Stored>, StorageError> {
    match kv::get(name)? {
        None => Ok(None),
        Some(raw) if raw.len() >= 8 => {
            let mut v = [0u8; 8];
            v.copy_from_slice(&raw[..8]);
            Ok(Some(Stored { version: u64::from_be_bytes(v), raw }))
        }
        Some(_) => Err(StorageError::Unavailable(format!("stored value of {name:?} is corrupt"))),
    }
}

/// The version stored under `name` now (0: absent), for a conflict's answer.
fn current_version(name: &str) -> u64 {
    read(name).ok().flatten().map_or(0, |s| s.version)
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
        Ok(read(&name)?.map(|s| Blob { name, version: s.version, data: s.raw[8..].to_vec() }))
    }

    fn put(_config: Config, name: String, data: Vec<u8>, expected_version: Option<u64>) -> Result<u64, StorageError> {
        let current = read(&name)?;
        check(current.as_ref().map(|s| s.version), expected_version)?;
        let version = current.as_ref().map_or(0, |s| s.version) + 1;
        let mut raw = version.to_be_bytes().to_vec();
        raw.extend_from_slice(&data);
        match expected_version {
            None => kv::set(&name, &raw)?,
            // Written only if nobody wrote since it was read.
            Some(_) => {
                if !kv::set_if(&name, current.as_ref().map(|s| s.raw.as_slice()), &raw)? {
                    return Err(StorageError::Conflict(current_version(&name)));
                }
            }
        }
        Ok(version)
    }

    fn delete(_config: Config, name: String, expected_version: Option<u64>) -> Result<bool, StorageError> {
        let Some(expected) = expected_version else {
            return kv::delete(&name);
        };
        let current = read(&name)?;
        check(current.as_ref().map(|s| s.version), Some(expected))?;
        match current {
            None => Ok(false),
            Some(s) if kv::delete_if(&name, &s.raw)? => Ok(true),
            Some(_) => Err(StorageError::Conflict(current_version(&name))),
        }
    }

    fn list_blobs(_config: Config, prefix: String, cursor: Option<String>, limit: u32) -> Result<BlobPage, StorageError> {
        let limit = limit.clamp(1, 1000);
        let names = kv::list_keys(&prefix, cursor.as_deref(), limit)?;
        let next_cursor = if names.len() as u32 == limit { names.last().cloned() } else { None };
        Ok(BlobPage { names, next_cursor })
    }
}

keyplane_plugin_sdk::storage::export_storage_backend!(Kv);
