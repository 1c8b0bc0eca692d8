//! A pool of open PKCS#11 sessions. `cryptoki::Session` is `Send` but not `Sync`, and a
//! PKCS#11 session runs one operation at a time, so each call borrows a session exclusively.
//! The login is per process, so every session opened after the anchor's login is logged in.
//!
//! Sessions are opened and closed one at a time, whatever the module: PKCS#11 lets
//! `C_OpenSession` and `C_CloseSession` run at once, but tpm2-pkcs11 1.9 takes no lock around
//! its session table (seen in its code), so two opens at once could be handed one session
//! (the second `C_DecryptInit` on it failed with `CKR_OPERATION_ACTIVE`, and closing it freed
//! what the other call was using: the node died, in CI, after a restart on the TPM with eight
//! requests opening their first sessions together). Opening is an allocation in the module,
//! so taking turns costs nothing measurable; calls on open sessions still run at once.

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use crate::error::{Error, Result};

pub(super) struct SessionPool {
    pkcs11: Pkcs11,
    slot: Slot,
    idle: Mutex<Vec<Session>>,
    /// Held while a session is opened or closed (see the module docs).
    lifecycle: Mutex<()>,
    max_idle: usize,
    /// Sessions this pool has open (idle or lent): `describe-hsm` shows it, so a leak shows
    /// over a long run (benches/soak).
    open: AtomicIsize,
    /// Close a session whose call was refused as a bad input too (the module's
    /// `failed_operation_stays_active` quirk: see `hsm::quirks`).
    close_after_rejected: bool,
}

impl SessionPool {
    pub(super) fn new(
        pkcs11: Pkcs11,
        slot: Slot,
        max_idle: usize,
        close_after_rejected: bool,
    ) -> Self {
        SessionPool {
            pkcs11,
            slot,
            idle: Mutex::new(Vec::new()),
            lifecycle: Mutex::new(()),
            max_idle: max_idle.max(1),
            open: AtomicIsize::new(0),
            close_after_rejected,
        }
    }

    /// How many sessions are open (idle or in use).
    pub(super) fn open(&self) -> usize {
        usize::try_from(self.open.load(Ordering::Relaxed)).unwrap_or(0)
    }

    fn take(&self) -> Result<Session> {
        if let Some(s) = self.idle.lock().map_err(|_| Error::Internal)?.pop() {
            return Ok(s);
        }
        let session = {
            let _turn = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
            self.pkcs11
                .open_rw_session(self.slot)
                .map_err(super::unavailable("open session"))?
        };
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(session)
    }

    fn give_back(&self, session: Session) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(session);
                return;
            }
        }
        self.close(session);
    }

    /// Close a session (dropping it closes it), in turn with every other open and close.
    fn close(&self, session: Session) {
        // A poisoned lock (a panic while opening) still serializes: its guard is taken all
        // the same (and so in `take`).
        let _turn = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        drop(session);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Drop every idle session without closing it: the module is about to be finalized,
    /// which closes them all (see `Live::retire`).
    pub(super) fn forget_all(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            for session in idle.drain(..) {
                std::mem::forget(session);
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Run `f` with an exclusive session. A session whose call failed with an HSM error (or,
    /// on a module that leaves a failed operation active, was refused as a bad input) is
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
            Err(Error::HsmUnavailable) => self.close(session),
            Err(Error::DecryptionFailed) if self.close_after_rejected => self.close(session),
            _ => self.give_back(session),
        }
        out
    }
}
