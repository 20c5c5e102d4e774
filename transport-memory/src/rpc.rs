//! Providers of one method, and calling them in-process.

use busbar_core::inflight::InFlight;
use busbar_core::transport::Handler;
use busbar_core::{reply, Envelope, Error, Result, Stats};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Clone)]
pub(crate) struct Provider {
    pub(crate) id: u64,
    pub(crate) owner: u64,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) in_flight: InFlight,
    pub(crate) stats: Arc<Stats>,
}

/// Every provider of one method, called round-robin.
#[derive(Default)]
pub(crate) struct Providers {
    list: RwLock<Vec<Provider>>,
    next: AtomicUsize,
}

impl Providers {
    pub(crate) fn add(&self, provider: Provider) {
        self.list
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(provider);
    }

    pub(crate) fn remove_where(&self, reject: impl Fn(&Provider) -> bool) {
        self.list
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| !reject(p));
    }

    fn snapshot(&self) -> Vec<Provider> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn pick(&self) -> Option<Provider> {
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        if list.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(list[turn % list.len()].clone())
    }

    pub(crate) async fn call(&self, request: Envelope) -> Result<Envelope> {
        let provider = self.pick().ok_or_else(|| no_responders(&request))?;
        let deadline = deadline_of(&request);
        let answer = tokio::spawn(run(provider, request));
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(Some(reply))) => Ok(reply),
            Ok(Ok(None)) | Err(_) => Err(Error::Timeout),
            Ok(Err(join)) => Err(Error::transport(join)),
        }
    }

    pub(crate) async fn call_all(&self, request: Envelope) -> Result<Vec<Result<Envelope>>> {
        let providers = self.snapshot();
        if providers.is_empty() {
            return Err(no_responders(&request));
        }
        let deadline = deadline_of(&request);
        let answers: Vec<_> = providers
            .into_iter()
            .map(|provider| tokio::spawn(run(provider, request.clone())))
            .collect();
        let mut replies = Vec::with_capacity(answers.len());
        for answer in answers {
            replies.push(match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(Some(reply))) => Ok(reply),
                Ok(Ok(None)) | Err(_) => Err(Error::Timeout),
                Ok(Err(join)) => Err(Error::transport(join)),
            });
        }
        Ok(replies)
    }
}

async fn run(provider: Provider, request: Envelope) -> Option<Envelope> {
    let _running = provider.in_flight.enter();
    reply::respond(&*provider.handler, request, &provider.stats).await
}

fn no_responders(request: &Envelope) -> Error {
    Error::NoResponders {
        method: request.subject.to_string(),
    }
}

fn deadline_of(request: &Envelope) -> tokio::time::Instant {
    let remaining = request.remaining().unwrap_or(busbar_core::DEFAULT_TIMEOUT);
    tokio::time::Instant::now() + remaining
}
