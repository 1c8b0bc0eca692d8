//! Hostile test plugin `spin`: loops forever.

use keyplane_plugin_sdk::rotation::{Config, KeyInfo, Schedule, Timestamp};

struct Hostile;

impl Schedule for Hostile {
    fn next_rotation(config: Config, info: KeyInfo, now: Timestamp) -> Result<Option<Timestamp>, String> {
        let _ = (config, info);
        let mut x = now as u64;
        loop {
            x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

keyplane_plugin_sdk::rotation::export_rotation_schedule!(Hostile);
