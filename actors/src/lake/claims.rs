//! Which Kafka partitions this process may commit to the tables, and where
//! each continues. Several flushers in one consumer group split the
//! partitions; a partition changes hands only after its old owner has
//! finished (or refused) every commit of its rows, and the new owner starts
//! from what the table holds. In embedded mode nothing is claimed and every
//! commit is admitted.
//!
//! The epoch counts assignments: rows taken into a flush under one epoch are
//! not committed under another, because a revocation in between has thrown
//! them away (their partitions may belong to another flusher now).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::LakeError;
use super::summary::Offsets;

/// Partition key: (topic, partition).
pub type PartitionKey = (String, i32);

/// Where an owned partition stands.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// The next offset to take.
    next: i64,
    /// The next offset to recall: records before `next`, read again only so
    /// that their ids are known (see `kafka::recent_ids`).
    recall: i64,
}

#[derive(Default)]
struct State {
    epoch: u64,
    /// Owned partitions and where each stands.
    owned: BTreeMap<PartitionKey, Cursor>,
    /// Commits admitted and not finished.
    inflight: usize,
    /// Set when a commit was fenced: the consumer should rejoin its group.
    resync: bool,
}

#[derive(Default)]
pub struct Claims {
    state: Mutex<State>,
    idle: Condvar,
    /// Batches judged and not yet in the tails (see [`Claims::ingesting`]).
    ingesting: AtomicUsize,
}

/// Held from a batch's judgement until its rows are in the tails.
pub struct Ingesting<'a>(&'a Claims);

impl Drop for Ingesting<'_> {
    fn drop(&mut self) {
        self.0.ingesting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What to do with one consumed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next record of an owned partition.
    Take,
    /// Further on than expected: the records between are no longer in the
    /// log (retention); taken, and counted.
    TakeAfterGap { missing: i64 },
    /// Before where the partition continues, read again for its id only.
    Recall,
    /// Not owned, or already taken.
    Skip,
}

/// Held while an admitted commit runs; a revocation waits for it.
pub struct Permit {
    claims: Arc<Claims>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.claims.lock();
        s.inflight -= 1;
        if s.inflight == 0 {
            self.claims.idle.notify_all();
        }
    }
}

impl Claims {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a batch as on its way from judgement to the tails: its
    /// records count in [`Claims::owned`] before their rows can be flushed.
    pub fn start_ingest(&self) -> Ingesting<'_> {
        self.ingesting.fetch_add(1, Ordering::AcqRel);
        Ingesting(self)
    }

    /// True while a judged batch is not in the tails yet.
    pub fn ingesting(&self) -> bool {
        self.ingesting.load(Ordering::Acquire) > 0
    }

    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Admits the commit of a flush taken at `epoch` that read `offsets`:
    /// refused when the assignment changed since, or a partition is not
    /// owned.
    pub fn admit(self: &Arc<Self>, epoch: u64, offsets: &Offsets) -> Result<Permit, LakeError> {
        let mut s = self.lock();
        let owned =
            offsets.iter().all(|(topic, parts)| parts.keys().all(|p| s.owned.contains_key(&(topic.clone(), *p))));
        if (!offsets.is_empty() && s.epoch != epoch) || !owned {
            return Err(LakeError::Revoked);
        }
        s.inflight += 1;
        Ok(Permit { claims: self.clone() })
    }

    /// Gives up every partition and waits until no admitted commit runs, so
    /// that a new owner reads the table after the last commit of this one.
    /// Blocks the calling thread.
    pub fn revoke_all(&self) {
        let mut s = self.lock();
        s.epoch += 1;
        s.owned.clear();
        while s.inflight > 0 {
            s = self.idle.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A commit found another writer on one of its partitions: drop every
    /// claim at once (without waiting) and ask the consumer to rejoin.
    pub fn fence(&self) {
        let mut s = self.lock();
        s.epoch += 1;
        s.owned.clear();
        s.resync = true;
    }

    /// Whether a fence asked for a rejoin since the last call.
    pub fn take_resync(&self) -> bool {
        std::mem::take(&mut self.lock().resync)
    }

    /// Takes `partitions`, each continuing at its offset, with the records
    /// from `recall_from` up to there to be recalled first.
    pub fn assign(&self, partitions: impl IntoIterator<Item = (PartitionKey, i64, i64)>) {
        let mut s = self.lock();
        s.epoch += 1;
        s.owned.extend(
            partitions
                .into_iter()
                .map(|(key, next, recall_from)| (key, Cursor { next, recall: recall_from.min(next) })),
        );
    }

    /// The owned partitions and where each continues.
    pub fn owned(&self) -> Vec<(PartitionKey, i64)> {
        self.lock().owned.iter().map(|(k, c)| (k.clone(), c.next)).collect()
    }

    /// Decides on a batch of records received at `epoch`, in order; each is
    /// (topic, partition, offset).
    pub fn judge<'a>(&self, epoch: u64, records: impl Iterator<Item = (&'a str, i32, i64)>) -> Vec<Verdict> {
        let mut s = self.lock();
        let current = s.epoch == epoch;
        let mut key = (String::new(), 0);
        records
            .map(|(topic, partition, offset)| {
                if !current {
                    // Received before a rebalance: its partition starts over
                    // from the table's offset.
                    return Verdict::Skip;
                }
                key.0.clear();
                key.0.push_str(topic);
                key.1 = partition;
                let Some(cursor) = s.owned.get_mut(&key) else { return Verdict::Skip };
                if offset < cursor.next {
                    if offset < cursor.recall {
                        return Verdict::Skip;
                    }
                    cursor.recall = offset + 1;
                    return Verdict::Recall;
                }
                let verdict = match offset - cursor.next {
                    0 => Verdict::Take,
                    gap => Verdict::TakeAfterGap { missing: gap },
                };
                cursor.next = offset + 1;
                cursor.recall = cursor.next;
                verdict
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(topic: &str, p: i32, next: i64) -> Offsets {
        Offsets::from([(topic.to_owned(), BTreeMap::from([(p, next)]))])
    }

    #[test]
    fn records_are_taken_in_order_once_and_only_for_owned_partitions() {
        let c = Claims::default();
        c.assign([(("t".to_owned(), 0), 10, 10)]);
        let e = c.epoch();
        let got =
            c.judge(e, [("t", 0, 9), ("t", 0, 10), ("t", 0, 11), ("t", 0, 11), ("t", 1, 0), ("t", 0, 15)].into_iter());
        assert_eq!(
            got,
            [
                Verdict::Skip,
                Verdict::Take,
                Verdict::Take,
                Verdict::Skip,
                Verdict::Skip,
                Verdict::TakeAfterGap { missing: 3 }
            ]
        );
        assert_eq!(c.owned(), [(("t".to_owned(), 0), 16)]);
        // Received before the assignment changed: skipped.
        c.assign([]);
        assert_eq!(c.judge(e, [("t", 0, 16)].into_iter()), [Verdict::Skip]);
    }

    #[test]
    fn records_before_the_continuation_are_recalled_once_then_taken() {
        let c = Claims::default();
        c.assign([(("t".to_owned(), 0), 10, 7)]);
        let e = c.epoch();
        let got =
            c.judge(e, [("t", 0, 6), ("t", 0, 7), ("t", 0, 9), ("t", 0, 8), ("t", 0, 10), ("t", 0, 9)].into_iter());
        assert_eq!(got, [Verdict::Skip, Verdict::Recall, Verdict::Recall, Verdict::Skip, Verdict::Take, Verdict::Skip]);
        // A recall range past the continuation is none.
        c.assign([(("t".to_owned(), 1), 3, 5)]);
        assert_eq!(c.judge(c.epoch(), [("t", 1, 3)].into_iter()), [Verdict::Take]);
    }

    #[test]
    fn a_commit_is_refused_after_revocation_and_revocation_waits_for_admitted_commits() {
        let c = Arc::new(Claims::default());
        c.assign([(("t".to_owned(), 0), 0, 0)]);
        let e = c.epoch();
        let permit = c.admit(e, &offsets("t", 0, 5)).expect("owned");
        assert!(matches!(c.admit(e, &offsets("t", 1, 5)), Err(LakeError::Revoked)));
        let (c2, done) = (c.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let d2 = done.clone();
        let revoker = std::thread::spawn(move || {
            c2.revoke_all();
            d2.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!done.load(std::sync::atomic::Ordering::SeqCst), "revocation waits for the admitted commit");
        drop(permit);
        revoker.join().unwrap();
        assert!(matches!(c.admit(e, &offsets("t", 0, 6)), Err(LakeError::Revoked)));
        // Embedded mode: nothing claimed, nothing read from Kafka: admitted.
        assert!(c.admit(0, &Offsets::new()).is_ok());
    }
}
