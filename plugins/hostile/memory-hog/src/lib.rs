//! Hostile test plugin `memory-hog`: grows memory without bound.

use keyplane_plugin_sdk::rotation::{Config, KeyInfo, Schedule, Timestamp};

struct Hostile;

impl Schedule for Hostile {
    fn next_rotation(config: Config, info: KeyInfo, now: Timestamp) -> Result<Option<Timestamp>, String> {
        let _ = (config, info, now);
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(core::hint::black_box(vec![0xAB; 1 << 20]));
        }
    }
}

keyplane_plugin_sdk::rotation::export_rotation_schedule!(Hostile);
