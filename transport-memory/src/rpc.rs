//! Providers of one method, and calling them in-process.

use busbar_core::inflight::InFlight;
use busbar_core::transport::Handler;
use busbar_core::{reply, Envelope, Error, Result, Stats};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::time::error::Elapsed;

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
        let method = request.subject.clone();
        let answer = tokio::spawn(run(provider, request));
        outcome(&method, tokio::time::timeout_at(deadline, answer).await)
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
            replies.push(outcome(
                &request.subject,
                tokio::time::timeout_at(deadline, answer).await,
            ));
        }
        Ok(replies)
    }
}

/// The reply; `Some(None)` when there is none (expired, cancelled at the
/// deadline), `None` when the provider's bus was killed meanwhile.
async fn run(provider: Provider, request: Envelope) -> Option<Option<Envelope>> {
    let _running = provider.in_flight.enter();
    let work = reply::respond(&*provider.handler, request, &provider.stats);
    provider.in_flight.abortable(work).await
}

type Answer = Result<Result<Option<Option<Envelope>>, tokio::task::JoinError>, Elapsed>;

fn outcome(method: &busbar_core::Name, answer: Answer) -> Result<Envelope> {
    match answer {
        Ok(Ok(Some(Some(reply)))) => Ok(reply),
        Ok(Ok(Some(None))) | Err(_) => Err(Error::Timeout),
        Ok(Ok(None)) => Err(Error::ProviderLost {
            method: method.to_string(),
        }),
        Ok(Err(join)) => Err(Error::transport(join)),
    }
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
