//! How far a partition's work has come: the next offset to commit (everything before it is
//! done) and the records after it that are done too (they completed out of order).
//!
//! The done records after the commit point travel with the committed offset, as its
//! metadata string, so whoever owns the partition next (this instance after a rebalance or a
//! restart, or another one) skips them instead of processing them again: what is redone is
//! only what was in flight. Kafka limits offset metadata (`offset.metadata.max.bytes`, 4 KiB
//! by default), so the list is cut to fit; records left out of it are processed again, which
//! at-least-once allows.

/// Metadata longer than this is cut (the broker's default limit is 4,096 bytes).
pub const MAX_METADATA_BYTES: usize = 3_800;

/// What this format's metadata starts with; anything else is ignored (another writer's).
const PREFIX: &str = "fw1:";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// The first offset not known to be done.
    pub next: i64,
    /// Done offsets after `next`, as sorted, disjoint, non-adjacent inclusive ranges, each
    /// starting after `next`.
    pub done: Vec<(i64, i64)>,
}

impl Progress {
    pub fn at(next: i64) -> Self {
        Progress {
            next,
            done: Vec::new(),
        }
    }

    /// Whether `offset` is known to be done.
    pub fn is_done(&self, offset: i64) -> bool {
        offset < self.next || self.done.iter().any(|(a, b)| (*a..=*b).contains(&offset))
    }

    /// Everything either knows to be done.
    pub fn merge(&self, other: &Progress) -> Progress {
        let mut ranges: Vec<(i64, i64)> = self.done.iter().chain(&other.done).copied().collect();
        Progress::normalised(self.next.max(other.next), &mut ranges)
    }

    /// Builds a progress from `next` and any done ranges: sorted, merged, and with the
    /// ranges that start at the commit point folded into it.
    pub fn normalised(mut next: i64, ranges: &mut [(i64, i64)]) -> Progress {
        ranges.sort_unstable();
        let mut done: Vec<(i64, i64)> = Vec::new();
        for &(a, b) in ranges.iter() {
            if b < next || a > b {
                continue;
            }
            let a = a.max(next);
            match done.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ if a == next => next = b.saturating_add(1),
                _ => done.push((a, b)),
            }
        }
        Progress { next, done }
    }

    /// The metadata string committed with `next`: `fw1:` then, per done range, its gap after
    /// the previous one and its length, in base 36 (`gap.len`, comma-separated). Cut to
    /// [`MAX_METADATA_BYTES`].
    pub fn encode(&self) -> String {
        let mut out = String::from(PREFIX);
        let mut previous_end = self.next - 1;
        for (i, &(a, b)) in self.done.iter().enumerate() {
            let item = format!(
                "{}{}.{}",
                if i == 0 { "" } else { "," },
                base36((a - previous_end - 1) as u64),
                base36((b - a) as u64)
            );
            if out.len() + item.len() > MAX_METADATA_BYTES {
                break;
            }
            out.push_str(&item);
            previous_end = b;
        }
        out
    }

    /// Reads a committed offset and its metadata. Metadata in another format, or damaged,
    /// counts as no done records after `next`.
    pub fn decode(next: i64, metadata: &str) -> Progress {
        let Some(list) = metadata.strip_prefix(PREFIX) else {
            return Progress::at(next);
        };
        let mut ranges = Vec::new();
        let mut previous_end = next - 1;
        for item in list.split(',').filter(|s| !s.is_empty()) {
            let parsed = item.split_once('.').and_then(|(gap, len)| {
                Some((
                    i64::from_str_radix(gap, 36).ok()?,
                    i64::from_str_radix(len, 36).ok()?,
                ))
            });
            let Some((gap, len)) = parsed.filter(|(g, l)| *g >= 0 && *l >= 0) else {
                return Progress::at(next);
            };
            let Some(a) = previous_end.checked_add(1).and_then(|x| x.checked_add(gap)) else {
                return Progress::at(next);
            };
            let Some(b) = a.checked_add(len) else {
                return Progress::at(next);
            };
            ranges.push((a, b));
            previous_end = b;
        }
        Progress::normalised(next, &mut ranges)
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_ranges_round_trip_through_the_metadata() {
        let p = Progress {
            next: 100,
            done: vec![(102, 102), (105, 140), (1_000, 1_001)],
        };
        let text = p.encode();
        assert!(text.starts_with("fw1:"), "{text}");
        assert_eq!(Progress::decode(100, &text), p);
        assert_eq!(Progress::decode(7, "fw1:"), Progress::at(7));
        assert!(p.is_done(99) && p.is_done(102) && p.is_done(120));
        assert!(!p.is_done(100) && !p.is_done(103) && !p.is_done(141));
    }

    #[test]
    fn foreign_or_damaged_metadata_means_nothing_done_after_the_offset() {
        for text in [
            "",
            "someone else's",
            "fw1:zz",
            "fw1:1.-2",
            "fw1:1.2,!.y",
            "fw1:1",
        ] {
            assert_eq!(Progress::decode(5, text), Progress::at(5), "{text:?}");
        }
        // Ranges that would overflow are refused, not wrapped.
        let huge = format!("fw1:{}.0", base36(u64::MAX / 2));
        assert_eq!(
            Progress::decode(i64::MAX - 3, &huge),
            Progress::at(i64::MAX - 3)
        );
    }

    #[test]
    fn ranges_at_the_commit_point_fold_into_it_and_overlaps_merge() {
        let p = Progress::normalised(
            10,
            &mut [(12, 13), (10, 10), (11, 11), (20, 22), (21, 25), (3, 4)],
        );
        assert_eq!(
            p,
            Progress {
                next: 14,
                done: vec![(20, 25)]
            }
        );
    }

    #[test]
    fn merging_keeps_what_either_knows() {
        let mine = Progress {
            next: 50,
            done: vec![(52, 53)],
        };
        let committed = Progress {
            next: 40,
            done: vec![(45, 51), (60, 60)],
        };
        assert_eq!(
            mine.merge(&committed),
            Progress {
                next: 54,
                done: vec![(60, 60)]
            }
        );
    }

    #[test]
    fn metadata_is_cut_to_the_broker_limit_keeping_the_first_ranges() {
        let done: Vec<(i64, i64)> = (0..2_000).map(|i| (10 + 3 * i, 10 + 3 * i)).collect();
        let p = Progress { next: 0, done };
        let text = p.encode();
        assert!(text.len() <= MAX_METADATA_BYTES, "{}", text.len());
        let back = Progress::decode(0, &text);
        assert!(back.done.len() > 500, "{}", back.done.len());
        assert_eq!(back.done[..], p.done[..back.done.len()]);
    }
}
