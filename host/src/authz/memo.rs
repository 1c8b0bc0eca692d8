//! Memoised Cedar decisions. A decision is a pure function of the policy set (with its
//! schema) and of the request's principal, action, resource, context and entities, which
//! [`super::entities::build`] derives from an [`AuthzRequest`] alone. So a decision is kept
//! under a SHA-256 digest of the policy-set hash and *every* field of the `AuthzRequest`
//! (including the request time, to the second, and the source address), and reused only for a
//! request identical in all of them: the same answer Cedar would give, without building
//! entities and evaluating policies again. A reloaded set has another hash, so it never sees
//! the old set's decisions.
//!
//! Since the request time is in the key, a decision can only be reused within its second: the
//! memo holds the current second's decisions alone, and forgets them when the next second's
//! first decision arrives. Keeping older ones (as a plain bounded cache did) only held memory
//! that no request could use again: in a soak at 9k requests a second the node's RSS grew by
//! about 10 MiB over 11 minutes, until the cache held its 64k entries (docs/reliability.md).
//!
//! The digest encodes each field with its length (maps such as the encryption context and
//! tags through [`canonical`], the encoding bound into ciphertexts), so no two different
//! requests share an encoding. The functions below destructure the request and the rows
//! exhaustively: a field added to any of them does not compile until it is part of the digest.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;
use ring::digest;

use super::entities::{AuthzRequest, ResourceRef};
use super::Decision;
use crate::authn::Principal;
use crate::crypto::context::canonical;
use crate::store::keys::KeyRow;
use crate::store::plugins::PluginRow;

/// The current second's decisions by digest of their inputs.
pub struct DecisionMemo {
    decisions: Cache<[u8; 32], Arc<Decision>>,
    /// The second (`request_time`) the decisions are of.
    second: AtomicI64,
}

impl DecisionMemo {
    /// At most `entries` decisions of one second.
    pub fn new(entries: usize) -> Self {
        DecisionMemo {
            decisions: Cache::new(entries.max(1)),
            second: AtomicI64::new(i64::MIN),
        }
    }

    /// The decision of a request of `second` with this key, if one was kept.
    pub fn get(&self, second: i64, key: &[u8; 32]) -> Option<Arc<Decision>> {
        if second != self.second.load(Ordering::Relaxed) {
            return None;
        }
        self.decisions.get(key)
    }

    /// Keep a decision of `second`, made when the clock reads `now`. The first of a later
    /// second forgets the earlier ones; one of an earlier second (a request decided as the
    /// second turned, or one that took long) is not kept, unless the clock now reads earlier
    /// than the memo's second: it was set back, and the request's second becomes the current
    /// one (or the memo would stay unused until the clock caught up). A decision inserted by
    /// a request racing the turn may outlive its second until the next turn: harmless, as its
    /// key (which holds its second) is never asked for again.
    pub fn insert(&self, second: i64, now: i64, key: [u8; 32], decision: Arc<Decision>) {
        let current = self.second.load(Ordering::Relaxed);
        if second < current && now >= current {
            return;
        }
        if second != current
            && self
                .second
                .compare_exchange(current, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.decisions.clear();
        }
        self.decisions.insert(key, decision);
    }

    /// How many decisions are kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.decisions.len()
    }
}

/// The digest of everything a decision depends on.
pub fn key(policy_set: &str, req: &AuthzRequest<'_>) -> [u8; 32] {
    let AuthzRequest {
        principal,
        action,
        resource,
        encryption_context,
        source_ip,
        client_certificate,
        request_time,
        mfa,
        approver,
        granted,
        export_format,
    } = req;
    let mut d = Digest(digest::Context::new(&digest::SHA256));
    d.str("keyplane/decision/v1");
    d.str(policy_set);
    d.str(action);
    add_principal(&mut d, principal);
    match approver {
        Some(a) => {
            d.str("approver");
            add_principal(&mut d, a);
        }
        None => d.str("no-approver"),
    }
    add_resource(&mut d, resource);
    d.bytes(&canonical(encryption_context));
    d.str(&source_ip.to_canonical().to_string());
    match client_certificate {
        Some(cert) => {
            d.str("client-certificate");
            d.str(&cert.subject);
            d.str(&cert.fingerprint);
        }
        None => d.str("no-client-certificate"),
    }
    d.num(*request_time as u64);
    d.num(u64::from(*mfa));
    d.num(granted.len() as u64);
    for g in granted.iter() {
        d.str(g);
    }
    match export_format {
        Some(f) => {
            d.str("export-format");
            d.str(f);
        }
        None => d.str("no-export-format"),
    }
    let out = d.0.finish();
    let mut key = [0u8; 32];
    key.copy_from_slice(out.as_ref());
    key
}

struct Digest(digest::Context);

impl Digest {
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.num(b.len() as u64);
        self.0.update(b);
    }
    fn num(&mut self, n: u64) {
        self.0.update(&n.to_be_bytes());
    }
}

fn add_principal(d: &mut Digest, p: &Principal) {
    let Principal {
        id,
        tenant_id,
        name,
        kind,
        role,
        operator,
        created_at,
    } = p;
    for s in [id, tenant_id, name, kind, role, created_at] {
        d.str(s);
    }
    d.num(u64::from(*operator));
}

fn add_resource(d: &mut Digest, resource: &ResourceRef) {
    match resource {
        ResourceRef::Tenant(t) => {
            d.str("tenant");
            d.str(t);
        }
        ResourceRef::Key {
            row, users, tags, ..
        } => {
            d.str("key");
            add_key(d, row);
            d.num(users.len() as u64);
            for u in users {
                d.str(u);
            }
            d.bytes(&canonical(tags));
        }
        ResourceRef::User(p) => {
            d.str("user");
            add_principal(d, p);
        }
        ResourceRef::Plugin(p) => {
            d.str("plugin");
            let PluginRow {
                tenant_id,
                name,
                sha256,
                world,
                size,
                imports,
                created_at,
                created_by,
                capabilities,
            } = &**p;
            for s in [
                tenant_id,
                name,
                sha256,
                world,
                imports,
                created_at,
                created_by,
                capabilities,
            ] {
                d.str(s);
            }
            d.num(*size as u64);
        }
    }
}

fn add_key(d: &mut Digest, row: &KeyRow) {
    let KeyRow {
        id,
        tenant_id,
        spec,
        usage,
        protection,
        state,
        description,
        tags,
        primary_version,
        created_at,
        created_by,
        deletion_date,
        min_decryption_version,
        destroyed_at,
        rotation_period_days,
        next_rotation_at,
        deletion_protection,
        require_encryption_context,
        material_expires_at,
    } = row;
    for s in [
        id.as_str(),
        tenant_id,
        spec.as_str(),
        usage.as_str(),
        protection.as_str(),
        state.as_str(),
        description,
        tags,
        created_at,
        created_by,
    ] {
        d.str(s);
    }
    d.num(*primary_version as u64);
    d.num(*min_decryption_version as u64);
    d.num(u64::from(*deletion_protection));
    d.num(u64::from(*require_encryption_context));
    for t in [
        deletion_date,
        destroyed_at,
        rotation_period_days,
        next_rotation_at,
        material_expires_at,
    ] {
        match t {
            Some(t) => {
                d.num(1);
                d.num(*t as u64);
            }
            None => d.num(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::crypto::context::EncryptionContext;

    fn principal(role: &str) -> Principal {
        Principal {
            id: "p-1".into(),
            tenant_id: "t-1".into(),
            name: "alice".into(),
            kind: "user".into(),
            role: role.into(),
            operator: false,
            created_at: "now".into(),
        }
    }

    fn key_row(state: &str) -> KeyRow {
        KeyRow {
            state: crate::model::KeyState::parse(state).unwrap(),
            ..KeyRow::sample("k-1", "t-1")
        }
    }

    fn key_resource(state: &str, users: &[&str], tags: &[(&str, &str)]) -> ResourceRef {
        ResourceRef::Key {
            row: Box::new(key_row(state)),
            users: users.iter().map(|u| u.to_string()).collect(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            grants: Default::default(),
        }
    }

    /// Every input a decision depends on changes the digest; the same inputs give the same one.
    #[test]
    fn every_input_changes_the_key() {
        let (user, admin) = (principal("user"), principal("admin"));
        let granted = key_resource("enabled", &["p-1"], &[]);
        let variants = [
            key_resource("disabled", &["p-1"], &[]),
            key_resource("enabled", &[], &[]),
            key_resource("enabled", &["p-1"], &[("purpose", "x")]),
            key_resource("enabled", &["p-1", "p-2"], &[]),
            ResourceRef::Tenant("t-1".into()),
        ];
        let (empty, ec) = (
            EncryptionContext::new(),
            EncryptionContext::from([("purpose".to_string(), "x".to_string())]),
        );
        let cert = crate::authz::ClientCertificate {
            subject: "CN=a".into(),
            fingerprint: "AA".into(),
            common_name: Some("a".into()),
        };
        let other_cert = crate::authz::ClientCertificate {
            subject: "CN=b".into(),
            ..cert.clone()
        };
        let base = AuthzRequest {
            principal: &user,
            action: "Encrypt",
            resource: &granted,
            encryption_context: &empty,
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_certificate: None,
            request_time: 1_800_000_000,
            mfa: false,
            approver: None,
            granted: &[],
            export_format: None,
        };
        let same = AuthzRequest { ..base };
        assert_eq!(key("set", &base), key("set", &same));
        let mut keys = vec![key("set", &base), key("other-set", &base)];
        let changed = [
            AuthzRequest {
                principal: &admin,
                ..base
            },
            AuthzRequest {
                action: "Decrypt",
                ..base
            },
            AuthzRequest {
                encryption_context: &ec,
                ..base
            },
            AuthzRequest {
                source_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                ..base
            },
            AuthzRequest {
                client_certificate: Some(&cert),
                ..base
            },
            AuthzRequest {
                client_certificate: Some(&other_cert),
                ..base
            },
            AuthzRequest {
                request_time: 1_800_000_001,
                ..base
            },
            AuthzRequest { mfa: true, ..base },
            AuthzRequest {
                approver: Some(&admin),
                ..base
            },
            AuthzRequest {
                granted: &["Encrypt"],
                ..base
            },
            AuthzRequest {
                export_format: Some("WRAPPED"),
                ..base
            },
            AuthzRequest {
                export_format: Some("PKCS12"),
                ..base
            },
        ];
        keys.extend(changed.iter().map(|r| key("set", r)));
        keys.extend(
            variants
                .iter()
                .map(|resource| key("set", &AuthzRequest { resource, ..base })),
        );
        let distinct: HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }

    /// One second's decisions: a later second forgets them; a request of an earlier second
    /// (at the turn, or one that took long) is not kept; a clock set back restarts the memo
    /// at its time.
    #[test]
    fn the_memo_keeps_one_second_and_follows_a_clock_set_back() {
        let memo = DecisionMemo::new(64);
        let d = Arc::new(Decision {
            allowed: true,
            policies: vec!["p".into()],
            errors: Vec::new(),
            policy_set: "h".into(),
            memoised: false,
        });
        let t = 1_700_000_000;
        memo.insert(t, t, [1; 32], d.clone());
        assert!(memo.get(t, &[1; 32]).is_some());
        memo.insert(t + 1, t + 1, [2; 32], d.clone());
        assert_eq!(memo.len(), 1);
        assert!(memo.get(t, &[1; 32]).is_none());
        assert!(memo.get(t + 1, &[2; 32]).is_some());
        // Decided as the second turned, and decided after a long stall: not kept.
        memo.insert(t, t + 1, [3; 32], d.clone());
        memo.insert(t - 5, t + 1, [4; 32], d.clone());
        assert_eq!(memo.len(), 1);
        assert!(memo.get(t + 1, &[2; 32]).is_some());
        // The clock set back a minute: the memo starts over at its time.
        memo.insert(t - 60, t - 60, [5; 32], d.clone());
        assert_eq!(memo.len(), 1);
        assert!(memo.get(t - 60, &[5; 32]).is_some());
        assert!(memo.get(t + 1, &[2; 32]).is_none());
    }
}
