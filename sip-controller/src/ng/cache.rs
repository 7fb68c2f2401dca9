//! The retransmission cache: a proxy that gets no reply in time sends the same message again
//! with the same cookie (Kamailio's `rtpengine_retr`); the second copy must not create a
//! second offer or delete twice. rtpengine keeps a cookie cache for this; so do we.
//!
//! Keyed by (source IP, cookie): two proxies that happen to use the same cookie never see each
//! other's replies. A cookie seen while its first copy is still being handled is reported as
//! [`Lookup::InProgress`] (the driver drops the copy; the first reply answers both). Entries
//! live for a bounded age and the cache holds a bounded number of them: when full, the oldest
//! go first. IO-free: time is an argument.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

/// What the cache knows about a (source, cookie).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Never seen (or expired): handle it. The cache now marks it in progress.
    New,
    /// Seen, still being handled: drop this copy.
    InProgress,
    /// Answered before: send these bytes again.
    Replay(Arc<[u8]>),
}

#[derive(Clone, Debug)]
enum Entry {
    InProgress,
    Done(Arc<[u8]>),
}

type Key = (IpAddr, Box<[u8]>);

/// Bounded cache of replies by (source IP, cookie).
#[derive(Debug)]
pub struct ReplyCache {
    entries: HashMap<Key, (Entry, Instant)>,
    /// Insertion order with insertion time, for expiry and eviction.
    order: VecDeque<(Key, Instant)>,
    max_entries: usize,
    max_age: Duration,
}

impl ReplyCache {
    /// A cache of at most `max_entries` replies, each kept for `max_age`.
    pub fn new(max_entries: usize, max_age: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            max_entries: max_entries.max(1),
            max_age,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks a message up; a new one is marked in progress.
    pub fn begin(&mut self, source: IpAddr, cookie: &[u8], now: Instant) -> Lookup {
        self.expire(now);
        let key: Key = (source, cookie.into());
        if let Some((entry, _)) = self.entries.get(&key) {
            return match entry {
                Entry::InProgress => Lookup::InProgress,
                Entry::Done(reply) => Lookup::Replay(Arc::clone(reply)),
            };
        }
        while self.entries.len() >= self.max_entries {
            let Some((oldest, at)) = self.order.pop_front() else {
                break;
            };
            self.remove_if_at(&oldest, at);
        }
        self.entries.insert(key.clone(), (Entry::InProgress, now));
        self.order.push_back((key, now));
        Lookup::New
    }

    /// Stores the reply of a message handled after [`Self::begin`] returned [`Lookup::New`].
    pub fn finish(&mut self, source: IpAddr, cookie: &[u8], reply: Arc<[u8]>) {
        let key: Key = (source, cookie.into());
        if let Some((entry, _)) = self.entries.get_mut(&key) {
            *entry = Entry::Done(reply);
        }
    }

    /// Forgets a message whose handling produced no reply (so a retransmission is handled).
    pub fn abandon(&mut self, source: IpAddr, cookie: &[u8]) {
        let key: Key = (source, cookie.into());
        self.entries.remove(&key);
    }

    /// Drops entries older than the maximum age.
    pub fn expire(&mut self, now: Instant) {
        while let Some((_, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.max_age {
                break;
            }
            if let Some((key, at)) = self.order.pop_front() {
                self.remove_if_at(&key, at);
            }
        }
    }

    /// Removes `key` only if it is the entry inserted at `at` (a key may have been abandoned
    /// and inserted again since).
    fn remove_if_at(&mut self, key: &Key, at: Instant) {
        if self.entries.get(key).is_some_and(|(_, since)| *since == at) {
            self.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const KAMAILIO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn a_retransmission_gets_the_same_reply_bytes() {
        let mut cache = ReplyCache::new(8, Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(cache.begin(KAMAILIO, b"5323_1", t0), Lookup::New);
        assert_eq!(cache.begin(KAMAILIO, b"5323_1", t0), Lookup::InProgress);
        let reply: Arc<[u8]> = Arc::from(&b"5323_1 d6:result2:oke"[..]);
        cache.finish(KAMAILIO, b"5323_1", Arc::clone(&reply));
        assert_eq!(
            cache.begin(KAMAILIO, b"5323_1", t0 + Duration::from_secs(29)),
            Lookup::Replay(reply)
        );
        // Another proxy with the same cookie is a different message.
        assert_eq!(cache.begin(OTHER, b"5323_1", t0), Lookup::New);
    }

    #[test]
    fn entries_expire_and_the_oldest_are_evicted_when_full() {
        let mut cache = ReplyCache::new(2, Duration::from_secs(30));
        let t0 = Instant::now();
        for cookie in [&b"a"[..], b"b", b"c"] {
            assert_eq!(cache.begin(KAMAILIO, cookie, t0), Lookup::New);
            cache.finish(KAMAILIO, cookie, Arc::from(cookie));
        }
        assert_eq!(cache.len(), 2);
        // "a" was evicted: handled again.
        assert_eq!(cache.begin(KAMAILIO, b"a", t0), Lookup::New);
        assert!(matches!(cache.begin(KAMAILIO, b"c", t0), Lookup::Replay(_)));
        let later = t0 + Duration::from_secs(30);
        assert_eq!(cache.begin(KAMAILIO, b"c", later), Lookup::New);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_abandoned_message_is_handled_again() {
        let mut cache = ReplyCache::new(4, Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(cache.begin(KAMAILIO, b"x", t0), Lookup::New);
        cache.abandon(KAMAILIO, b"x");
        assert_eq!(cache.begin(KAMAILIO, b"x", t0), Lookup::New);
        assert!(!cache.is_empty());
    }
}
