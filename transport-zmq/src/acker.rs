//! Acknowledging a queue delivery (ACK or NACK) with the broker that handed it out.

use crate::client::{unexpected, Answer, Shared};
use crate::protocol::{self, cmd};
use async_trait::async_trait;
use busbar_core::transport::Acker;
use busbar_core::{Error, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Settles one acknowledged delivery with the broker that handed it out.
pub(crate) struct ZmqAcker {
    shared: Arc<Shared>,
    tag: u64,
    /// The connection it came through: another one cannot settle it.
    epoch: u64,
}

impl ZmqAcker {
    /// The acker of the delivery `tag` received on the current connection.
    pub(crate) fn new(shared: Arc<Shared>, tag: u64) -> ZmqAcker {
        let epoch = shared.epoch.load(Ordering::Acquire);
        ZmqAcker { shared, tag, epoch }
    }

    async fn settle(&self, command: u8) -> Result<()> {
        let shared = &*self.shared;
        if shared.epoch.load(Ordering::Acquire) != self.epoch {
            return Err(Error::transport(
                "the connection to the zmq broker was lost since this delivery; it will be delivered again",
            ));
        }
        let req = shared.id();
        let frames = protocol::message(
            command,
            [protocol::u64_frame(req), protocol::u64_frame(self.tag)],
        );
        match shared
            .request(req, frames, shared.config.op_timeout)
            .await?
        {
            Answer::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

#[async_trait]
impl Acker for ZmqAcker {
    async fn ack(&self) -> Result<()> {
        self.settle(cmd::ACK).await
    }

    async fn nack(&self) -> Result<()> {
        self.settle(cmd::NACK).await
    }
}
