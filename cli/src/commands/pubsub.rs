//! `busbar pub` and `busbar sub`.

use super::{connect, finish, interrupted};
use crate::cli::{PubArgs, SubArgs};
use crate::exit::{CmdResult, Context};
use crate::input::Values;
use crate::output::{message_line, print_line, status};
use busbar::{
    redact_url, Bus, ContentType, Envelope, Error, Kind, Name, Pattern, Stats, SubscribeOptions,
    DEFAULT_MAX_PAYLOAD,
};
use futures::StreamExt;
use serde_json::Value;

/// Publishes the argument (or stdin's lines) on the topic.
pub(crate) async fn publish(args: PubArgs) -> CmdResult {
    // Check the input before connecting, so a typo costs no connection.
    let mut values = Values::new(args.json.as_deref(), args.count)?;
    Name::new(&args.topic)?;
    let bus = connect(&args.connect).await?;
    let mut published = 0u64;
    let outcome = async {
        while let Some(value) = values.next().await? {
            publish_one(&bus, &args, &value)
                .await
                .context(|| format!("publish to {} failed", args.topic))?;
            published += 1;
        }
        CmdResult::Ok(())
    }
    .await;
    let finished = finish(&bus, &args.connect).await;
    status(&format!("published {published} events to {}", args.topic));
    outcome.and(finished)
}

/// Publishes one value: through the typed API, or as an envelope when it
/// carries headers.
async fn publish_one(bus: &Bus, args: &PubArgs, value: &Value) -> busbar::Result<()> {
    if args.headers.is_empty() {
        return bus.publish_to(&args.topic, value).await;
    }
    let payload = busbar::codec::encode(value)?;
    if payload.len() > DEFAULT_MAX_PAYLOAD {
        return Err(Error::TooLarge {
            size: payload.len(),
            limit: DEFAULT_MAX_PAYLOAD,
        });
    }
    let mut envelope = Envelope::new(
        Kind::Event,
        Name::new(&args.topic)?,
        ContentType::JSON,
        payload,
    );
    envelope.headers = args.headers.clone();
    let transport = bus.transport();
    transport.publish(envelope).await?;
    Stats::incr(&transport.stats().published);
    Ok(())
}

/// Prints each matching event as a JSON line until interrupted or `--count`.
pub(crate) async fn subscribe(args: SubArgs) -> CmdResult {
    let pattern = Pattern::new(&args.pattern)?;
    let bus = connect(&args.connect).await?;
    let options = SubscribeOptions {
        capacity: args.buffer.max(1),
    };
    let mut subscription = bus
        .subscribe_with::<busbar::Message>(pattern, options)
        .await
        .context(|| format!("cannot subscribe to {}", args.pattern))?;
    // The subscription is live end to end: say so, for scripts and tests.
    status(&format!(
        "subscribed to {} on {}; ready",
        args.pattern,
        redact_url(&args.connect.url)
    ));
    let limit = args.count.unwrap_or(u64::MAX);
    let mut received = 0u64;
    let outcome = async {
        let interrupt = interrupted();
        tokio::pin!(interrupt);
        while received < limit {
            let item = tokio::select! {
                item = subscription.next() => item,
                _ = &mut interrupt => break,
            };
            match item {
                None => break,
                Some(Ok(message)) => {
                    print_line(&message_line(&message))?;
                    received += 1;
                }
                Some(Err(Error::Lagged { missed })) => {
                    status(&format!(
                        "warning: fell behind: the next {missed} events were dropped (raise --buffer)"
                    ));
                }
                Some(Err(Error::Interrupted)) => status(
                    "warning: lost the connection to the broker; events published until it is back are missed",
                ),
                Some(Err(err)) => status(&format!("warning: skipped an event: {err}")),
            }
        }
        CmdResult::Ok(())
    }
    .await;
    drop(subscription);
    let finished = finish(&bus, &args.connect).await;
    outcome.and(finished)
}
