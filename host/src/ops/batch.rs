//! Batches: many requests of one operation by one principal, answered together (the native
//! front's `POST /v1/batch`; Vault Transit's `batch_input`).
//!
//! A batch is a way of sending requests, not a request of its own: each item goes through the
//! whole pipeline of [`super::execute`] (its own validation, resolution, Cedar decision, write
//! scope and audit record), so an item is allowed, refused, rolled back and recorded exactly
//! as the same request sent alone would be, and one item's failure touches no other item. An
//! item that failed to decode reaches the log as a refusal of the operation's action, as
//! [`super::refuse`] records a single request that does not decode.
//!
//! **Audit.** Item `i` (from 0, in the order sent) is recorded under the request id
//! `<request id>/<i>`: the audit schema has no field for a batch, and a suffix keeps every
//! record's request id distinct while `x-request-id` (the part before the `/`) still finds
//! all of a batch's records. A refusal of the batch as a whole (no items, more than
//! [`MAX_BATCH_ITEMS`]) is one record under the plain request id, with the operation's action.
//!
//! **Concurrency.** Up to [`CONCURRENCY`] items run at once, inside the caller's task, and
//! results come back in item order. Running them at once is what makes a batch cheaper than
//! as many requests: items that change nothing else hand their audit records to the group
//! commit together, so they share its `INSERT`s (`audit::group_commit`), and their HSM calls
//! (each on a blocking thread) overlap. Cedar is not asked again for items alike: an item
//! with the same key, encryption context and grants as an earlier one, in the same second,
//! gets its decision from the decision memo (`authz::memo`, unless `cache.max_decisions` turns
//! it off), and each item is still audited with it.

use futures_util::stream::{self, StreamExt};

use super::{execute, refuse, Operation, RequestMeta};
use crate::authn::Principal;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Most items in one batch.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// Items of one batch in flight at once. 16 is the HSM session pool's default size
/// (`hsm.max_idle_sessions`), so a batch of `hsm`-key items does not open sessions the pool
/// would close again; and 16 batches at once (the load harness's connections) fill one group
/// commit (256 records). Past that, a batch runs no faster: its items share one task, so
/// their host-side work (Cedar, AES-GCM for envelope keys, JSON) takes turns on one core.
pub const CONCURRENCY: usize = 16;

/// `Ok` if a batch of `items` items may run: 1 to [`MAX_BATCH_ITEMS`]. (The message gives no
/// count: a front may stop decoding one item past the limit.)
fn check_size(items: usize) -> Result<()> {
    if items == 0 || items > MAX_BATCH_ITEMS {
        return Err(Error::validation(format!(
            "a batch holds 1 to {MAX_BATCH_ITEMS} items"
        )));
    }
    Ok(())
}

/// The facts of item `index` of the request `meta`: its own request id (see the module doc).
fn item_meta(meta: &RequestMeta, index: usize) -> RequestMeta {
    RequestMeta {
        request_id: format!("{}/{index}", meta.request_id),
        ..meta.clone()
    }
}

/// Run every item for `principal`, each through the same pipeline as [`execute`] (its own
/// validation, Cedar decision and audit record); an item that failed to decode (`Err`) is
/// audited as a refusal of `O::ACTION`, as [`refuse`] does. Results in item order.
/// `Err(Validation)` only for the batch as a whole: no items, or more than
/// [`MAX_BATCH_ITEMS`] (audited once, under the request's own id).
///
/// As [`execute`], cancelling the future half-way can leave material for garbage collection;
/// fronts run it as its own task.
pub async fn execute_many<O: Operation>(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    items: Vec<Result<O>>,
) -> Result<Vec<Result<O::Output>>> {
    if let Err(e) = check_size(items.len()) {
        return Err(refuse(state, meta, Some(principal), O::ACTION, e).await);
    }
    let results = stream::iter(items.into_iter().enumerate())
        .map(|(index, item)| async move {
            let meta = item_meta(meta, index);
            match item {
                Ok(op) => execute(state, principal, &meta, op).await,
                Err(e) => Err(refuse(state, &meta, Some(principal), O::ACTION, e).await),
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    Ok(results)
}
