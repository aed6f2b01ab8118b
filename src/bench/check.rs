//! Per-subscriber delivery checks (issue #18 item 1): every message a subscriber gets is
//! checked against what was published, so a run reports gaps (published, never
//! delivered), duplicates and reordering per subscriber, not only in total.
//!
//! Sequence numbers are global (one counter shared by the publishers) and each publisher
//! has one publish in flight, so a publisher's messages must arrive in its order; across
//! publishers no order is promised.

/// A set of sequence numbers, one bit each, grown as needed.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
}

impl SeqSet {
    /// Adds `seq`; false when it was there already.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (w, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let fresh = self.words[w] & bit == 0;
        self.words[w] |= bit;
        fresh
    }

    /// How many members of `other` are not in this set.
    pub fn missing_from(&self, other: &SeqSet) -> u64 {
        other
            .words
            .iter()
            .enumerate()
            .map(|(i, &w)| (w & !self.words.get(i).copied().unwrap_or(0)).count_ones() as u64)
            .sum()
    }
}

/// What one delivery was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First delivery, in its publisher's order.
    Fresh,
    /// Delivered before.
    Duplicate,
    /// First delivery, but after a later message of the same publisher.
    Reordered,
}

/// One subscriber's record of what it got.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    seen: SeqSet,
    /// Per publisher: the highest sequence number delivered, plus one.
    last: Vec<u64>,
}

impl Tracker {
    /// Records the delivery of message `seq` from publisher `source`.
    pub fn record(&mut self, source: u32, seq: u64) -> Verdict {
        if !self.seen.insert(seq) {
            return Verdict::Duplicate;
        }
        let source = source as usize;
        if source >= self.last.len() {
            self.last.resize(source + 1, 0);
        }
        let last = &mut self.last[source];
        if seq + 1 > *last {
            *last = seq + 1;
            Verdict::Fresh
        } else {
            Verdict::Reordered
        }
    }

    /// Messages published (successfully) that this subscriber never got.
    pub fn gaps(&self, published: &SeqSet) -> u64 {
        self.seen.missing_from(published)
    }
}

/// Totals over the subscribers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Messages missing, summed over subscribers.
    pub gaps: u64,
    /// Subscribers missing at least one message.
    pub subscribers_with_gaps: u64,
    /// Duplicate deliveries.
    pub duplicates: u64,
    /// Deliveries out of their publisher's order.
    pub reordered: u64,
}

/// Counts per subscriber while receiving, and sums up at the end.
#[derive(Debug, Default)]
pub struct Checker {
    /// Duplicates and reorderings so far.
    pub totals: Totals,
}

impl Checker {
    /// Counts one verdict.
    pub fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Fresh => {}
            Verdict::Duplicate => self.totals.duplicates += 1,
            Verdict::Reordered => self.totals.reordered += 1,
        }
    }

    /// Adds the gaps of every subscriber against what was published.
    pub fn finish<'a>(
        &self,
        trackers: impl IntoIterator<Item = &'a Tracker>,
        published: &SeqSet,
    ) -> Totals {
        let mut totals = self.totals;
        for t in trackers {
            let gaps = t.gaps(published);
            totals.gaps += gaps;
            totals.subscribers_with_gaps += u64::from(gaps > 0);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishes 0..n alternating over two publishers (even seq: publisher 0).
    fn published(n: u64) -> SeqSet {
        let mut s = SeqSet::default();
        for i in 0..n {
            s.insert(i);
        }
        s
    }

    fn deliver(order: &[u64]) -> (Tracker, Checker) {
        let mut t = Tracker::default();
        let mut c = Checker::default();
        for &seq in order {
            c.count(t.record((seq % 2) as u32, seq));
        }
        (t, c)
    }

    // issue #18 item 1: a clean run shows nothing; interleaving across publishers is
    // not reordering.
    #[test]
    fn a_clean_delivery_has_no_findings() {
        let (t, c) = deliver(&[1, 0, 3, 2, 4, 5, 7, 6, 8, 9]);
        assert_eq!(c.finish([&t], &published(10)), Totals::default());
    }

    // issue #18 item 1: each fault is injected and caught, in the right counter.
    #[test]
    fn an_injected_gap_is_caught_per_subscriber() {
        let whole = deliver(&[0, 1, 2, 3, 4, 5]).0;
        let (holed, c) = deliver(&[0, 1, 3, 4, 5]); // 2 never arrives
        let totals = c.finish([&whole, &holed], &published(6));
        assert_eq!(
            totals,
            Totals {
                gaps: 1,
                subscribers_with_gaps: 1,
                ..Totals::default()
            }
        );
    }

    #[test]
    fn an_injected_duplicate_is_caught() {
        let (t, c) = deliver(&[0, 1, 2, 2, 3]);
        let totals = c.finish([&t], &published(4));
        assert_eq!(totals.duplicates, 1);
        assert_eq!((totals.gaps, totals.reordered), (0, 0));
    }

    #[test]
    fn an_injected_reordering_is_caught() {
        // Publisher 0 sent 0, 2, 4; its 4 arrives before its 2.
        let (t, c) = deliver(&[0, 1, 4, 3, 2, 5]);
        let totals = c.finish([&t], &published(6));
        assert_eq!(totals.reordered, 1);
        assert_eq!((totals.gaps, totals.duplicates), (0, 0));
    }

    #[test]
    fn failed_publishes_are_not_gaps() {
        let mut ok = published(5);
        let mut all_but_3 = SeqSet::default();
        for i in [0, 1, 2, 4] {
            all_but_3.insert(i);
        }
        let (t, c) = deliver(&[0, 1, 2, 4]);
        assert_eq!(c.finish([&t], &all_but_3).gaps, 0);
        assert!(!ok.insert(4), "already there");
        assert_eq!(c.finish([&t], &ok).gaps, 1);
    }
}
