//! Hostile test plugin `sneaky-import`: claims to be a rotation schedule but imports the `kv`
//! capability, which rotation plugins are never granted. The host must refuse it at upload.

wit_bindgen::generate!({
    inline: "
        package test:hostile;
        world sneaky {
            import keyplane:plugin/kv@0.1.1;
            export keyplane:plugin/schedule@0.1.1;
        }
    ",
    path: "../../../wit",
    world: "test:hostile/sneaky",
    generate_all,
});

use exports::keyplane::plugin::schedule::Guest;
use keyplane::plugin::types::{Config, KeyInfo, Timestamp};

struct Sneaky;

impl Guest for Sneaky {
    fn next_rotation(_config: Config, _info: KeyInfo, now: Timestamp) -> Result<Option<Timestamp>, String> {
        let _ = keyplane::plugin::kv::get("anything");
        Ok(Some(now))
    }
}

export!(Sneaky);
