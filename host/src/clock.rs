//! The service clock: wall-clock time every lifecycle decision uses (deletion windows,
//! rotation schedules, version creation times). One value per node, passed in the state.
//! Builds with the `test-hooks` feature (debug builds only) can move it forward through
//! `/debug/clock`, so tests pass a 30-day window without waiting; release builds cannot.

use std::sync::atomic::{AtomicI64, Ordering};

/// Seconds since the Unix epoch, with an offset only tests can set.
#[derive(Debug, Default)]
pub struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    /// The real clock.
    pub fn system() -> Self {
        Clock::default()
    }

    /// Now, in seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        chrono::Utc::now().timestamp() + self.offset_secs.load(Ordering::Relaxed)
    }

    /// Now as RFC 3339 (milliseconds, UTC).
    pub fn now_rfc3339(&self) -> String {
        let now = chrono::Utc::now()
            + chrono::Duration::seconds(self.offset_secs.load(Ordering::Relaxed));
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// Move the clock forward (test hook only).
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    pub fn advance(&self, secs: i64) -> i64 {
        self.offset_secs.fetch_add(secs.max(0), Ordering::Relaxed);
        self.now()
    }
}
