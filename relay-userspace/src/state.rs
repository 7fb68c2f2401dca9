//! Sessions on disk, so that a restarted relayd re-adopts them: same ports, same specs, same
//! learned peers. Together with the pinned XDP maps and links this is what keeps media that XDP
//! forwards flowing across a relayd restart.
//!
//! One JSON file per session (`<dir>/sessions/<id>.json`, mode 0600: specs hold SRTP keys),
//! written to a temporary file and renamed over the old one, so a relayd crash leaves either
//! the old or the new record, never half of one (the file is not fsynced: session changes are
//! on the call-setup path, and a power loss costs the sessions, not their consistency). Session
//! ids are restricted to `[A-Za-z0-9._-]`, so they
//! are safe file names. SRTP stream state (rollover counters, replay windows) is not stored: a
//! restored SRTP leg starts its streams afresh, so a stream past its first rollover (about 22
//! minutes at 50 packets/s) reuses packet indices under the same key after a restart, and the
//! replay window forgets old packets; the controller should re-key SRTP legs after a relayd
//! restart (a known limitation, see docs/ARCHITECTURE.md).

use std::{
    io::{self, Write as _},
    net::{IpAddr, SocketAddr},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::model::SessionSpec;

/// A session as stored.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct StoredSession {
    /// The session id.
    pub id: String,
    /// Its spec, as last put or patched.
    pub spec: SessionSpec,
    /// When it was created (Unix ms).
    pub created_unix_ms: u64,
    /// Its legs' local transports and learned peers, in spec order.
    pub legs: Vec<StoredLeg>,
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The spec holds keys; never print it.
        f.debug_struct("StoredSession")
            .field("id", &self.id)
            .field("legs", &self.legs)
            .finish_non_exhaustive()
    }
}

/// A leg as stored.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct StoredLeg {
    /// The leg id.
    pub id: String,
    /// Its local address.
    pub address: IpAddr,
    /// Its RTP port (RTCP is the next one unless muxed).
    pub rtp_port: u16,
    /// The RTP peer it latched onto, if it learns.
    pub latched_rtp: Option<SocketAddr>,
    /// The RTCP peer it latched onto.
    pub latched_rtcp: Option<SocketAddr>,
}

/// A stored record that could not be read back.
#[derive(Debug)]
pub struct Unreadable {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// The session files under one directory.
#[derive(Debug)]
pub struct SessionStore {
    dir: PathBuf,
}

impl SessionStore {
    /// Opens (creating, mode 0700) `<dir>/sessions`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let dir = dir.join("sessions");
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(Self { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes (or replaces) a session's record.
    pub fn save(&self, session: &StoredSession) -> io::Result<()> {
        let path = self.path(&session.id);
        let temporary = self.dir.join(format!(".{}.json.tmp", session.id));
        let body = serde_json::to_vec(session).map_err(io::Error::other)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        // `mode` applies only when the file is created: a leftover temporary keeps its old
        // permissions, and this file receives keys.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        file.write_all(&body)?;
        drop(file);
        std::fs::rename(&temporary, &path)
    }

    /// Removes a session's record (none is fine).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every readable record, and the files that are not (left in place for an operator).
    pub fn load_all(&self) -> io::Result<(Vec<StoredSession>, Vec<Unreadable>)> {
        let mut sessions = Vec::new();
        let mut unreadable = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<StoredSession>(&bytes).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(session) if self.path(&session.id) == path => sessions.push(session),
                Ok(session) => unreadable.push(Unreadable {
                    path,
                    reason: format!("holds session {:?} under another name", session.id),
                }),
                Err(reason) => unreadable.push(Unreadable { path, reason }),
            }
        }
        sessions.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((sessions, unreadable))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn session(id: &str) -> StoredSession {
        StoredSession {
            id: id.to_owned(),
            spec: serde_json::from_value(serde_json::json!({ "legs": [
                { "id": "a", "forward_to": "b", "inbound_crypto": { "suite": "AES_CM_128_HMAC_SHA1_80",
                  "keys": [{ "key": "WnD8ZCF0Fs5xUv8iTrR6Ya2jgqB2H2TdVA4cXKVA" }] } },
                { "id": "b", "forward_to": "a" }
            ]}))
            .unwrap(),
            created_unix_ms: 7,
            legs: vec![StoredLeg {
                id: "a".to_owned(),
                address: "198.18.0.1".parse().unwrap(),
                rtp_port: 30_000,
                latched_rtp: Some("198.18.0.2:4000".parse().unwrap()),
                latched_rtcp: None,
            }],
        }
    }

    #[test]
    fn records_round_trip_privately_and_bad_files_are_reported() {
        let dir = std::env::temp_dir().join(format!("relayd-state-{}", std::process::id()));
        let store = SessionStore::open(&dir).unwrap();
        store.save(&session("call-1")).unwrap();
        store.save(&session("call-2")).unwrap();
        store.save(&session("call-2")).unwrap();
        let mode = std::fs::metadata(dir.join("sessions/call-1.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "records hold keys");
        std::fs::write(dir.join("sessions/broken.json"), b"{").unwrap();
        let (sessions, unreadable) = store.load_all().unwrap();
        assert_eq!(sessions, vec![session("call-1"), session("call-2")]);
        assert_eq!(unreadable.len(), 1);
        assert!(
            format!("{:?}", sessions[0]).find("WnD8").is_none(),
            "no key in Debug"
        );
        store.remove("call-1").unwrap();
        store.remove("call-1").unwrap();
        assert_eq!(store.load_all().unwrap().0, vec![session("call-2")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
