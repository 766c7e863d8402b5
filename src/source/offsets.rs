//! Which input offsets may be committed.
//!
//! Events of one partition complete out of order (a slow webhook, a fast one); an offset may
//! be committed only when every record before it in its partition has completed. Each
//! partition keeps the offsets it has handed out, in order, and advances over the completed
//! prefix.

use std::collections::{HashMap, VecDeque};

use super::progress::Progress;

/// What became of a record handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Received, not yet taken up by a task.
    Queued,
    /// Being processed.
    Open,
    /// Its work is done: the offset may be passed.
    Done,
    /// Given up unfinished (revocation, shutdown, a failed task): never passed, so the
    /// partition's next owner or the next run processes it again.
    Released,
}

/// One partition's records in flight, in the order they were received.
#[derive(Debug, Default)]
pub struct PartitionOffsets {
    /// (offset, mark), strictly increasing offsets.
    in_flight: VecDeque<(i64, Mark)>,
    /// The last commit point the completed prefix reached.
    committable: Option<i64>,
    /// Rewound and not yet fetched again: records arriving meanwhile were prefetched
    /// before the rewind and come again later, so they are refused.
    rewound: bool,
    /// What is known to be done from before this assignment (this instance's own earlier
    /// work, or the committed offset's metadata): such records are not processed again.
    known: Option<Progress>,
    /// The first offset received in this assignment.
    first: Option<i64>,
}

impl PartitionOffsets {
    /// Records that `offset` was handed out. Offsets must increase; a repeat or an older
    /// offset (a re-fetch after a seek) is ignored and reported with `false`.
    /// A record known to be done already is not handed out either (`false`): it counts as
    /// done at once.
    pub fn begin(&mut self, offset: i64) -> bool {
        self.first.get_or_insert(offset);
        // Below the commit point everything is done, even when nothing is in flight any
        // more: a record fetched again (the client's position moved back after a broker
        // failover) is not processed twice.
        if self.rewound
            || self.committable.is_some_and(|c| offset < c)
            || self
                .in_flight
                .back()
                .is_some_and(|(last, _)| *last >= offset)
        {
            return false;
        }
        if let Some(known) = &self.known {
            if offset < known.next {
                return false;
            }
            if known.is_done(offset) {
                self.in_flight.push_back((offset, Mark::Done));
                self.advance();
                return false;
            }
        }
        self.in_flight.push_back((offset, Mark::Queued));
        true
    }

    /// Adds what is known to be done from elsewhere (see [`PartitionOffsets::known`]).
    pub fn resume(&mut self, progress: &Progress) {
        let known = match &self.known {
            Some(k) => k.merge(progress),
            None => progress.clone(),
        };
        if self.committable.is_none_or(|c| c < known.next) {
            self.committable = Some(known.next);
        }
        self.known = Some(known);
    }

    /// The commit point and the done records after it; `None` before anything is known.
    /// Before the first record completes, the commit point is the first record received
    /// (the assignment started there), so that records done after it are recorded too.
    pub fn progress(&self) -> Option<Progress> {
        let next = self.committable.or(self.first)?;
        let mut ranges: Vec<(i64, i64)> = self
            .in_flight
            .iter()
            .filter(|(o, m)| *m == Mark::Done && *o >= next)
            .map(|(o, _)| (*o, *o))
            .collect();
        if let Some(known) = &self.known {
            ranges.extend(known.done.iter().copied());
        }
        Some(Progress::normalised(next, &mut ranges))
    }

    /// Moves the commit point over the completed prefix; returns it if it moved.
    fn advance(&mut self) -> Option<i64> {
        let mut next = None;
        while let Some((o, Mark::Done)) = self.in_flight.front().copied() {
            self.in_flight.pop_front();
            next = Some(o + 1);
        }
        if next.is_some() {
            self.committable = next;
        }
        next
    }

    /// Records that work on `offset` has started.
    pub fn start(&mut self, offset: i64) {
        if let Ok(i) = self.in_flight.binary_search_by_key(&offset, |(o, _)| *o) {
            if self.in_flight[i].1 == Mark::Queued {
                self.in_flight[i].1 = Mark::Open;
            }
        }
    }

    /// Marks `offset` complete. Returns the next offset to commit (the first one not yet
    /// complete, or one past the last completed) when the committable point moved.
    pub fn complete(&mut self, offset: i64) -> Option<i64> {
        self.mark(offset, Mark::Done)?;
        self.advance()
    }

    /// Gives `offset` up unfinished: it stops counting as open and is never passed.
    pub fn release(&mut self, offset: i64) {
        self.mark(offset, Mark::Released);
    }

    fn mark(&mut self, offset: i64, mark: Mark) -> Option<()> {
        let index = self
            .in_flight
            .binary_search_by_key(&offset, |(o, _)| *o)
            .ok()?;
        let entry = &mut self.in_flight[index].1;
        if !matches!(*entry, Mark::Queued | Mark::Open) {
            return None;
        }
        *entry = mark;
        Some(())
    }

    /// Whether the records from `offset` on are all received and none has started, so the
    /// partition can be fetched again from `offset` (see [`PartitionOffsets::rewind`]).
    pub fn can_rewind(&self, offset: i64) -> bool {
        self.in_flight
            .iter()
            .any(|(o, m)| *o == offset && *m == Mark::Queued)
            && self
                .in_flight
                .iter()
                .filter(|(o, _)| *o >= offset)
                .all(|(_, m)| *m == Mark::Queued)
    }

    /// Forgets the records from `offset` on, which will be fetched again (after a seek back
    /// to `offset`). Only when [`PartitionOffsets::can_rewind`].
    pub fn rewind(&mut self, offset: i64) -> bool {
        if !self.can_rewind(offset) {
            return false;
        }
        self.in_flight.retain(|(o, _)| *o < offset);
        self.rewound = true;
        true
    }

    /// The partition is fetched again from where it was rewound to.
    pub fn refetch(&mut self) {
        self.rewound = false;
    }

    /// Whether `offset` is received and not yet completed or released.
    pub fn tracks(&self, offset: i64) -> bool {
        self.in_flight
            .binary_search_by_key(&offset, |(o, _)| *o)
            .is_ok_and(|i| matches!(self.in_flight[i].1, Mark::Queued | Mark::Open))
    }

    /// Records whose work has started and not ended.
    pub fn open(&self) -> usize {
        self.in_flight
            .iter()
            .filter(|(_, m)| *m == Mark::Open)
            .count()
    }

    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }
}

/// Identifies one assignment of a partition to this instance. A partition that is revoked and
/// assigned again gets a new generation, so late completions from the old one are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug)]
struct Assigned {
    generation: u64,
    offsets: PartitionOffsets,
    /// Being handed over: no new work starts, work under way may still complete.
    revoking: bool,
    /// The hand-over's last commit (or abort) is being taken: work still under way can no
    /// longer be part of it, so it neither writes its result nor completes (see
    /// [`OffsetTracker::seal`]).
    sealed: bool,
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<PartitionKey, Assigned>,
    next_generation: u64,
    /// The durable progress of partitions this instance held before: if one comes back, its
    /// work resumes after what is known to be done, whatever the committed offset says.
    retained: HashMap<PartitionKey, Progress>,
}

impl OffsetTracker {
    /// Starts tracking a newly assigned partition; returns its generation. What this
    /// instance retained of the partition (see [`OffsetTracker::retain`]) is known done.
    pub fn assign(&mut self, key: PartitionKey) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        let mut offsets = PartitionOffsets::default();
        if let Some(progress) = self.retained.get(&key) {
            offsets.resume(progress);
        }
        self.partitions.insert(
            key,
            Assigned {
                generation,
                offsets,
                revoking: false,
                sealed: false,
            },
        );
        generation
    }

    /// Adds what the committed offset's metadata says is done (see [`Progress::decode`]).
    pub fn resume(&mut self, key: &PartitionKey, progress: &Progress) {
        if let Some(a) = self.partitions.get_mut(key) {
            a.offsets.resume(progress);
        }
    }

    /// Keeps a revoked partition's durable progress for when it comes back.
    pub fn retain(&mut self, key: PartitionKey, progress: Progress) {
        let merged = match self.retained.get(&key) {
            Some(p) => p.merge(&progress),
            None => progress,
        };
        self.retained.insert(key, merged);
    }

    /// The progress of every partition held (being revoked included) that has any.
    pub fn progress(&self) -> Vec<(PartitionKey, Progress)> {
        self.partitions
            .iter()
            .filter_map(|(k, a)| Some((k.clone(), a.offsets.progress()?)))
            .collect()
    }

    /// The progress of one partition held.
    pub fn progress_of(&self, key: &PartitionKey) -> Option<Progress> {
        self.partitions.get(key)?.offsets.progress()
    }

    /// First step of a revocation: records of `key` are no longer current (nothing new
    /// starts), but those under way may still complete.
    pub fn start_revoke(&mut self, key: &PartitionKey) {
        if let Some(a) = self.partitions.get_mut(key) {
            a.revoking = true;
        }
    }

    /// Second step of a revocation, as its last commit takes the offsets (or before its
    /// abort): records of `key` still under way are no longer this instance's to finish. A
    /// result written after this would go into a later transaction, committed without its
    /// offset while the next owner redoes the record: a duplicate committed outcome. So from
    /// here on they write nothing and their completion is ignored; the commit keeps their
    /// offsets open. (Sealing before the commit's writes under way have settled would lose
    /// the completions of results already in it: see [`super::commit::Committer::hand_over`].)
    pub fn seal(&mut self, key: &PartitionKey) {
        if let Some(a) = self.partitions.get_mut(key) {
            a.sealed = true;
        }
    }

    /// Records still being processed in these partitions.
    pub fn open_in(&self, keys: &[PartitionKey]) -> usize {
        keys.iter()
            .filter_map(|k| self.partitions.get(k))
            .map(|a| a.offsets.open())
            .sum()
    }

    /// Stops tracking a revoked partition; returns its progress, if any.
    pub fn revoke(&mut self, key: &PartitionKey) -> Option<Progress> {
        self.partitions.remove(key)?.offsets.progress()
    }

    /// Records a received offset; returns the generation to complete it with, or `None`
    /// when the record is a re-delivery already in flight.
    pub fn begin(&mut self, key: &PartitionKey, offset: i64) -> Option<u64> {
        if !self.partitions.contains_key(key) {
            // Records can arrive before the rebalance callback is seen (or without one on
            // manual assignment): start tracking then.
            self.assign(key.clone());
        }
        let a = self.partitions.get_mut(key)?;
        a.offsets.begin(offset).then_some(a.generation)
    }

    /// Completes an offset; returns the next offset to commit if it moved.
    pub fn complete(&mut self, key: &PartitionKey, generation: u64, offset: i64) -> Option<i64> {
        match self.partitions.get_mut(key) {
            Some(a) if a.generation == generation && !a.sealed => a.offsets.complete(offset),
            _ => None,
        }
    }

    /// Records that work on an offset has started (it now counts as under way).
    pub fn start(&mut self, key: &PartitionKey, generation: u64, offset: i64) {
        if let Some(a) = self.partitions.get_mut(key) {
            if a.generation == generation {
                a.offsets.start(offset);
            }
        }
    }

    /// Gives an offset up unfinished (see [`PartitionOffsets::release`]).
    pub fn release(&mut self, key: &PartitionKey, generation: u64, offset: i64) {
        if let Some(a) = self.partitions.get_mut(key) {
            if a.generation == generation {
                a.offsets.release(offset);
            }
        }
    }

    /// See [`PartitionOffsets::can_rewind`]; `false` for another generation.
    pub fn can_rewind(&self, key: &PartitionKey, generation: u64, offset: i64) -> bool {
        self.partitions
            .get(key)
            .is_some_and(|a| a.generation == generation && a.offsets.can_rewind(offset))
    }

    /// See [`PartitionOffsets::rewind`]; `false` (nothing changed) for another generation.
    pub fn rewind(&mut self, key: &PartitionKey, generation: u64, offset: i64) -> bool {
        match self.partitions.get_mut(key) {
            Some(a) if a.generation == generation => a.offsets.rewind(offset),
            _ => false,
        }
    }

    /// See [`PartitionOffsets::refetch`].
    pub fn refetch(&mut self, key: &PartitionKey, generation: u64) {
        if let Some(a) = self.partitions.get_mut(key) {
            if a.generation == generation {
                a.offsets.refetch();
            }
        }
    }

    /// Whether `offset` of this generation is received and not yet finished: a record
    /// forgotten by a rewind is not (it will come again), nor one of a sealed partition.
    pub fn tracks(&self, key: &PartitionKey, generation: u64, offset: i64) -> bool {
        self.partitions
            .get(key)
            .is_some_and(|a| a.generation == generation && !a.sealed && a.offsets.tracks(offset))
    }

    /// The current generation of a partition, if it is assigned and not being revoked.
    pub fn generation(&self, key: &PartitionKey) -> Option<u64> {
        self.partitions
            .get(key)
            .filter(|a| !a.revoking)
            .map(|a| a.generation)
    }

    /// Records received and not yet committable, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|a| a.offsets.len()).sum()
    }
}

#[cfg(test)]
impl OffsetTracker {
    /// A tracker holding `key`, with offsets `0..n` received and under way; and the
    /// partition's generation.
    pub(crate) fn with_work_under_way(key: &PartitionKey, n: i64) -> (Self, u64) {
        let mut t = OffsetTracker::default();
        let g = t.assign(key.clone());
        for o in 0..n {
            t.begin(key, o);
            t.start(key, g, o);
        }
        (t, g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition that has received `offsets`.
    fn received(offsets: &[i64]) -> PartitionOffsets {
        let mut p = PartitionOffsets::default();
        for &o in offsets {
            p.begin(o);
        }
        p
    }

    /// Progress with `next` and the ranges done after it.
    fn done_after(next: i64, done: &[(i64, i64)]) -> Progress {
        Progress {
            next,
            done: done.to_vec(),
        }
    }

    #[test]
    fn in_order_completion_advances_each_time() {
        let mut p = PartitionOffsets::default();
        for o in 10..13 {
            assert!(p.begin(o));
        }
        assert_eq!(p.complete(10), Some(11));
        assert_eq!(p.complete(11), Some(12));
        assert_eq!(p.complete(12), Some(13));
        assert!(p.is_empty());
    }

    #[test]
    fn out_of_order_commits_only_the_contiguous_prefix() {
        let mut p = received(&[0, 1, 2, 3]);
        assert_eq!(p.complete(2), None);
        assert_eq!(p.complete(3), None);
        assert_eq!(p.complete(1), None);
        assert_eq!(p.complete(0), Some(4));
        assert!(p.is_empty());
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        // Compaction and transaction markers leave holes in the offsets a consumer sees.
        let mut p = received(&[5, 9]);
        assert_eq!(p.complete(9), None);
        assert_eq!(p.complete(5), Some(10));
    }

    #[test]
    fn a_record_fetched_again_after_its_completion_is_not_handed_out() {
        let mut p = PartitionOffsets::default();
        for o in 10..13 {
            assert!(p.begin(o));
            p.start(o);
            p.complete(o);
        }
        assert!(p.is_empty(), "nothing in flight");
        assert!(!p.begin(11), "done already");
        assert!(!p.begin(12));
        assert!(p.begin(13));
    }

    #[test]
    fn repeats_and_unknown_offsets_are_ignored() {
        let mut p = PartitionOffsets::default();
        assert!(p.begin(1));
        assert!(!p.begin(1));
        assert!(!p.begin(0));
        assert_eq!(p.complete(7), None);
        assert_eq!(p.complete(1), Some(2));
        assert_eq!(p.complete(1), None);
    }

    #[test]
    fn stale_generation_is_ignored_after_reassignment() {
        let (mut t, key) = (OffsetTracker::default(), key0());
        let g1 = t.assign(key.clone());
        assert_eq!(t.begin(&key, 0), Some(g1));
        t.revoke(&key);
        let g2 = t.assign(key.clone());
        assert_ne!(g1, g2);
        assert_eq!(t.begin(&key, 0), Some(g2));
        assert_eq!(t.complete(&key, g1, 0), None);
        assert_eq!(t.complete(&key, g2, 0), Some(1));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn revocation_lets_work_under_way_complete_then_reports_the_commit_point() {
        let (mut t, key) = (OffsetTracker::default(), key0());
        let g = t.begin(&key, 0).unwrap();
        for o in 1..5 {
            t.begin(&key, o);
        }
        for o in 0..4 {
            t.start(&key, g, o);
        }
        assert_eq!(t.complete(&key, g, 0), Some(1));
        t.start_revoke(&key);
        // Nothing new is current, but completions still count.
        assert_eq!(t.generation(&key), None);
        assert_eq!(t.open_in(std::slice::from_ref(&key)), 3);
        assert_eq!(t.complete(&key, g, 1), Some(2));
        t.release(&key, g, 2);
        assert_eq!(t.complete(&key, g, 3), None);
        // Offset 4 was never taken up: it does not hold the revocation back.
        assert_eq!(t.open_in(std::slice::from_ref(&key)), 0);
        // The released offset 2 is never passed: its next owner processes it again.
        // Offset 3 is done: whoever gets the partition next skips it.
        assert_eq!(t.revoke(&key), Some(done_after(2, &[(3, 3)])));
        assert_eq!(t.revoke(&key), None);
    }

    #[test]
    fn a_sealed_partition_neither_writes_nor_completes_what_is_under_way() {
        let key = key0();
        let (mut t, g) = OffsetTracker::with_work_under_way(&key, 3);
        t.complete(&key, g, 0);
        t.start_revoke(&key);
        assert!(t.tracks(&key, g, 1), "under way during the grace period");
        t.complete(&key, g, 1);
        t.seal(&key);
        // Record 2 finishes after the hand-over's commit was taken: it may not write its
        // result (is_held is false), and its offset stays open for the next owner.
        assert!(!t.tracks(&key, g, 2));
        assert_eq!(t.complete(&key, g, 2), None);
        assert_eq!(t.revoke(&key), Some(done_after(2, &[])));
    }

    fn key0() -> PartitionKey {
        PartitionKey {
            topic: "t".into(),
            partition: 0,
        }
    }

    #[test]
    fn a_partition_that_comes_back_skips_what_it_knew_was_done() {
        let key = key0();
        let (mut t, g) = OffsetTracker::with_work_under_way(&key, 6);
        for o in [0, 1, 3, 4] {
            t.complete(&key, g, o);
        }
        let progress = t.revoke(&key).unwrap();
        assert_eq!(progress, done_after(2, &[(3, 4)]));
        t.retain(key.clone(), progress);
        // The group's committed offset is older (0): what was done is skipped, not redone.
        let g2 = t.assign(key.clone());
        let handed: Vec<i64> = (0..7).filter(|o| t.begin(&key, *o).is_some()).collect();
        assert_eq!(handed, [2, 5, 6]);
        assert_eq!(t.progress_of(&key), Some(done_after(2, &[(3, 4)])));
        t.complete(&key, g2, 2);
        assert_eq!(t.progress_of(&key), Some(Progress::at(5)));
    }

    #[test]
    fn records_done_behind_an_unfinished_first_record_are_reported() {
        let (mut t, key) = (OffsetTracker::default(), key0());
        let g = t.assign(key.clone());
        assert_eq!(t.progress_of(&key), None, "nothing received");
        for o in 7..10 {
            t.begin(&key, o);
        }
        t.complete(&key, g, 8);
        assert_eq!(t.progress_of(&key), Some(done_after(7, &[(8, 8)])));
    }

    #[test]
    fn committed_metadata_adds_what_another_owner_did() {
        let (mut t, key) = (OffsetTracker::default(), key0());
        let g = t.assign(key.clone());
        t.resume(&key, &done_after(10, &[(12, 12)]));
        let handed: Vec<i64> = (10..14).filter(|o| t.begin(&key, *o).is_some()).collect();
        assert_eq!(handed, [10, 11, 13]);
        t.complete(&key, g, 11);
        assert_eq!(t.progress_of(&key), Some(done_after(10, &[(11, 12)])));
        t.complete(&key, g, 10);
        assert_eq!(t.progress_of(&key), Some(Progress::at(13)));
    }

    #[test]
    fn a_released_offset_cannot_be_completed_later() {
        let mut p = received(&[0]);
        p.release(0);
        assert_eq!(p.complete(0), None);
        assert_eq!(p.open(), 0);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn a_rewind_forgets_waiting_records_so_they_can_be_fetched_again() {
        let mut p = PartitionOffsets::default();
        for o in 10..15 {
            assert!(p.begin(o));
        }
        p.start(10);
        assert!(!p.can_rewind(10), "10 is under way");
        assert!(!p.can_rewind(9), "not received");
        assert!(p.rewind(12));
        assert!(p.tracks(11) && !p.tracks(12) && !p.tracks(14));
        assert!(!p.begin(13), "prefetched before the rewind: it comes again");
        p.refetch();
        // Fetched again from 12, in order.
        assert!(p.begin(12));
        assert_eq!(p.complete(10), Some(11));
        assert_eq!(p.complete(11), Some(12));
        assert_eq!(p.complete(12), Some(13), "the commit point never skips 12");
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::default();
        let a = PartitionKey {
            topic: "t".into(),
            partition: 0,
        };
        let b = PartitionKey {
            topic: "t".into(),
            partition: 1,
        };
        let ga = t.begin(&a, 0).unwrap();
        let gb = t.begin(&b, 0).unwrap();
        t.begin(&a, 1);
        assert_eq!(t.complete(&b, gb, 0), Some(1));
        assert_eq!(t.complete(&a, ga, 1), None);
        // Offset 1 of `a` is complete but not committable until 0 is.
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.complete(&a, ga, 0), Some(2));
        assert_eq!(t.in_flight(), 0);
    }
}
