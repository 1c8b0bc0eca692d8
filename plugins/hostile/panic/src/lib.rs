//! Hostile test plugin `panic`: panics (a trap).

use keyplane_plugin_sdk::rotation::{Config, KeyInfo, Schedule, Timestamp};

struct Hostile;

impl Schedule for Hostile {
    fn next_rotation(config: Config, info: KeyInfo, now: Timestamp) -> Result<Option<Timestamp>, String> {
        let _ = (config, now);
        panic!("hostile plugin panics for key {}", info.key_id)
    }
}

keyplane_plugin_sdk::rotation::export_rotation_schedule!(Hostile);
