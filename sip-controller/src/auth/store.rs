//! Where credentials come from: a [`CredentialStore`] built once from configuration entries.
//!
//! A store keeps `H(A1)` per user and realm and hash function, never a password: an entry
//! with a password is turned into both HA1s when the store is built and the password is
//! wiped. Entries may instead carry precomputed HA1s (as `kamctl`/`htdigest`-style tools
//! produce), for MD5, SHA-256 or both. Secrets are wiped on drop, compared in constant time
//! by the authenticator, and never printed: both [`CredentialEntry`] and [`CredentialStore`]
//! implement `Debug` by hand.

use std::collections::HashMap;

use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use super::{
    digest::{decode_hex, ha1_from_password, hex_lower, HashFunction},
    AuthSetupError,
};

/// Longest user name or realm accepted in configuration.
pub const MAX_IDENTITY_LEN: usize = 256;

/// One configured user, as read from the configuration file.
///
/// ```toml
/// [[auth.users]]
/// username = "alice"
/// realm = "example.com"
/// password = "secret"            # or one or both of:
/// # ha1_md5 = "<32 hex digits: MD5(alice:example.com:secret)>"
/// # ha1_sha256 = "<64 hex digits: SHA-256(alice:example.com:secret)>"
/// ```
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialEntry {
    /// The digest user name (case-sensitive).
    pub username: String,
    /// The realm the credentials belong to.
    pub realm: String,
    /// The password; both HA1s are derived from it.
    #[serde(default)]
    pub password: Option<String>,
    /// Precomputed `MD5(username:realm:password)`, hex.
    #[serde(default)]
    pub ha1_md5: Option<String>,
    /// Precomputed `SHA-256(username:realm:password)`, hex.
    #[serde(default)]
    pub ha1_sha256: Option<String>,
}

impl core::fmt::Debug for CredentialEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let redact = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("CredentialEntry")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("password", &redact(&self.password))
            .field("ha1_md5", &redact(&self.ha1_md5))
            .field("ha1_sha256", &redact(&self.ha1_sha256))
            .finish()
    }
}

impl Drop for CredentialEntry {
    fn drop(&mut self) {
        self.password.zeroize();
        self.ha1_md5.zeroize();
        self.ha1_sha256.zeroize();
    }
}

/// The HA1s of one user, as lowercase hex.
struct StoredSecrets {
    md5: Option<Zeroizing<Vec<u8>>>,
    sha256: Option<Zeroizing<Vec<u8>>>,
}

/// What the store knows about a user for one hash function.
pub(crate) enum Ha1Lookup<'a> {
    /// The lowercase-hex HA1.
    Found(&'a [u8]),
    /// No such user in this realm.
    UnknownUser,
    /// The user exists but has no HA1 for this hash function (only the other one was
    /// configured as a precomputed hash).
    NoSecretForAlgorithm,
}

/// Users and their HA1s, keyed by realm then user name.
#[derive(Default)]
pub struct CredentialStore {
    realms: HashMap<String, HashMap<String, StoredSecrets>>,
    users: usize,
}

impl core::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CredentialStore")
            .field("realms", &self.realms.len())
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

fn validate_identity(
    value: &str,
    index: usize,
    reason: &'static str,
) -> Result<(), AuthSetupError> {
    if value.is_empty() || value.len() > MAX_IDENTITY_LEN || value.chars().any(char::is_control) {
        return Err(AuthSetupError::InvalidEntry { index, reason });
    }
    Ok(())
}

fn parse_ha1<const N: usize>(
    hex: Option<&String>,
    index: usize,
    reason: &'static str,
) -> Result<Option<Zeroizing<Vec<u8>>>, AuthSetupError> {
    let Some(hex) = hex else {
        return Ok(None);
    };
    let bytes = Zeroizing::new(
        decode_hex::<N>(hex.trim()).ok_or(AuthSetupError::InvalidEntry { index, reason })?,
    );
    Ok(Some(Zeroizing::new(hex_lower(&bytes[..]).into_bytes())))
}

impl CredentialStore {
    /// Builds a store from configuration entries (consumed, so their secrets are wiped).
    pub fn new(entries: impl IntoIterator<Item = CredentialEntry>) -> Result<Self, AuthSetupError> {
        let mut realms: HashMap<String, HashMap<String, StoredSecrets>> = HashMap::new();
        let mut users = 0;
        for (index, entry) in entries.into_iter().enumerate() {
            validate_identity(
                &entry.username,
                index,
                "username must be 1..=256 bytes without control characters",
            )?;
            validate_identity(
                &entry.realm,
                index,
                "realm must be 1..=256 bytes without control characters",
            )?;
            let secrets = match &entry.password {
                Some(_) if entry.ha1_md5.is_some() || entry.ha1_sha256.is_some() => {
                    return Err(AuthSetupError::InvalidEntry {
                        index,
                        reason: "give either a password or precomputed HA1s, not both",
                    })
                }
                Some(password) => StoredSecrets {
                    md5: Some(ha1_from_password(
                        HashFunction::Md5,
                        &entry.username,
                        &entry.realm,
                        password,
                    )),
                    sha256: Some(ha1_from_password(
                        HashFunction::Sha256,
                        &entry.username,
                        &entry.realm,
                        password,
                    )),
                },
                None => StoredSecrets {
                    md5: parse_ha1::<16>(
                        entry.ha1_md5.as_ref(),
                        index,
                        "ha1_md5 must be 32 hex digits",
                    )?,
                    sha256: parse_ha1::<32>(
                        entry.ha1_sha256.as_ref(),
                        index,
                        "ha1_sha256 must be 64 hex digits",
                    )?,
                },
            };
            if secrets.md5.is_none() && secrets.sha256.is_none() {
                return Err(AuthSetupError::InvalidEntry {
                    index,
                    reason: "an entry needs a password or at least one HA1",
                });
            }
            let realm = realms.entry(entry.realm.clone()).or_default();
            if realm.contains_key(&entry.username) {
                return Err(AuthSetupError::DuplicateUser {
                    username: entry.username.clone(),
                    realm: entry.realm.clone(),
                });
            }
            realm.insert(entry.username.clone(), secrets);
            users += 1;
        }
        Ok(Self { realms, users })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users
    }

    /// Whether the store has no users.
    pub fn is_empty(&self) -> bool {
        self.users == 0
    }

    /// Whether `username` exists in `realm`.
    pub fn contains(&self, realm: &str, username: &str) -> bool {
        self.realms
            .get(realm)
            .is_some_and(|users| users.contains_key(username))
    }

    pub(crate) fn ha1(&self, realm: &str, username: &str, hash: HashFunction) -> Ha1Lookup<'_> {
        let Some(secrets) = self.realms.get(realm).and_then(|users| users.get(username)) else {
            return Ha1Lookup::UnknownUser;
        };
        let secret = match hash {
            HashFunction::Md5 => secrets.md5.as_deref(),
            HashFunction::Sha256 => secrets.sha256.as_deref(),
        };
        secret.map_or(Ha1Lookup::NoSecretForAlgorithm, |ha1| Ha1Lookup::Found(ha1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CredentialEntry` implements `Drop`, so tests build entries field by field.
    fn entry(
        username: &str,
        realm: &str,
        password: Option<&str>,
        ha1_md5: Option<&str>,
        ha1_sha256: Option<&str>,
    ) -> CredentialEntry {
        CredentialEntry {
            username: username.into(),
            realm: realm.into(),
            password: password.map(Into::into),
            ha1_md5: ha1_md5.map(Into::into),
            ha1_sha256: ha1_sha256.map(Into::into),
        }
    }

    #[test]
    fn password_yields_both_ha1s() {
        let store = CredentialStore::new([entry(
            "Mufasa",
            "testrealm@host.com",
            Some("Circle Of Life"),
            None,
            None,
        )])
        .unwrap();
        assert_eq!(store.len(), 1);
        assert!(store.contains("testrealm@host.com", "Mufasa"));
        let Ha1Lookup::Found(md5) = store.ha1("testrealm@host.com", "Mufasa", HashFunction::Md5)
        else {
            panic!("MD5 HA1 missing")
        };
        // MD5("Mufasa:testrealm@host.com:Circle Of Life"), RFC 2617 §3.5.
        assert_eq!(md5, b"939e7578ed9e3c518a452acee763bce9");
        assert!(matches!(
            store.ha1("testrealm@host.com", "Mufasa", HashFunction::Sha256),
            Ha1Lookup::Found(ha1) if ha1.len() == 64
        ));
        assert!(matches!(
            store.ha1("other", "Mufasa", HashFunction::Md5),
            Ha1Lookup::UnknownUser
        ));
        assert!(matches!(
            store.ha1("testrealm@host.com", "mufasa", HashFunction::Md5),
            Ha1Lookup::UnknownUser
        ));
    }

    #[test]
    fn precomputed_ha1_is_normalised_to_lowercase() {
        let store = CredentialStore::new([entry(
            "Mufasa",
            "testrealm@host.com",
            None,
            Some("939E7578ED9E3C518A452ACEE763BCE9"),
            None,
        )])
        .unwrap();
        assert!(matches!(
            store.ha1("testrealm@host.com", "Mufasa", HashFunction::Md5),
            Ha1Lookup::Found(b"939e7578ed9e3c518a452acee763bce9")
        ));
        assert!(matches!(
            store.ha1("testrealm@host.com", "Mufasa", HashFunction::Sha256),
            Ha1Lookup::NoSecretForAlgorithm
        ));
    }

    #[test]
    fn invalid_entries_are_refused() {
        let zeros_16 = "00".repeat(16);
        let short = "00".repeat(15);
        let not_hex = "zz".repeat(32);
        let bad = [
            entry("alice", "r", None, None, None),
            entry("", "r", Some("p"), None, None),
            entry("alice", "r\n", Some("p"), None, None),
            entry(&"a".repeat(257), "r", Some("p"), None, None),
            entry("alice", "r", Some("p"), Some(&zeros_16), None),
            entry("alice", "r", None, Some(&short), None),
            entry("alice", "r", None, None, Some(&not_hex)),
        ];
        for entry in bad {
            let debug = format!("{entry:?}");
            assert!(
                matches!(
                    CredentialStore::new([entry]),
                    Err(AuthSetupError::InvalidEntry { index: 0, .. })
                ),
                "{debug}"
            );
        }
        let with_password = || entry("alice", "r", Some("p"), None, None);
        assert_eq!(
            CredentialStore::new([with_password(), with_password()]).err(),
            Some(AuthSetupError::DuplicateUser {
                username: "alice".into(),
                realm: "r".into()
            })
        );
        // The same user name in another realm is another user.
        let store =
            CredentialStore::new([with_password(), entry("alice", "r2", Some("p"), None, None)])
                .unwrap();
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let e = entry(
            "alice",
            "r",
            Some("hunter2-password"),
            Some("939e7578ed9e3c518a452acee763bce9"),
            None,
        );
        let debug = format!("{e:?}");
        assert!(!debug.contains("hunter2"));
        assert!(!debug.contains("939e75"));
        let store =
            CredentialStore::new([entry("alice", "r", Some("hunter2-password"), None, None)])
                .unwrap();
        let debug = format!("{store:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("alice"));
    }
}
