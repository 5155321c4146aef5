//! HTTP basic authentication against `basic_auth_users` (bcrypt hashes), as exporter-toolkit
//! does it: results are cached, because bcrypt is slow on purpose (tens of milliseconds at
//! cost 10) and Prometheus sends the same credentials every scrape; an unknown user is
//! checked against a fixed hash, so the time taken does not reveal which users exist.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, OnceLock},
};

use base64::Engine as _;

/// Cached verdicts kept at most; the cache starts over when full.
const CACHE_ENTRIES: usize = 1024;

/// Checks credentials and remembers verdicts by a SHA-256 of (user, hash, password), so
/// that no password is kept in memory.
#[derive(Default)]
pub struct Authenticator {
    cache: Mutex<HashMap<[u8; 32], bool>>,
}

/// The user and password of an `Authorization: Basic` header.
pub fn credentials(header: Option<&str>) -> Option<(String, String)> {
    let encoded = header?.trim().strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A bcrypt hash of a random password, at the usual cost, for unknown users.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut secret = [0u8; 16];
        let _ = rustix::rand::getrandom(&mut secret, rustix::rand::GetRandomFlags::empty());
        bcrypt::hash(secret, bcrypt::DEFAULT_COST).unwrap_or_default()
    })
}

impl Authenticator {
    /// Whether `header` names a user of `users` with the right password. Blocking (bcrypt):
    /// call it off the event loop.
    pub fn check(&self, users: &BTreeMap<String, String>, header: Option<&str>) -> bool {
        let Some((user, password)) = credentials(header) else {
            return false;
        };
        let (hash, known) = match users.get(&user) {
            Some(h) => (h.as_str(), true),
            None => (decoy_hash(), false),
        };
        let key = {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for part in [user.as_bytes(), hash.as_bytes(), password.as_bytes()] {
                ctx.update(&(part.len() as u64).to_le_bytes());
                ctx.update(part);
            }
            let mut key = [0u8; 32];
            key.copy_from_slice(ctx.finish().as_ref());
            key
        };
        if let Some(&verdict) = self.lock().get(&key) {
            return verdict && known;
        }
        let verdict = bcrypt::verify(&password, hash).unwrap_or(false) && known;
        let mut cache = self.lock();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, verdict);
        verdict
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], bool>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_htpasswd_hashes_and_rejects_the_rest() {
        // htpasswd -nbBC 4 prometheus s3cret, with the $2y$ prefix htpasswd writes.
        let hash = bcrypt::hash("s3cret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let users = BTreeMap::from([("prometheus".to_owned(), hash)]);
        let auth = Authenticator::default();
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(auth.check(&users, Some(&basic("prometheus", "s3cret"))));
        assert!(
            auth.check(&users, Some(&basic("prometheus", "s3cret"))),
            "cached"
        );
        assert!(!auth.check(&users, Some(&basic("prometheus", "wrong"))));
        assert!(!auth.check(&users, Some(&basic("nobody", "s3cret"))));
        assert!(!auth.check(&users, Some("Bearer abc")));
        assert!(!auth.check(&users, Some("Basic !!!")));
        assert!(!auth.check(&users, None));
        assert_eq!(
            credentials(Some(&basic("a", "b:c"))),
            Some(("a".into(), "b:c".into())),
            "passwords may hold colons"
        );
    }
}
