//! Pause points, so that a test can interleave two requests at the exact step a race needs.
//! A test arms a point for one key (`/debug/pause`); the next request that reaches that
//! point for that key waits there until the test releases it, or for at most 60 s. Arming a
//! point again while a request waits there lets that request go on. Only debug builds with
//! the `test-hooks` feature have them: elsewhere [`point`] does nothing.

/// Wait here if a test armed `name` for `key_id`.
#[cfg(not(all(feature = "test-hooks", debug_assertions)))]
#[inline(always)]
pub async fn point(_name: &str, _key_id: &str) {}

#[cfg(all(feature = "test-hooks", debug_assertions))]
pub use armed::{arm, point, release, wait_reached};

#[cfg(all(feature = "test-hooks", debug_assertions))]
mod armed {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    use std::time::Duration;

    use tokio::sync::oneshot;

    /// One armed point: the paused request's ends, and the test's ends.
    struct Armed {
        /// Taken by the request that reaches the point.
        paused: Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>,
        /// Taken by the test: told when a request is paused; releases it.
        reached: Option<oneshot::Receiver<()>>,
        release: Option<oneshot::Sender<()>>,
    }

    static POINTS: LazyLock<Mutex<HashMap<(String, String), Armed>>> =
        LazyLock::new(Default::default);

    fn points() -> std::sync::MutexGuard<'static, HashMap<(String, String), Armed>> {
        POINTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Arm `name` for `key_id` (again, if it was armed before).
    pub fn arm(name: &str, key_id: &str) {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        points().insert(
            (name.to_string(), key_id.to_string()),
            Armed {
                paused: Some((reached_tx, release_rx)),
                reached: Some(reached_rx),
                release: Some(release_tx),
            },
        );
    }

    /// Wait up to `timeout` until a request is paused at `name` for `key_id`.
    pub async fn wait_reached(name: &str, key_id: &str, timeout: Duration) -> bool {
        let reached = points()
            .get_mut(&(name.to_string(), key_id.to_string()))
            .and_then(|a| a.reached.take());
        match reached {
            Some(rx) => matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(()))),
            None => false,
        }
    }

    /// Let the request paused at `name` for `key_id` go on (and disarm the point).
    pub fn release(name: &str, key_id: &str) -> bool {
        let armed = points().remove(&(name.to_string(), key_id.to_string()));
        armed
            .and_then(|mut a| a.release.take())
            .is_some_and(|tx| tx.send(()).is_ok())
    }

    /// Wait here if a test armed `name` for `key_id`: only the first request to arrive waits.
    pub async fn point(name: &str, key_id: &str) {
        let paused = points()
            .get_mut(&(name.to_string(), key_id.to_string()))
            .and_then(|a| a.paused.take());
        if let Some((reached, release)) = paused {
            let _ = reached.send(());
            // A test that never releases the point must not hang the request for ever.
            let _ = tokio::time::timeout(Duration::from_secs(60), release).await;
        }
    }
}
