//! Which input offsets may be committed.
//!
//! Events of one partition complete out of order (a slow webhook, a fast one); an offset may
//! be committed only when every record before it in its partition has completed. Each
//! partition keeps the offsets it has handed out, in order, and advances over the completed
//! prefix.

use std::collections::{HashMap, VecDeque};

/// One partition's records in flight, in the order they were received.
#[derive(Debug, Default)]
pub struct PartitionOffsets {
    /// (offset, completed), strictly increasing offsets.
    in_flight: VecDeque<(i64, bool)>,
}

impl PartitionOffsets {
    /// Records that `offset` was handed out. Offsets must increase; a repeat or an older
    /// offset (a re-fetch after a seek) is ignored and reported with `false`.
    pub fn begin(&mut self, offset: i64) -> bool {
        if self
            .in_flight
            .back()
            .is_some_and(|(last, _)| *last >= offset)
        {
            return false;
        }
        self.in_flight.push_back((offset, false));
        true
    }

    /// Marks `offset` complete. Returns the next offset to commit (the first one not yet
    /// complete, or one past the last completed) when the committable point moved.
    pub fn complete(&mut self, offset: i64) -> Option<i64> {
        let index = self
            .in_flight
            .binary_search_by_key(&offset, |(o, _)| *o)
            .ok()?;
        self.in_flight[index].1 = true;
        let mut next = None;
        while let Some((o, true)) = self.in_flight.front().copied() {
            self.in_flight.pop_front();
            next = Some(o + 1);
        }
        next
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

#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<PartitionKey, (u64, PartitionOffsets)>,
    next_generation: u64,
}

impl OffsetTracker {
    /// Starts tracking a newly assigned partition; returns its generation.
    pub fn assign(&mut self, key: PartitionKey) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.partitions
            .insert(key, (generation, PartitionOffsets::default()));
        generation
    }

    /// Stops tracking a revoked partition.
    pub fn revoke(&mut self, key: &PartitionKey) {
        self.partitions.remove(key);
    }

    /// Records a received offset; returns the generation to complete it with, or `None`
    /// when the record is a re-delivery already in flight.
    pub fn begin(&mut self, key: &PartitionKey, offset: i64) -> Option<u64> {
        if !self.partitions.contains_key(key) {
            // Records can arrive before the rebalance callback is seen (or without one on
            // manual assignment): start tracking then.
            self.assign(key.clone());
        }
        let (generation, offsets) = self.partitions.get_mut(key)?;
        offsets.begin(offset).then_some(*generation)
    }

    /// Completes an offset; returns the next offset to commit if it moved.
    pub fn complete(&mut self, key: &PartitionKey, generation: u64, offset: i64) -> Option<i64> {
        match self.partitions.get_mut(key) {
            Some((g, offsets)) if *g == generation => offsets.complete(offset),
            _ => None,
        }
    }

    /// The current generation of a partition, if it is assigned.
    pub fn generation(&self, key: &PartitionKey) -> Option<u64> {
        self.partitions.get(key).map(|(g, _)| *g)
    }

    /// Records received and not yet committable, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|(_, o)| o.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut p = PartitionOffsets::default();
        for o in [0, 1, 2, 3] {
            p.begin(o);
        }
        assert_eq!(p.complete(2), None);
        assert_eq!(p.complete(3), None);
        assert_eq!(p.complete(1), None);
        assert_eq!(p.complete(0), Some(4));
        assert!(p.is_empty());
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        // Compaction and transaction markers leave holes in the offsets a consumer sees.
        let mut p = PartitionOffsets::default();
        p.begin(5);
        p.begin(9);
        assert_eq!(p.complete(9), None);
        assert_eq!(p.complete(5), Some(10));
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
        let mut t = OffsetTracker::default();
        let key = PartitionKey {
            topic: "t".into(),
            partition: 0,
        };
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
