//! Queues in the broker: items, waiting consumers, held deliveries.

use super::{Core, Held, Item, Timer, Waiter};
use crate::broker::cmd;
use crate::protocol::{self, Malformed, Parsed};
use busbar_core::Kind;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How many tags redelivered after their visibility timeout the broker
/// remembers, to tell a late ACK so (a linear scan, on errors only).
const EXPIRED_MEMORY: usize = 4096;

impl Core {
    pub(super) fn put(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [req, envelope] = protocol::args(args, "PUT")?;
        let req = protocol::read_u64(&req, "request number")?;
        let view = protocol::envelope(&envelope, self.config.max_envelope)?;
        if view.kind != Kind::QueueItem {
            return Err(Malformed("PUT: the envelope is not a queue item".into()));
        }
        let queue = view.subject.to_owned();
        self.queues
            .entry(queue.clone())
            .or_default()
            .items
            .push_back(Item {
                envelope,
                attempt: 0,
            });
        self.send(key, protocol::message(cmd::OK, [protocol::u64_frame(req)]));
        self.dispatch(&queue);
        Ok(())
    }

    pub(super) fn fetch(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [req, queue, timeout, visibility] = protocol::args(args, "FETCH")?;
        let req = protocol::read_u64(&req, "request number")?;
        let queue = protocol::read_text(&queue, "queue")?.to_owned();
        if let Err(err) = busbar_core::Name::new(&queue) {
            return Err(Malformed(format!("FETCH: {err}")));
        }
        let timeout = Duration::from_millis(protocol::read_u32(&timeout, "timeout")? as u64);
        let visibility =
            Duration::from_millis(protocol::read_u32(&visibility, "visibility")? as u64);
        self.queues
            .entry(queue.clone())
            .or_default()
            .waiters
            .push_back(Waiter {
                client: key,
                req,
                visibility,
            });
        self.schedule(
            timeout,
            Timer::Waiter {
                queue: queue.clone(),
                client: key,
                req,
            },
        );
        self.dispatch(&queue);
        Ok(())
    }

    pub(super) fn waiter_expired(&mut self, queue: &str, client: u64, req: u64) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let before = q.waiters.len();
        q.waiters.retain(|w| (w.client, w.req) != (client, req));
        if q.waiters.len() != before {
            self.send(
                client,
                protocol::message(cmd::EMPTY, [protocol::u64_frame(req)]),
            );
        }
        self.forget_if_idle(queue);
    }

    pub(super) fn cancel(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [req] = protocol::args(args, "CANCEL")?;
        let req = protocol::read_u64(&req, "request number")?;
        for queue in self.queues.values_mut() {
            queue.waiters.retain(|w| (w.client, w.req) != (key, req));
        }
        Ok(())
    }

    pub(super) fn forget_if_idle(&mut self, queue: &str) {
        if self
            .queues
            .get(queue)
            .is_some_and(|q| q.items.is_empty() && q.waiters.is_empty())
        {
            self.queues.remove(queue);
        }
    }

    /// Hands waiting items to waiting consumers.
    pub(super) fn dispatch(&mut self, queue: &str) {
        loop {
            let Some(q) = self.queues.get_mut(queue) else {
                return;
            };
            if q.items.is_empty() || q.waiters.is_empty() {
                break;
            }
            let Some(waiter) = q.waiters.pop_front() else {
                break;
            };
            if !self.clients.contains_key(&waiter.client) {
                continue;
            }
            let Some(mut item) = q.items.pop_front() else {
                break;
            };
            item.attempt += 1;
            if waiter.visibility.is_zero() {
                // A plain get: the item is the consumer's as it leaves (tag 0).
                let frames = protocol::message(
                    cmd::ITEM,
                    [
                        protocol::u64_frame(waiter.req),
                        protocol::u64_frame(0),
                        protocol::u32_frame(item.attempt),
                        item.envelope,
                    ],
                );
                self.send(waiter.client, frames);
                continue;
            }
            let tag = self.next_tag;
            self.next_tag += 1;
            let frames = protocol::message(
                cmd::ITEM,
                [
                    protocol::u64_frame(waiter.req),
                    protocol::u64_frame(tag),
                    protocol::u32_frame(item.attempt),
                    item.envelope.clone(),
                ],
            );
            if let Some(client) = self.clients.get_mut(&waiter.client) {
                client.tags.insert(tag);
            }
            self.send(waiter.client, frames);
            self.held.insert(
                tag,
                Held {
                    queue: queue.to_owned(),
                    item,
                    client: waiter.client,
                },
            );
            self.schedule(waiter.visibility, Timer::Visibility { tag });
        }
        self.forget_if_idle(queue);
    }

    /// RETURN: an item a plain get delivered that nobody took any more.
    pub(super) fn give_back(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [attempt, envelope] = protocol::args(args, "RETURN")?;
        let attempt = protocol::read_u32(&attempt, "attempt")?;
        let view = protocol::envelope(&envelope, self.config.max_envelope)?;
        if view.kind != Kind::QueueItem {
            return Err(Malformed("RETURN: the envelope is not a queue item".into()));
        }
        let queue = view.subject.to_owned();
        tracing::debug!(client = key, %queue, "an item came back unused");
        self.queues
            .entry(queue.clone())
            .or_default()
            .items
            .push_front(Item { envelope, attempt });
        self.dispatch(&queue);
        Ok(())
    }

    /// Puts a held item back at the front of its queue.
    pub(super) fn requeue(&mut self, tag: u64) {
        let Some(held) = self.held.remove(&tag) else {
            return;
        };
        if let Some(client) = self.clients.get_mut(&held.client) {
            client.tags.remove(&tag);
        }
        self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
        self.queues
            .entry(held.queue.clone())
            .or_default()
            .items
            .push_front(held.item);
        self.dispatch(&held.queue);
    }

    pub(super) fn settle(&mut self, key: u64, args: &[Bytes], ack: bool) -> Parsed<()> {
        let [req, tag] = protocol::args(args, if ack { "ACK" } else { "NACK" })?;
        let req = protocol::read_u64(&req, "request number")?;
        let tag = protocol::read_u64(&tag, "delivery tag")?;
        let known = self.held.get(&tag).is_some_and(|h| h.client == key);
        if known {
            if ack {
                self.held.remove(&tag);
                if let Some(client) = self.clients.get_mut(&key) {
                    client.tags.remove(&tag);
                }
            } else {
                self.requeue(tag);
            }
        }
        if req != 0 {
            let answer = if known || !ack {
                protocol::message(cmd::OK, [protocol::u64_frame(req)])
            } else {
                let why = self.unknown_tag(tag);
                protocol::message(
                    cmd::ERROR,
                    [protocol::u64_frame(req), protocol::text_frame(&why)],
                )
            };
            self.send(key, answer);
        }
        Ok(())
    }

    pub(super) fn remember_expired(&mut self, tag: u64) {
        if self.expired.len() == EXPIRED_MEMORY {
            self.expired.pop_front();
        }
        self.expired.push_back(tag);
    }

    /// Why an ACK's tag is not held by its sender, as far as the broker can tell.
    fn unknown_tag(&self, tag: u64) -> String {
        if tag == 0 || tag >= self.next_tag {
            format!("unknown delivery tag {tag}: never issued by this broker")
        } else if self.held.contains_key(&tag) {
            format!("delivery tag {tag} is held by another client")
        } else if self.expired.contains(&tag) {
            format!(
                "delivery tag {tag} was not acknowledged within its visibility timeout: \
                 the item was put back for redelivery"
            )
        } else {
            format!(
                "delivery tag {tag} is no longer held: already settled (acked or nacked), \
                 or put back for redelivery (visibility timeout or lost consumer) too long ago to tell"
            )
        }
    }

    pub(super) fn len(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [req, queue] = protocol::args(args, "LEN")?;
        let req = protocol::read_u64(&req, "request number")?;
        let queue = protocol::read_text(&queue, "queue")?;
        let len = self.queues.get(queue).map_or(0, |q| q.items.len());
        self.send(
            key,
            protocol::message(
                cmd::COUNT,
                [protocol::u64_frame(req), protocol::u64_frame(len as u64)],
            ),
        );
        Ok(())
    }
}
