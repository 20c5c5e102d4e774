//! RPC in the broker: providers, calls in flight, rerouting.

use super::{Call, Core, Timer, CALL_RETENTION};
use crate::broker::cmd;
use crate::protocol::{self, Malformed, Parsed};
use busbar_core::Kind;
use bytes::Bytes;
use std::time::Duration;

impl Core {
    pub(super) fn serve(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [serve, method] = protocol::args(args, "SERVE")?;
        let serve = protocol::read_u64(&serve, "provider id")?;
        let method = protocol::read_text(&method, "method")?.to_owned();
        if busbar_core::Name::new(&method).is_err() {
            return Err(Malformed(format!("SERVE: invalid method {method:?}")));
        }
        let Some(client) = self.clients.get_mut(&key) else {
            return Ok(());
        };
        if client.serves.insert(serve, method.clone()).is_none() {
            self.providers
                .entry(method)
                .or_default()
                .list
                .push((key, serve));
        }
        self.send(
            key,
            protocol::message(cmd::SERVING, [protocol::u64_frame(serve)]),
        );
        Ok(())
    }

    pub(super) fn unserve(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [serve] = protocol::args(args, "UNSERVE")?;
        let serve = protocol::read_u64(&serve, "provider id")?;
        if let Some(method) = self
            .clients
            .get_mut(&key)
            .and_then(|c| c.serves.remove(&serve))
        {
            self.remove_provider(&method, key, serve);
        }
        Ok(())
    }

    pub(super) fn remove_provider(&mut self, method: &str, key: u64, serve: u64) {
        if let Some(providers) = self.providers.get_mut(method) {
            providers.list.retain(|&p| p != (key, serve));
            if providers.list.is_empty() {
                self.providers.remove(method);
            }
        }
    }

    pub(super) fn call(&mut self, key: u64, args: &[Bytes], all: bool) -> Parsed<()> {
        let [envelope] = protocol::args(args, if all { "CALL_ALL" } else { "CALL" })?;
        let view = protocol::envelope(&envelope, self.config.max_envelope)?;
        if view.kind != Kind::Request {
            return Err(Malformed(format!(
                "{}: the envelope is not a request (kind 3)",
                if all { "CALL_ALL" } else { "CALL" }
            )));
        }
        let request = view.id;
        let deadline = view.deadline_ms;
        let method = view.subject.to_owned();
        let targets: Vec<(u64, u64)> = match self.providers.get_mut(&method) {
            None => Vec::new(),
            Some(providers) if all => providers.list.clone(),
            Some(providers) => {
                let turn = providers.next % providers.list.len();
                providers.next = providers.next.wrapping_add(1);
                vec![providers.list[turn]]
            }
        };
        if targets.is_empty() {
            self.send(
                key,
                protocol::message(cmd::NO_RESPONDERS, [protocol::id_frame(request)]),
            );
            return Ok(());
        }
        if all {
            self.send(
                key,
                protocol::message(
                    cmd::FANOUT,
                    [
                        protocol::id_frame(request),
                        protocol::u32_frame(targets.len() as u32),
                    ],
                ),
            );
        }
        let retention = match deadline {
            Some(deadline) => {
                Duration::from_millis(deadline.saturating_sub(busbar_core::now_millis()) + 1000)
            }
            None => CALL_RETENTION,
        };
        for (provider, serve) in targets {
            let call = Call {
                caller: key,
                request,
                provider,
                method: method.clone(),
                envelope: envelope.clone(),
                all,
            };
            self.forward(call, serve, retention);
        }
        Ok(())
    }

    /// Sends a call to one provider and remembers it until answered or expired.
    pub(super) fn forward(&mut self, call: Call, serve: u64, retention: Duration) {
        let token = self.next_token;
        self.next_token += 1;
        let frames = protocol::message(
            cmd::REQUEST,
            [
                protocol::u64_frame(token),
                protocol::u64_frame(serve),
                call.envelope.clone(),
            ],
        );
        if let Some(client) = self.clients.get_mut(&call.provider) {
            client.served_calls.insert(token);
        }
        self.send(call.provider, frames);
        self.calls.insert(token, call);
        self.schedule(retention, Timer::Call { token });
    }

    /// A call its provider did not handle (it stopped serving, or left): a
    /// `call` goes to another provider or gets NO_RESPONDERS; a `call_all`
    /// entry is withdrawn from the caller's count.
    pub(super) fn reroute(&mut self, mut call: Call) {
        if call.all {
            self.send(
                call.caller,
                protocol::message(cmd::WITHDRAWN, [protocol::id_frame(call.request)]),
            );
            return;
        }
        let next = self.providers.get_mut(&call.method).and_then(|providers| {
            let list: Vec<(u64, u64)> = providers
                .list
                .iter()
                .copied()
                .filter(|(client, _)| *client != call.provider)
                .collect();
            if list.is_empty() {
                return None;
            }
            let turn = providers.next % list.len();
            providers.next = providers.next.wrapping_add(1);
            Some(list[turn])
        });
        match next {
            Some((provider, serve)) => {
                call.provider = provider;
                self.forward(call, serve, CALL_RETENTION);
            }
            None => self.send(
                call.caller,
                protocol::message(cmd::NO_RESPONDERS, [protocol::id_frame(call.request)]),
            ),
        }
    }

    pub(super) fn decline(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [token] = protocol::args(args, "DECLINE")?;
        let token = protocol::read_u64(&token, "call token")?;
        if let Some(client) = self.clients.get_mut(&key) {
            client.served_calls.remove(&token);
        }
        if let Some(call) = self.calls.remove(&token) {
            if call.provider == key {
                self.reroute(call);
            } else {
                self.calls.insert(token, call);
            }
        }
        Ok(())
    }

    pub(super) fn reply(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [token, envelope] = protocol::args(args, "REPLY")?;
        let token = protocol::read_u64(&token, "call token")?;
        if let Some(client) = self.clients.get_mut(&key) {
            client.served_calls.remove(&token);
        }
        let call = self.calls.remove(&token);
        let checked = protocol::envelope(&envelope, self.config.max_envelope).and_then(|view| {
            if !matches!(view.kind, Kind::Reply | Kind::ErrorReply) {
                return Err(Malformed("REPLY: the envelope is not a reply".into()));
            }
            match &call {
                Some(call) if view.correlation_id != Some(call.request) => Err(Malformed(format!(
                    "REPLY: its correlation id does not name the request {}",
                    call.request
                ))),
                _ => Ok(()),
            }
        });
        // A reply for a forgotten call (late, or its caller left) is dropped.
        let Some(call) = call else {
            return checked;
        };
        match checked {
            Ok(()) => {
                self.send(call.caller, protocol::message(cmd::RESULT, [envelope]));
                Ok(())
            }
            Err(why) => {
                // The caller would wait for its deadline: the call fails now,
                // as refused (CALL_ERROR), not as a lost provider (FAILED).
                let message = format!(
                    "the provider of {} sent a reply the broker refused: {why}",
                    call.method
                );
                self.send(
                    call.caller,
                    protocol::message(
                        cmd::CALL_ERROR,
                        [
                            protocol::id_frame(call.request),
                            protocol::text_frame(&message),
                        ],
                    ),
                );
                Err(why)
            }
        }
    }
}
