//! Which member of the flushers' group this process is.
//!
//! With dynamic membership (the default, `kafka.instance_id = ""`) a
//! flusher killed and restarted joins as a new member and gets its
//! partitions once the broker has expired the dead one (the session
//! timeout). Static membership (KIP-345, `group.instance.id`) avoids that
//! wait on brokers that implement it: a restarted flusher presents the same
//! instance id, the coordinator gives it its predecessor's member and
//! assignment back, and no rebalance runs. Tansu 0.6, the test broker,
//! revokes a static member's partitions soon after assigning them and
//! leaves a restarted one with none, so static membership is opt-in.
//!
//! `kafka.instance_id = "auto"` makes that id stable per data directory: a
//! random name the directory keeps in `kafka-members/instance` and the
//! lowest slot no live process holds (an advisory lock, released by the
//! kernel when its holder dies, even by SIGKILL), so flushers sharing one
//! directory get different ids and a restarted one takes its predecessor's
//! slot.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::runtime::config::KafkaConfig;

/// Slots tried per data directory: more flushers than this on one
/// directory fall back to dynamic membership.
const SLOTS: usize = 64;

/// How often a live flusher stamps its slot (the consumer loop's tick).
pub const STAMP_EVERY: Duration = Duration::from_secs(3);

/// This process's group membership; holding it keeps its slot.
#[derive(Debug, Default)]
pub struct Membership {
    /// The `group.instance.id`, or `None` for dynamic membership.
    pub instance_id: Option<String>,
    /// The slot file this process holds and stamps while it consumes.
    pub slot: Option<PathBuf>,
    /// How long to wait before joining: the slot's previous holder was
    /// killed this recently, and may still be a member of the group.
    pub join_after: Duration,
    _lock: Option<File>,
}

impl Membership {
    /// The membership `config` asks for. Every flusher claims a slot of
    /// `data_dir`; its number makes the `"auto"` instance id.
    pub fn claim(config: &KafkaConfig, data_dir: &Path) -> std::io::Result<Self> {
        let claimed = claim_slot(data_dir, config.session_timeout)?;
        let instance_id = match config.instance_id.as_str() {
            "" => None,
            "auto" => claimed.auto_id.clone(),
            given => Some(given.to_owned()),
        };
        Ok(Self { instance_id, slot: claimed.path, join_after: claimed.join_after, _lock: claimed.lock })
    }
}

impl Drop for Membership {
    /// A flusher that stops cleanly has left the group: its successor need
    /// not wait.
    fn drop(&mut self) {
        if let Some(path) = &self.slot {
            let _ = std::fs::write(path, LEFT);
        }
    }
}

/// What a slot file holds: the flusher is (or was, if killed) a member...
const LIVE: &str = "live";
/// ...or it left the group.
const LEFT: &str = "left";

/// Marks the slot as held by a live member now.
pub fn stamp(path: &Path) {
    if let Ok(file) = OpenOptions::new().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

struct Claimed {
    path: Option<PathBuf>,
    lock: Option<File>,
    auto_id: Option<String>,
    join_after: Duration,
}

fn claim_slot(data_dir: &Path, session: Duration) -> std::io::Result<Claimed> {
    let dir = data_dir.join("kafka-members");
    std::fs::create_dir_all(&dir)?;
    let name = directory_name(&dir.join("instance"))?;
    for slot in 0..SLOTS {
        let path = dir.join(format!("slot-{slot}"));
        let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
        if file.try_lock().is_err() {
            continue;
        }
        let join_after = predecessor_wait(&mut file, session)?;
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        file.write_all(LIVE.as_bytes())?;
        file.set_modified(SystemTime::now())?;
        return Ok(Claimed {
            path: Some(path),
            lock: Some(file),
            auto_id: Some(format!("k2-{name}-{slot}")),
            join_after,
        });
    }
    tracing::warn!(
        dir = %dir.display(),
        "more than {SLOTS} flushers share this data directory: this one joins the group with dynamic membership"
    );
    Ok(Claimed { path: None, lock: None, auto_id: None, join_after: Duration::ZERO })
}

/// A slot still marked live was held by a flusher that was killed. Until
/// the broker expires it (its session timeout after its last heartbeat,
/// which its last stamp bounds), it is still in the group: a successor
/// joining then can be handed nothing, and a broker that reassigns only
/// when members join or leave (Tansu 0.6) then leaves the partitions with
/// no consumer. So the successor joins once the session is surely over.
fn predecessor_wait(file: &mut File, session: Duration) -> std::io::Result<Duration> {
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    if text.trim() != LIVE {
        return Ok(Duration::ZERO);
    }
    let last = file.metadata()?.modified()?;
    let expired = last + STAMP_EVERY + session + EXPIRY_MARGIN;
    Ok(expired.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Beyond the session: the broker notices an expired member only when a
/// request arrives.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);

/// The directory's random name, made by the first process that asks.
fn directory_name(path: &Path) -> std::io::Result<String> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut file) => {
            let name = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
            file.write_all(name.as_bytes())?;
            file.sync_all()?;
            Ok(name)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process may have created it a moment ago and not yet
            // written the name.
            for _ in 0..50 {
                let mut name = String::new();
                File::open(path)?.read_to_string(&mut name)?;
                let name = name.trim();
                if !name.is_empty() {
                    if !name.chars().all(|c| c.is_ascii_alphanumeric()) || name.len() > 64 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{} does not hold a member name", path.display()),
                        ));
                    }
                    return Ok(name.to_owned());
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is empty", path.display())))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(instance_id: &str) -> KafkaConfig {
        let mut config =
            crate::runtime::config::Config::load_from(None, figment::providers::Env::prefixed("K2_TEST_UNSET__"))
                .unwrap()
                .kafka;
        config.instance_id = instance_id.to_owned();
        config
    }

    #[test]
    fn auto_ids_are_stable_per_directory_and_distinct_among_live_holders() {
        let dir = tempfile::tempdir().unwrap();
        let first = Membership::claim(&config("auto"), dir.path()).unwrap();
        let second = Membership::claim(&config("auto"), dir.path()).unwrap();
        let (a, b) = (first.instance_id.clone().unwrap(), second.instance_id.clone().unwrap());
        assert_ne!(a, b, "two live flushers of one directory share no id");
        assert!(a.ends_with("-0") && b.ends_with("-1"), "{a} {b}");
        // The first dies: its successor takes its slot, so its id.
        drop(first);
        let third = Membership::claim(&config("auto"), dir.path()).unwrap();
        assert_eq!(third.instance_id.as_deref(), Some(a.as_str()));

        let other = tempfile::tempdir().unwrap();
        let elsewhere = Membership::claim(&config("auto"), other.path()).unwrap();
        assert_ne!(elsewhere.instance_id, third.instance_id, "another directory is another member");
    }

    #[test]
    fn an_empty_id_is_dynamic_and_a_given_one_is_used_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Membership::claim(&config(""), dir.path()).unwrap().instance_id, None);
        assert_eq!(
            Membership::claim(&config("flusher-2"), dir.path()).unwrap().instance_id.as_deref(),
            Some("flusher-2")
        );
    }

    #[test]
    fn a_killed_predecessor_s_slot_makes_its_successor_wait_out_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let config = config("");
        let session = config.session_timeout;
        let first = Membership::claim(&config, dir.path()).unwrap();
        assert_eq!(first.join_after, Duration::ZERO, "a new directory has no predecessor");
        let slot = first.slot.clone().unwrap();
        // A clean stop left the group: no wait.
        drop(first);
        let second = Membership::claim(&config, dir.path()).unwrap();
        assert_eq!(second.join_after, Duration::ZERO);
        assert_eq!(std::fs::read_to_string(&slot).unwrap(), LIVE, "a holder marks its slot live");
        drop(second);
        // A kill leaves the slot marked live, stamped at its last tick (and
        // the kernel releases its lock).
        std::fs::write(&slot, LIVE).unwrap();
        stamp(&slot);
        let third = Membership::claim(&config, dir.path()).unwrap();
        assert_eq!(third.slot.as_deref(), Some(slot.as_path()));
        let full = STAMP_EVERY + session + EXPIRY_MARGIN;
        assert!(third.join_after > full - Duration::from_secs(1) && third.join_after <= full, "{:?}", third.join_after);
        drop(third);
        // Killed long ago: the broker has expired it already.
        std::fs::write(&slot, LIVE).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&slot)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        assert_eq!(Membership::claim(&config, dir.path()).unwrap().join_after, Duration::ZERO);
    }
}
