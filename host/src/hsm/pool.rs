//! A pool of open PKCS#11 sessions. `cryptoki::Session` is `Send` but not `Sync`, and a
//! PKCS#11 session runs one operation at a time, so each call borrows a session exclusively.
//! The login is per process, so every session opened after the anchor's login is logged in.

use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use crate::error::{Error, Result};

pub(super) struct SessionPool {
    pkcs11: Pkcs11,
    slot: Slot,
    idle: Mutex<Vec<Session>>,
    max_idle: usize,
}

impl SessionPool {
    pub(super) fn new(pkcs11: Pkcs11, slot: Slot, max_idle: usize) -> Self {
        SessionPool {
            pkcs11,
            slot,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
        }
    }

    fn take(&self) -> Result<Session> {
        if let Some(s) = self.idle.lock().map_err(|_| Error::Internal)?.pop() {
            return Ok(s);
        }
        self.pkcs11
            .open_rw_session(self.slot)
            .map_err(super::unavailable("open session"))
    }

    fn give_back(&self, session: Session) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(session);
            }
        }
    }

    /// Drop every idle session without closing it: the module is about to be finalized,
    /// which closes them all (see `Live::retire`).
    pub(super) fn forget_all(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            for session in idle.drain(..) {
                std::mem::forget(session);
            }
        }
    }

    /// Run `f` with an exclusive session. A session whose call failed with an HSM error is
    /// closed rather than returned, so a broken session does not poison the pool.
    /// `function` and `mechanism` name the PKCS#11 call for its span and latency metric.
    pub(super) fn with<T>(
        &self,
        function: &'static str,
        mechanism: &'static str,
        f: impl FnOnce(&Session) -> Result<T>,
    ) -> Result<T> {
        crate::telemetry::spans::hsm(function, mechanism, || self.with_session(f))
    }

    fn with_session<T>(&self, f: impl FnOnce(&Session) -> Result<T>) -> Result<T> {
        let session = self.take()?;
        let out = f(&session);
        match &out {
            Err(Error::HsmUnavailable) => drop(session),
            _ => self.give_back(session),
        }
        out
    }
}
