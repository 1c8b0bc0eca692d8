//! Hostile test plugin `endless-listing`: a storage backend whose listing never ends. Every
//! `list-blobs` page has no names and a cursor never seen before, so a caller that pages
//! until the cursor stops changing pages forever. Blobs are kept in the `kv` capability, as the `kv` backend keeps them.

use keyplane_plugin_sdk::storage::kv;
use keyplane_plugin_sdk::storage::{Blob, BlobPage, Config, Storage, StorageError};

struct EndlessListing;

impl Storage for EndlessListing {
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
        let page = cursor
            .as_deref()
            .and_then(|c| c.rsplit('-').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        Ok(BlobPage { names: Vec::new(), next_cursor: Some(format!("{prefix}endless-{}", page + 1)) })
    }
}

keyplane_plugin_sdk::storage::export_storage_backend!(EndlessListing);
