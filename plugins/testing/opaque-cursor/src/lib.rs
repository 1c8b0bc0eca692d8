//! Test plugin `opaque-cursor`: a storage backend that pages its listing as object stores
//! do, with continuation tokens that are not names (here: the last name listed, hex-encoded
//! behind a marker), one name per page. Nothing wrong with that; the host must hand such a
//! cursor back as it got it. Blobs are kept in the `kv` capability, as the `kv` backend keeps
//! them.

use keyplane_plugin_sdk::storage::kv;
use keyplane_plugin_sdk::storage::{Blob, BlobPage, Config, Storage, StorageError};

struct OpaqueCursor;

const MARK: &str = "token:";

fn encode(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{MARK}{hex}")
}

fn decode(cursor: &str) -> Result<String, StorageError> {
    let bad = || StorageError::Invalid(format!("not a cursor of this backend: {cursor:?}"));
    let hex = cursor.strip_prefix(MARK).ok_or_else(bad)?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    String::from_utf8(bytes).map_err(|_| bad())
}

impl Storage for OpaqueCursor {
    fn get(_config: Config, name: String) -> Result<Option<Blob>, StorageError> {
        Ok(kv::get(&name)?.map(|data| Blob { name, version: 1, data }))
    }

    fn put(_config: Config, name: String, data: Vec<u8>, _expected: Option<u64>) -> Result<u64, StorageError> {
        kv::set(&name, &data)?;
        Ok(1)
    }

    fn delete(_config: Config, name: String, _expected: Option<u64>) -> Result<bool, StorageError> {
        kv::delete(&name)
    }

    fn list_blobs(_config: Config, prefix: String, cursor: Option<String>, _limit: u32) -> Result<BlobPage, StorageError> {
        let after = cursor.as_deref().map(decode).transpose()?;
        let names = kv::list_keys(&prefix, after.as_deref(), 1)?;
        let next_cursor = names.last().map(|n| encode(n));
        Ok(BlobPage { names, next_cursor })
    }
}

keyplane_plugin_sdk::storage::export_storage_backend!(OpaqueCursor);
