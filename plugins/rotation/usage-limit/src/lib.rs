//! Rotation schedule `usage-limit`: rotate once a version has sealed `max_encryptions`
//! messages. Default 2^32: NIST SP 800-38D caps random 96-bit-nonce AES-GCM invocations per key
//! at 2^32. Config: `max_encryptions`.

use keyplane_plugin_sdk::config::Settings;
use keyplane_plugin_sdk::rotation::{Config, KeyInfo, Schedule, Timestamp};

const NIST_GCM_RANDOM_NONCE_LIMIT: u64 = 1 << 32;

struct UsageLimit;

impl Schedule for UsageLimit {
    fn next_rotation(config: Config, info: KeyInfo, now: Timestamp) -> Result<Option<Timestamp>, String> {
        let max = Settings(&config).u64_or("max_encryptions", NIST_GCM_RANDOM_NONCE_LIMIT)?;
        if max == 0 {
            return Err("config `max_encryptions` must be at least 1".into());
        }
        if info.encryptions_since_rotation >= max {
            Ok(Some(now))
        } else {
            Ok(None)
        }
    }
}

keyplane_plugin_sdk::rotation::export_rotation_schedule!(UsageLimit);
