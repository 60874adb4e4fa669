//! The in-memory authority for ingestion: every client key and every project's setting, so that
//! an event is authenticated without touching the database. It is loaded once at start-up and
//! kept exact by the management API, which updates it after each committed change and before
//! answering, so the request after a 200 already sees the change.

use dashmap::DashMap;

use super::keys::parse_public_key;
use crate::store::{ClientKey, Setting};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyEntry {
    id: i64,
    project_id: i64,
    active: bool,
}

/// Why an event is refused, or the key id it is accepted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDecision {
    Allowed {
        key_id: i64,
    },
    /// Not a key this gateway knows (or not even shaped like one).
    Unknown,
    Inactive,
    WrongProject,
    SettingMissing,
    SettingDisabled,
}

/// Keys are stored as their 16 decoded bytes rather than strings: with a million keys, that is
/// the difference between ~70 and ~150 bytes an entry. Unknown keys are never inserted, so a
/// flood of random keys cannot grow the map.
#[derive(Default)]
pub struct KeyCache {
    keys: DashMap<[u8; 16], KeyEntry>,
    /// project id -> (active, integrated)
    settings: DashMap<i64, (bool, bool)>,
}

impl KeyCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache with room for `keys` keys. Filling a cache sized up front never rehashes:
    /// with a million keys, growing by doubling would allocate and drop tables of several tens
    /// of MB on the way, and the allocator does not always hand that memory back.
    pub fn with_capacity(keys: usize) -> Self {
        KeyCache {
            keys: DashMap::with_capacity(keys),
            settings: DashMap::new(),
        }
    }

    pub fn load(
        keys: impl IntoIterator<Item = ClientKey>,
        settings: impl IntoIterator<Item = Setting>,
    ) -> Self {
        let cache = KeyCache::new();
        for k in keys {
            cache.upsert_key(&k);
        }
        for s in settings {
            cache.set_setting(s);
        }
        cache
    }

    pub fn upsert_key(&self, key: &ClientKey) {
        if let Some(bytes) = parse_public_key(&key.public_key) {
            self.keys.insert(
                bytes,
                KeyEntry {
                    id: key.id,
                    project_id: key.project_id,
                    active: key.active,
                },
            );
        }
    }

    /// Forgets a deleted key's permission but keeps it as an inactive entry, so that events
    /// still sent with it are refused as a disabled key (403, as Sentry answers for a deleted
    /// key; docs/protocol.md, "Answers") rather than as one never issued (401). The entry lives until the next
    /// start, which loads only the keys still in the database; it costs one small entry per key
    /// deleted since then.
    pub fn remove_key(&self, public_key: &str) {
        if let Some(bytes) = parse_public_key(public_key) {
            if let Some(mut entry) = self.keys.get_mut(&bytes) {
                entry.active = false;
            }
        }
    }

    pub fn set_setting(&self, setting: Setting) {
        self.settings
            .insert(setting.project_id, (setting.active, setting.integrated));
    }

    /// A deleted project's keys are refused like deleted keys (403), until the next start.
    pub fn remove_project(&self, project_id: i64) {
        self.settings.remove(&project_id);
        self.keys.iter_mut().for_each(|mut e| {
            if e.project_id == project_id {
                e.active = false;
            }
        });
    }

    /// Forgets a project's setting (it was deleted), so its events are refused as having none.
    pub fn remove_setting(&self, project_id: i64) {
        self.settings.remove(&project_id);
    }

    /// Makes the cache match a full read of the database, for a node that may have missed
    /// changes made through another node. Entries are overwritten in place, never cleared
    /// first, so an event checked meanwhile never finds its key or setting missing. Keys the
    /// database no longer has stay as inactive entries, as [`KeyCache::remove_key`] leaves
    /// them.
    pub fn reload(&self, keys: Vec<ClientKey>, settings: Vec<Setting>) {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        for k in &keys {
            if let Some(bytes) = parse_public_key(&k.public_key) {
                seen.insert(bytes);
            }
            self.upsert_key(k);
        }
        self.keys.iter_mut().for_each(|mut e| {
            if !seen.contains(e.key()) {
                e.active = false;
            }
        });
        let projects: std::collections::HashSet<i64> =
            settings.iter().map(|s| s.project_id).collect();
        for s in settings {
            self.set_setting(s);
        }
        self.settings.retain(|id, _| projects.contains(id));
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Decides whether `public_key` may send events to `project_id`.
    pub fn check(&self, public_key: &str, project_id: i64) -> KeyDecision {
        let Some(bytes) = parse_public_key(public_key) else {
            return KeyDecision::Unknown;
        };
        let Some(entry) = self.keys.get(&bytes).map(|e| *e) else {
            return KeyDecision::Unknown;
        };
        if !entry.active {
            return KeyDecision::Inactive;
        }
        if entry.project_id != project_id {
            return KeyDecision::WrongProject;
        }
        match self.settings.get(&project_id).map(|s| *s) {
            None => KeyDecision::SettingMissing,
            Some((true, true)) => KeyDecision::Allowed { key_id: entry.id },
            Some(_) => KeyDecision::SettingDisabled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "glet_aa77551d849c083f76d0bc545ed053a3";
    const K2: &str = "glet_0ff98b1d849c083f76d0bc545ed053a3";

    fn cache() -> KeyCache {
        KeyCache::load(
            [
                ClientKey {
                    id: 1,
                    project_id: 5,
                    active: true,
                    public_key: K1.into(),
                },
                ClientKey {
                    id: 2,
                    project_id: 6,
                    active: false,
                    public_key: K2.into(),
                },
            ],
            [Setting {
                project_id: 5,
                active: true,
                integrated: true,
            }],
        )
    }

    #[test]
    fn known_key_of_active_project_is_allowed() {
        assert_eq!(cache().check(K1, 5), KeyDecision::Allowed { key_id: 1 });
    }

    #[test]
    fn refusals() {
        let c = cache();
        assert_eq!(
            c.check("glet_00000000000000000000000000000000", 5),
            KeyDecision::Unknown
        );
        assert_eq!(c.check("nonsense", 5), KeyDecision::Unknown);
        assert_eq!(c.check(K1, 6), KeyDecision::WrongProject);
        assert_eq!(c.check(K2, 6), KeyDecision::Inactive);
        c.set_setting(Setting {
            project_id: 5,
            active: false,
            integrated: true,
        });
        assert_eq!(c.check(K1, 5), KeyDecision::SettingDisabled);
        c.remove_project(5);
        assert_eq!(c.check(K1, 5), KeyDecision::Inactive);
    }

    #[test]
    fn missing_setting_and_removed_key() {
        let c = cache();
        c.upsert_key(&ClientKey {
            id: 3,
            project_id: 7,
            active: true,
            public_key: K2.into(),
        });
        assert_eq!(c.check(K2, 7), KeyDecision::SettingMissing);
        c.remove_key(K1);
        assert_eq!(c.check(K1, 5), KeyDecision::Inactive);
        // Removing a key never seen adds nothing.
        c.remove_key("glet_00000000000000000000000000000000");
        assert_eq!(
            c.check("glet_00000000000000000000000000000000", 5),
            KeyDecision::Unknown
        );
        assert_eq!(c.key_count(), 2);
    }

    #[test]
    fn a_reload_follows_the_database_without_dropping_entries() {
        let c = cache();
        // K1 was deleted elsewhere, K2 enabled, project 6 got a setting, project 5 lost its.
        c.reload(
            vec![ClientKey {
                id: 2,
                project_id: 6,
                active: true,
                public_key: K2.into(),
            }],
            vec![Setting {
                project_id: 6,
                active: true,
                integrated: true,
            }],
        );
        assert_eq!(
            c.check(K1, 5),
            KeyDecision::Inactive,
            "deleted: refused as disabled"
        );
        assert_eq!(c.check(K2, 6), KeyDecision::Allowed { key_id: 2 });
        c.remove_setting(6);
        assert_eq!(c.check(K2, 6), KeyDecision::SettingMissing);
    }
}
