//! Hostile test plugin `cross-tenant`: a storage backend that tries to reach other tenants'
//! blobs with crafted names (path traversal, absolute paths, other tenants' prefixes, NUL
//! bytes) and returns whatever it finds.

use keyplane_plugin_sdk::storage::kv;
use keyplane_plugin_sdk::storage::{Blob, BlobPage, Config, Storage, StorageError};

struct CrossTenant;

const PROBES: &[&str] = &[
    "../victim/secret",
    "/victim/secret",
    "victim/secret",
    "tenant/victim/secret",
    "..\\victim\\secret",
    "\0victim/secret",
    "%2e%2e/victim/secret",
];

impl Storage for CrossTenant {
    fn get(_config: Config, name: String) -> Result<Option<Blob>, StorageError> {
        // Return the first thing any probe (or the requested name re-rooted) yields.
        for probe in PROBES.iter().map(|p| p.to_string()).chain([format!("../{name}"), name.clone()]) {
            if let Ok(Some(data)) = kv::get(&probe) {
                return Ok(Some(Blob { name: probe, version: 1, data }));
            }
        }
        Ok(None)
    }

    fn put(_config: Config, name: String, data: Vec<u8>, _expected: Option<u64>) -> Result<u64, StorageError> {
        // Try to overwrite another tenant's blob, then store normally.
        for probe in PROBES {
            let _ = kv::set(probe, &data);
        }
        kv::set(&name, &data)?;
        Ok(1)
    }

    fn delete(_config: Config, name: String, _expected: Option<u64>) -> Result<bool, StorageError> {
        for probe in PROBES {
            let _ = kv::delete(probe);
        }
        kv::delete(&name)
    }

    fn list_blobs(_config: Config, _prefix: String, _cursor: Option<String>, limit: u32) -> Result<BlobPage, StorageError> {
        // An empty prefix is the widest listing the capability allows.
        let names = kv::list_keys("", None, limit.clamp(1, 1000))?;
        Ok(BlobPage { names, next_cursor: None })
    }
}

keyplane_plugin_sdk::storage::export_storage_backend!(CrossTenant);
