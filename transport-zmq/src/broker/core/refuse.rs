//! Answers to refused commands: every command whose number the broker could
//! read (request number, subscription id, provider id, request id) is answered,
//! so that no client waits for its timeout on a request the broker dropped.

use super::Core;
use crate::broker::cmd;
use crate::protocol::{self, Malformed};
use bytes::Bytes;

impl Core {
    /// Counts and logs a refused command, and answers it when it can be named.
    /// (PUBLISH names its refused envelopes itself, REPLY fails its call.)
    pub(super) fn refuse(&mut self, key: u64, command: u8, args: &[Bytes], why: &Malformed) {
        self.reject_from(key, why);
        let first = args.first();
        let number = || first.and_then(|frame| protocol::read_u64(frame, "").ok());
        let (answer, id) = match command {
            cmd::PUT | cmd::FETCH | cmd::LEN => (cmd::ERROR, number()),
            // Request number 0: no answer wanted.
            cmd::ACK | cmd::NACK => (cmd::ERROR, number().filter(|&req| req != 0)),
            cmd::SUBSCRIBE => (cmd::SUBSCRIBE_ERROR, number()),
            cmd::SERVE => (cmd::SERVE_ERROR, number()),
            cmd::CALL | cmd::CALL_ALL => {
                if let Some(request) = first.and_then(|frame| protocol::request_id(frame)) {
                    self.send(
                        key,
                        protocol::message(
                            cmd::CALL_ERROR,
                            [protocol::id_frame(request), protocol::text_frame(&why.0)],
                        ),
                    );
                }
                return;
            }
            _ => return,
        };
        if let Some(id) = id {
            self.send(
                key,
                protocol::message(
                    answer,
                    [protocol::u64_frame(id), protocol::text_frame(&why.0)],
                ),
            );
        }
    }
}
