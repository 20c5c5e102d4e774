//! Pub/sub in the broker: subscriptions, routing, held-back publish
//! acknowledgements, and dropping clients that stopped reading.

use super::{Core, Deferred};
use crate::broker::{cmd, hex, reject};
use crate::protocol::{self, Malformed, Parsed};
use busbar_core::{Kind, Pattern};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

impl Core {
    pub(super) fn subscribe(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [sub, pattern] = protocol::args(args, "SUBSCRIBE")?;
        let sub = protocol::read_u64(&sub, "subscription id")?;
        let pattern = protocol::read_text(&pattern, "pattern")?;
        let pattern =
            Pattern::new(pattern).map_err(|err| Malformed(format!("bad pattern: {err}")))?;
        self.subs.insert(key, sub, pattern);
        if let Some(client) = self.clients.get_mut(&key) {
            client.subs.insert(sub);
        }
        self.send(
            key,
            protocol::message(cmd::SUBSCRIBED, [protocol::u64_frame(sub)]),
        );
        Ok(())
    }

    pub(super) fn unsubscribe(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [sub] = protocol::args(args, "UNSUBSCRIBE")?;
        let sub = protocol::read_u64(&sub, "subscription id")?;
        self.subs.remove(key, sub);
        if let Some(client) = self.clients.get_mut(&key) {
            client.subs.remove(&sub);
        }
        Ok(())
    }

    pub(super) fn publish(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let Some((seq, envelopes)) = args.split_first() else {
            return Err(Malformed("PUBLISH: missing the batch number".into()));
        };
        let seq = protocol::read_u64(seq, "batch number")?;
        if envelopes.is_empty() {
            self.refuse_event(
                key,
                seq,
                0,
                Malformed("PUBLISH: the batch holds no envelope".into()),
            );
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        // Per destination client, its events of this batch, in order.
        let mut routed: Vec<(u64, Vec<(Bytes, Bytes)>)> = Vec::new();
        for (index, envelope) in envelopes.iter().enumerate() {
            let topic = match protocol::envelope(envelope, self.config.max_envelope) {
                Ok(view) if view.kind == Kind::Event => view.subject,
                Ok(_) => {
                    let why = Malformed("PUBLISH: the envelope is not an event (kind 1)".into());
                    self.refuse_event(key, seq, index, why);
                    continue;
                }
                Err(why) => {
                    self.refuse_event(key, seq, index, why);
                    continue;
                }
            };
            self.counters.events_in.fetch_add(1, Ordering::Relaxed);
            self.subs.matching(topic, &mut scratch);
            let mut i = 0;
            while i < scratch.len() {
                let client = scratch[i].0;
                let mut j = i + 1;
                while j < scratch.len() && scratch[j].0 == client {
                    j += 1;
                }
                let subs = if j - i == 1 {
                    scratch[i].2.clone()
                } else {
                    let ids: Vec<u64> = scratch[i..j].iter().map(|t| t.1).collect();
                    protocol::u64s_frame(&ids)
                };
                i = j;
                let pair = (subs, envelope.clone());
                match routed.iter_mut().find(|(c, _)| *c == client) {
                    Some((_, events)) => events.push(pair),
                    None => routed.push((client, vec![pair])),
                }
            }
        }
        self.scratch = scratch;
        let mut blockers: Vec<u64> = Vec::new();
        for (client_key, events) in routed {
            let Some(client) = self.clients.get(&client_key) else {
                continue;
            };
            self.counters
                .events_out
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            if client.outbox.events(events) {
                blockers.push(client_key);
            }
        }
        if blockers.is_empty() {
            self.send(
                key,
                protocol::message(cmd::PUBACK, [protocol::u64_frame(seq)]),
            );
        } else {
            self.counters.held_batches.fetch_add(1, Ordering::Relaxed);
            self.deferred.push(Deferred {
                publisher: key,
                seq,
                blockers,
            });
        }
        Ok(())
    }

    /// One envelope of a PUBLISH batch is not routed: counted, logged, and the
    /// publisher told which (before the batch's PUBACK).
    fn refuse_event(&mut self, key: u64, seq: u64, index: usize, why: Malformed) {
        self.reject_from(key, &why);
        self.send(
            key,
            protocol::message(
                cmd::PUBLISH_ERROR,
                [
                    protocol::u64_frame(seq),
                    protocol::u32_frame(u32::try_from(index).unwrap_or(u32::MAX)),
                    protocol::text_frame(&why.0),
                ],
            ),
        );
    }

    pub(super) fn reject_from(&self, key: u64, why: &Malformed) {
        let identity = self
            .clients
            .get(&key)
            .map(|c| c.identity.clone())
            .unwrap_or_default();
        reject(&self.counters, &identity, why);
    }

    /// Acknowledges held publish batches whose slow subscribers have drained.
    pub(super) fn release_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let clients = &self.clients;
        let mut release = Vec::new();
        self.deferred.retain_mut(|d| {
            d.blockers
                .retain(|b| clients.get(b).is_some_and(|c| c.outbox.flow.above_high()));
            if d.blockers.is_empty() {
                release.push((d.publisher, d.seq));
                false
            } else {
                true
            }
        });
        for (publisher, seq) in release {
            self.send(
                publisher,
                protocol::message(cmd::PUBACK, [protocol::u64_frame(seq)]),
            );
        }
    }

    /// Drops every client that stopped reading (see [`Flow::stalled`]): what
    /// is queued for it would otherwise hold its publishers back for good, or
    /// grow without bound. Its connection is closed too, so nothing more is
    /// queued for it.
    ///
    /// [`Flow::stalled`]: crate::broker::flow::Flow::stalled
    pub(super) fn drop_stalled(&mut self, now: Instant) {
        let limit = self.config.stall_limit;
        let stalled: Vec<(u64, String)> = self
            .clients
            .iter()
            .filter_map(|(key, c)| Some((*key, c.outbox.flow.stalled(now, limit)?)))
            .collect();
        for (key, why) in stalled {
            let Some(client) = self.clients.get(&key) else {
                continue;
            };
            let identity = client.identity.clone();
            tracing::warn!(
                client = key,
                peer = %hex(&identity),
                queued_events = client.outbox.flow.queued(),
                "client stopped reading ({why}); dropping it"
            );
            self.counters
                .stalled_clients
                .fetch_add(1, Ordering::Relaxed);
            self.drop_client(key, "it stopped reading");
            if let Ok(peer) = zeromq::util::PeerIdentity::try_from(identity) {
                self.pump.disconnect(peer);
            }
        }
    }
}
