//! Rotation schedule `maintenance-window`: rotate every `period`, but only inside a weekly
//! window in UTC. Config: `period` (default `90d`), `days` (e.g. `sat,sun`; default every day),
//! `start_hour` and `end_hour` (0-24, end exclusive; default 2 and 4).
//! Returns the first instant at or after the due time that lies inside the window.

use keyplane_plugin_sdk::config::Settings;
use keyplane_plugin_sdk::rotation::{Config, KeyInfo, Schedule, Timestamp};

const DAY: i64 = 86_400;
const NAMES: [&str; 7] = ["thu", "fri", "sat", "sun", "mon", "tue", "wed"]; // 1970-01-01 was a Thursday

struct Window {
    days: [bool; 7],
    start: i64,
    end: i64,
}

fn parse(config: &Config) -> Result<(i64, Window), String> {
    let s = Settings(config);
    let period = s.duration_secs("period")?.unwrap_or(90 * DAY);
    let mut days = [true; 7];
    if let Some(list) = s.get("days") {
        days = [false; 7];
        for d in list.split(',').map(|d| d.trim().to_ascii_lowercase()).filter(|d| !d.is_empty()) {
            let i = NAMES
                .iter()
                .position(|n| d.starts_with(n))
                .ok_or_else(|| format!("config `days`: unknown day {d:?}"))?;
            days[i] = true;
        }
        if !days.iter().any(|d| *d) {
            return Err("config `days` names no day".into());
        }
    }
    let start = s.u64_or("start_hour", 2)? as i64;
    let end = s.u64_or("end_hour", 4)? as i64;
    if start >= end || end > 24 {
        return Err("config needs 0 <= start_hour < end_hour <= 24".into());
    }
    Ok((period, Window { days, start: start * 3600, end: end * 3600 }))
}

impl Window {
    /// The first instant >= t inside the window.
    fn next_open(&self, t: i64) -> i64 {
        let mut day_start = t.div_euclid(DAY) * DAY;
        for _ in 0..8 {
            let weekday = (day_start / DAY).rem_euclid(7) as usize;
            if self.days[weekday] {
                let open = day_start + self.start;
                let close = day_start + self.end;
                if t < close {
                    return t.max(open);
                }
            }
            day_start += DAY;
        }
        t
    }
}

struct MaintenanceWindow;

impl Schedule for MaintenanceWindow {
    fn next_rotation(config: Config, info: KeyInfo, _now: Timestamp) -> Result<Option<Timestamp>, String> {
        let (period, window) = parse(&config)?;
        let due = info.last_rotation.unwrap_or(info.created_at).saturating_add(period);
        Ok(Some(window.next_open(due)))
    }
}

keyplane_plugin_sdk::rotation::export_rotation_schedule!(MaintenanceWindow);
