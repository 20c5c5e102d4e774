//! Answers go back the way commands came: the answers to one BATCH travel in
//! BROKER_BATCH messages to a client whose HELLO listed the `batch` feature,
//! one message instead of one per command.

use super::Core;
use crate::broker::{cmd, reject};
use crate::protocol::{self, Malformed};
use bytes::Bytes;

/// Messages for one client, held while its BATCH is handled.
pub(super) struct Collect {
    pub(super) key: u64,
    messages: Vec<Vec<Bytes>>,
}

impl Core {
    /// Handles the commands of one BATCH, in order.
    pub(super) fn batch(&mut self, identity: &Bytes, commands: Vec<(u8, &[Bytes])>) {
        let key = self.by_identity.get(identity).copied();
        if let Some(key) = key.filter(|key| self.clients.get(key).is_some_and(|c| c.batches)) {
            self.collecting = Some(Collect {
                key,
                messages: Vec::new(),
            });
        }
        for (command, args) in commands {
            if command == cmd::HELLO {
                let why = Malformed("BATCH: HELLO must come alone".into());
                reject(&self.counters, identity, &why);
                continue;
            }
            if command == cmd::PUBLISH {
                // Its events may go to this very client: they must not overtake
                // the answers to the commands before it.
                self.flush_collected(true);
            }
            self.command(identity, command, args);
        }
        self.flush_collected(false);
    }

    /// Sends a message to a client (held back while its BATCH is handled).
    pub(super) fn send(&mut self, key: u64, frames: Vec<Bytes>) {
        if let Some(collect) = self.collecting.as_mut().filter(|c| c.key == key) {
            collect.messages.push(frames);
            return;
        }
        if let Some(client) = self.clients.get(&key) {
            client.outbox.send(frames);
        }
    }

    /// Sends what was held back for the client of the BATCH being handled;
    /// with `go_on`, holds back again what comes next.
    pub(super) fn flush_collected(&mut self, go_on: bool) {
        let Some(Collect { key, mut messages }) = self.collecting.take() else {
            return;
        };
        if let Some(client) = self.clients.get(&key) {
            while !messages.is_empty() {
                let rest = messages.split_off(messages.len().min(protocol::MAX_BATCH_COMMANDS));
                let mut chunk = std::mem::replace(&mut messages, rest);
                let frames = if chunk.len() == 1 {
                    chunk.pop().unwrap_or_default()
                } else {
                    protocol::batch(cmd::BROKER_BATCH, chunk)
                };
                client.outbox.send(frames);
            }
        }
        if go_on {
            self.collecting = Some(Collect {
                key,
                messages: Vec::new(),
            });
        }
    }
}
