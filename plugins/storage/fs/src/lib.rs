//! Storage backend `fs`: blobs as files in the directory the host preopens at `/data` (granted
//! with the `filesystem` capability; the host scopes it to the tenant and plugin). File names
//! are the hex of the blob name, so no name can escape the directory. Each file holds an
//! 8-byte big-endian version followed by the data; writes go through a temporary file and a
//! rename. Config: `dir` (default `/data`).

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

use keyplane_plugin_sdk::config::Settings;
use keyplane_plugin_sdk::storage::{Blob, BlobPage, Config, Storage, StorageError};

struct Fs;

fn root(config: &Config) -> PathBuf {
    PathBuf::from(Settings(config).get("dir").unwrap_or("/data"))
}

fn to_hex(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(file: &str) -> Option<String> {
    if file.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..file.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(file.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::Unavailable(format!("filesystem: {e}"))
}

fn read(config: &Config, name: &str) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
    match fs::read(root(config).join(to_hex(name))) {
        Ok(raw) if raw.len() >= 8 => {
            let mut v = [0u8; 8];
            v.copy_from_slice(&raw[..8]);
            Ok(Some((u64::from_be_bytes(v), raw[8..].to_vec())))
        }
        Ok(_) => Err(StorageError::Unavailable(format!("file of {name:?} is corrupt"))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

fn check(current: Option<u64>, expected: Option<u64>) -> Result<(), StorageError> {
    match expected {
        Some(e) if e != current.unwrap_or(0) => Err(StorageError::Conflict(current.unwrap_or(0))),
        _ => Ok(()),
    }
}

impl Storage for Fs {
    fn get(config: Config, name: String) -> Result<Option<Blob>, StorageError> {
        Ok(read(&config, &name)?.map(|(version, data)| Blob { name, version, data }))
    }

    fn put(config: Config, name: String, data: Vec<u8>, expected_version: Option<u64>) -> Result<u64, StorageError> {
        let current = read(&config, &name)?.map(|(v, _)| v);
        check(current, expected_version)?;
        let version = current.unwrap_or(0) + 1;
        let mut raw = version.to_be_bytes().to_vec();
        raw.extend_from_slice(&data);
        let dir = root(&config);
        let tmp = dir.join(format!("{}.tmp", to_hex(&name)));
        fs::write(&tmp, &raw).map_err(io)?;
        fs::rename(&tmp, dir.join(to_hex(&name))).map_err(io)?;
        Ok(version)
    }

    fn delete(config: Config, name: String, expected_version: Option<u64>) -> Result<bool, StorageError> {
        let current = read(&config, &name)?.map(|(v, _)| v);
        check(current, expected_version)?;
        match fs::remove_file(root(&config).join(to_hex(&name))) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(e)),
        }
    }

    fn list_blobs(config: Config, prefix: String, cursor: Option<String>, limit: u32) -> Result<BlobPage, StorageError> {
        let mut names: Vec<String> = fs::read_dir(root(&config))
            .map_err(io)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|f| from_hex(&f))
            .filter(|n| n.starts_with(&prefix) && cursor.as_ref().is_none_or(|c| n > c))
            .collect();
        names.sort();
        let limit = limit.clamp(1, 1000) as usize;
        let more = names.len() > limit;
        names.truncate(limit);
        let next_cursor = if more { names.last().cloned() } else { None };
        Ok(BlobPage { names, next_cursor })
    }
}

keyplane_plugin_sdk::storage::export_storage_backend!(Fs);
