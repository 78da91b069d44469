//! Which offset of a partition may be committed: the one after the highest offset below which
//! every message handed out has reached its outcome. Messages of a partition may finish out
//! of order (key ordering runs keys in parallel), and offsets may have gaps (compaction,
//! transaction markers), so "contiguous" means contiguous among the offsets handed out.
//! Pure: no Kafka here.

use std::collections::BTreeMap;

/// An offset arrived that is not above the last one handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("offset {offset} is not after {last}")]
pub struct OutOfOrder {
    /// The offset refused.
    pub offset: i64,
    /// The last one accepted.
    pub last: i64,
}

/// The completion state of one partition's messages.
#[derive(Debug, Clone, Default)]
pub struct OffsetTracker {
    /// Offsets handed out and not yet below the commit position → finished?
    pending: BTreeMap<i64, bool>,
    /// The last offset handed out.
    last: Option<i64>,
    /// The commit position: the next offset to consume after a restart.
    position: Option<i64>,
}

impl OffsetTracker {
    /// A tracker with nothing handed out.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` was handed out for processing. Offsets must increase.
    pub fn dispatched(&mut self, offset: i64) -> Result<(), OutOfOrder> {
        if let Some(last) = self.last
            && offset <= last
        {
            return Err(OutOfOrder { offset, last });
        }
        self.last = Some(offset);
        self.pending.insert(offset, false);
        Ok(())
    }

    /// Records that `offset` reached its outcome. Returns the new commit position (the offset
    /// after the last contiguous finished one) when it moved, `None` otherwise (including for
    /// offsets never handed out, or finished twice).
    pub fn completed(&mut self, offset: i64) -> Option<i64> {
        match self.pending.get_mut(&offset) {
            Some(done) if !*done => *done = true,
            _ => return None,
        }
        let mut moved = None;
        while let Some(entry) = self.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            let (finished, _) = entry.remove_entry();
            moved = Some(finished + 1);
        }
        if moved.is_some() {
            self.position = moved;
        }
        moved
    }

    /// The commit position so far, if any message finished.
    pub fn position(&self) -> Option<i64> {
        self.position
    }

    /// Messages handed out whose offset is not committable yet (unfinished, or finished but
    /// behind an unfinished one).
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_position_waits_for_the_oldest_unfinished_message() {
        let mut t = OffsetTracker::new();
        for o in [10, 11, 12] {
            t.dispatched(o).unwrap();
        }
        assert_eq!(t.completed(11), None);
        assert_eq!(t.completed(12), None);
        assert_eq!(t.position(), None);
        assert_eq!(t.completed(10), Some(13));
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn gaps_between_offsets_do_not_hold_the_position() {
        let mut t = OffsetTracker::new();
        t.dispatched(5).unwrap();
        t.dispatched(9).unwrap();
        assert_eq!(t.completed(5), Some(6));
        assert_eq!(t.completed(9), Some(10));
    }

    #[test]
    fn unknown_repeated_and_backward_offsets_change_nothing() {
        let mut t = OffsetTracker::new();
        t.dispatched(1).unwrap();
        assert_eq!(t.completed(7), None);
        assert_eq!(t.completed(1), Some(2));
        assert_eq!(t.completed(1), None);
        assert_eq!(t.dispatched(1), Err(OutOfOrder { offset: 1, last: 1 }));
        assert_eq!(t.position(), Some(2));
    }

    #[test]
    fn a_message_that_never_finishes_holds_the_position_forever() {
        let mut t = OffsetTracker::new();
        for o in 0..5 {
            t.dispatched(o).unwrap();
        }
        for o in [0, 2, 3, 4] {
            t.completed(o);
        }
        assert_eq!(t.position(), Some(1));
        assert_eq!(t.outstanding(), 4);
    }

    /// Increasing offsets with gaps, and an order in which they finish.
    fn offsets_and_completion_order() -> impl Strategy<Value = (Vec<i64>, Vec<usize>)> {
        proptest::collection::vec(1i64..4, 1..40).prop_flat_map(|steps| {
            let offsets: Vec<i64> = steps
                .iter()
                .scan(100i64, |acc, s| {
                    *acc += s;
                    Some(*acc)
                })
                .collect();
            let order: Vec<usize> = (0..offsets.len()).collect();
            (Just(offsets), Just(order).prop_shuffle())
        })
    }

    proptest! {
        #[test]
        fn the_position_is_always_just_after_the_contiguous_finished_prefix(
            (offsets, order) in offsets_and_completion_order(),
            finish in 0usize..50,
        ) {
            let mut t = OffsetTracker::new();
            for o in &offsets {
                t.dispatched(*o).unwrap();
            }
            let finish = finish.min(order.len());
            let mut done = vec![false; offsets.len()];
            let mut last_position = None;
            for &i in &order[..finish] {
                let moved = t.completed(offsets[i]);
                done[i] = true;
                let prefix = done.iter().take_while(|d| **d).count();
                let expected = (prefix > 0).then(|| offsets[prefix - 1] + 1);
                prop_assert_eq!(t.position(), expected);
                // It only moves forward, and says so exactly when it moves.
                prop_assert!(t.position() >= last_position);
                prop_assert_eq!(moved.is_some(), t.position() != last_position);
                last_position = t.position();
                // Never past an unfinished message.
                if let Some(p) = t.position() {
                    for (j, o) in offsets.iter().enumerate() {
                        if *o < p {
                            prop_assert!(done[j]);
                        }
                    }
                }
            }
            if finish == offsets.len() {
                prop_assert_eq!(t.position(), offsets.last().map(|o| o + 1));
                prop_assert_eq!(t.outstanding(), 0);
            }
        }
    }
}
