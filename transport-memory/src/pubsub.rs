//! Subscription table of one hub: exact topics in a map, patterns in a list.

use busbar_core::mailbox::{Delivered, MailboxSender};
use busbar_core::{Envelope, Name, Pattern};
use dashmap::DashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) owner: u64,
    pub(crate) pattern: Pattern,
    pub(crate) sender: MailboxSender,
}

/// Literal subscriptions are found by topic; wildcard ones are scanned.
#[derive(Default)]
pub(crate) struct Table {
    exact: DashMap<String, Vec<Entry>>,
    patterns: RwLock<Vec<Entry>>,
    pattern_count: AtomicUsize,
}

impl Table {
    pub(crate) fn insert(&self, entry: Entry) {
        if entry.pattern.is_literal() {
            self.exact
                .entry(entry.pattern.as_str().to_owned())
                .or_default()
                .push(entry);
        } else {
            let mut patterns = self.patterns.write().unwrap_or_else(|p| p.into_inner());
            patterns.push(entry);
            self.pattern_count.store(patterns.len(), Ordering::Release);
        }
    }

    /// Removes the entries `keep` rejects, returning them so their senders drop
    /// outside any lock.
    pub(crate) fn remove_where(
        &self,
        pattern: Option<&Pattern>,
        reject: impl Fn(&Entry) -> bool,
    ) -> Vec<Entry> {
        let mut removed = Vec::new();
        let mut take = |entries: &mut Vec<Entry>| {
            let mut i = 0;
            while i < entries.len() {
                if reject(&entries[i]) {
                    removed.push(entries.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        };
        match pattern {
            Some(p) if p.is_literal() => {
                if let Some(mut entries) = self.exact.get_mut(p.as_str()) {
                    take(&mut entries);
                }
                self.exact
                    .remove_if(p.as_str(), |_, entries| entries.is_empty());
            }
            Some(_) => self.take_patterns(&mut take),
            None => {
                for mut entries in self.exact.iter_mut() {
                    take(&mut entries);
                }
                self.exact.retain(|_, entries| !entries.is_empty());
                self.take_patterns(&mut take);
            }
        }
        removed
    }

    fn take_patterns(&self, take: &mut impl FnMut(&mut Vec<Entry>)) {
        let mut patterns = self.patterns.write().unwrap_or_else(|p| p.into_inner());
        take(&mut patterns);
        self.pattern_count.store(patterns.len(), Ordering::Release);
    }

    /// Hands `event` to every matching subscription and says how many it reached
    /// (a subscriber that lagged was reached: it is told what it missed). Each
    /// subscription is one entry, so it gets the event once however it matches.
    pub(crate) fn publish(&self, event: &Envelope) -> usize {
        let topic: &Name = &event.subject;
        let mut reached = 0;
        let mut closed = false;
        let mut deliver = |entry: &Entry| match entry.sender.deliver(event.clone()) {
            Delivered::Closed => closed = true,
            Delivered::Queued | Delivered::Dropped => reached += 1,
        };
        if let Some(entries) = self.exact.get(topic.as_str()) {
            entries.iter().for_each(&mut deliver);
        }
        if self.pattern_count.load(Ordering::Acquire) > 0 {
            let patterns = self.patterns.read().unwrap_or_else(|p| p.into_inner());
            patterns
                .iter()
                .filter(|e| e.pattern.matches(topic))
                .for_each(&mut deliver);
        }
        if closed {
            // A subscriber dropped its stream before its guard ran; forget it.
            drop(self.remove_where(None, |e| e.sender.is_closed()));
        }
        reached
    }
}
