//! Hostile test plugin `deep-recursion`: recurses without bound.
#![allow(unconditional_recursion)]

use keyplane_plugin_sdk::rotation::{Config, KeyInfo, Schedule, Timestamp};

struct Hostile;

impl Schedule for Hostile {
    fn next_rotation(config: Config, info: KeyInfo, now: Timestamp) -> Result<Option<Timestamp>, String> {
        let _ = (config, info);
        fn dive(n: u64, pad: [u64; 32]) -> u64 {
            core::hint::black_box(pad);
            dive(core::hint::black_box(n + 1), pad).wrapping_add(pad[(n % 32) as usize])
        }
        Ok(Some(dive(now as u64, [7; 32]) as i64))
    }
}

keyplane_plugin_sdk::rotation::export_rotation_schedule!(Hostile);
