//! One named in-memory queue: waiting items, items in flight, and waiters.

use async_trait::async_trait;
use busbar_core::transport::{Acker, RawDelivery};
use busbar_core::{Envelope, Error, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

struct Item {
    envelope: Envelope,
    attempt: u32,
}

struct InFlight {
    item: Item,
    expiry: AbortHandle,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Item>,
    in_flight: HashMap<u64, InFlight>,
    next_delivery: u64,
}

/// A FIFO queue whose items each go to exactly one consumer.
#[derive(Default)]
pub(crate) struct MemoryQueue {
    state: Mutex<State>,
    available: Notify,
}

impl MemoryQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn put(&self, envelope: Envelope) {
        self.lock().waiting.push_back(Item {
            envelope,
            attempt: 0,
        });
        self.available.notify_one();
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    fn try_take(&self) -> Option<Item> {
        let mut state = self.lock();
        let item = state.waiting.pop_front()?;
        let more = !state.waiting.is_empty();
        drop(state);
        if more {
            // Pass the wake-up on: another waiter may take the next item.
            self.available.notify_one();
        }
        Some(item)
    }

    /// Waits up to `timeout` for an item. An item is only taken by a caller that
    /// returns it, so a timed-out wait never loses one.
    async fn take(
        &self,
        timeout: Duration,
        closed: &Notify,
        is_closed: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Item>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let available = self.available.notified();
            let shutdown = closed.notified();
            tokio::pin!(available, shutdown);
            available.as_mut().enable();
            shutdown.as_mut().enable();
            if is_closed() {
                return Err(Error::Closed);
            }
            if let Some(item) = self.try_take() {
                return Ok(Some(item));
            }
            tokio::select! {
                _ = &mut available => {}
                _ = &mut shutdown => return Err(Error::Closed),
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }

    pub(crate) async fn get(
        &self,
        timeout: Duration,
        closed: &Notify,
        is_closed: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Envelope>> {
        Ok(self
            .take(timeout, closed, is_closed)
            .await?
            .map(|item| item.envelope))
    }

    pub(crate) async fn receive(
        self: &Arc<Self>,
        timeout: Duration,
        visibility: Duration,
        closed: &Notify,
        is_closed: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<RawDelivery>> {
        let Some(mut item) = self.take(timeout, closed, is_closed).await? else {
            return Ok(None);
        };
        item.attempt += 1;
        let envelope = item.envelope.clone();
        let attempt = item.attempt;
        let mut state = self.lock();
        let id = state.next_delivery;
        state.next_delivery += 1;
        let queue = Arc::downgrade(self);
        let expiry = tokio::spawn(async move {
            tokio::time::sleep(visibility).await;
            if let Some(queue) = queue.upgrade() {
                queue.requeue(id);
            }
        })
        .abort_handle();
        state.in_flight.insert(id, InFlight { item, expiry });
        drop(state);
        let acker = MemoryAcker {
            queue: self.clone(),
            id,
        };
        Ok(Some(RawDelivery::new(envelope, attempt, Box::new(acker))))
    }

    /// Puts an in-flight item back at the head of the queue; false if it was
    /// already settled.
    fn requeue(&self, id: u64) -> bool {
        let mut state = self.lock();
        let Some(in_flight) = state.in_flight.remove(&id) else {
            return false;
        };
        in_flight.expiry.abort();
        state.waiting.push_front(in_flight.item);
        drop(state);
        self.available.notify_one();
        true
    }
}

struct MemoryAcker {
    queue: Arc<MemoryQueue>,
    id: u64,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<()> {
        match self.queue.lock().in_flight.remove(&self.id) {
            Some(in_flight) => {
                in_flight.expiry.abort();
                Ok(())
            }
            None => Err(Error::transport(
                "the delivery was not acknowledged within its visibility timeout and was redelivered",
            )),
        }
    }

    async fn nack(&self) -> Result<()> {
        self.queue.requeue(self.id);
        Ok(())
    }
}
