//! Rotation schedule `fixed-interval`: rotate `period` after the last rotation (or creation).
//! Config: `period` (e.g. `90d`, `12h`; default `365d`).

use keyplane_plugin_sdk::config::Settings;
use keyplane_plugin_sdk::rotation::{Config, KeyInfo, Schedule, Timestamp};

struct FixedInterval;

impl Schedule for FixedInterval {
    fn next_rotation(config: Config, info: KeyInfo, _now: Timestamp) -> Result<Option<Timestamp>, String> {
        let period = Settings(&config).duration_secs("period")?.unwrap_or(365 * 86_400);
        let since = info.last_rotation.unwrap_or(info.created_at);
        Ok(Some(since.saturating_add(period)))
    }
}

keyplane_plugin_sdk::rotation::export_rotation_schedule!(FixedInterval);
