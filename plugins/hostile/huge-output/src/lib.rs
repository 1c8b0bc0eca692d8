//! Hostile test plugin `huge-output`: returns an enormous result (a 48 MiB error string).

use keyplane_plugin_sdk::rotation::{Config, KeyInfo, Schedule, Timestamp};

struct Hostile;

impl Schedule for Hostile {
    fn next_rotation(config: Config, info: KeyInfo, now: Timestamp) -> Result<Option<Timestamp>, String> {
        let _ = (config, info, now);
        Err("x".repeat(48 << 20))
    }
}

keyplane_plugin_sdk::rotation::export_rotation_schedule!(Hostile);
