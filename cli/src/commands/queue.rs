//! `busbar queue put|get|len`.

use super::{connect, finish};
use crate::cli::{QueueGetArgs, QueueLenArgs, QueuePutArgs};
use crate::exit::{CmdResult, Context, Failure};
use crate::input::Values;
use crate::output::{print_json, print_line, status};
use busbar::{Error, Name};
use serde_json::Value;

/// Appends the argument (or stdin's lines) to the queue.
pub(crate) async fn put(args: QueuePutArgs) -> CmdResult {
    let mut values = Values::new(args.json.as_deref(), args.count)?;
    Name::new(&args.name)?;
    let bus = connect(&args.connect).await?;
    let queue = bus.queue::<Value>(&args.name)?;
    let mut put = 0u64;
    let outcome = async {
        while let Some(value) = values.next().await? {
            queue
                .put(&value)
                .await
                .context(|| format!("put on {} failed", args.name))?;
            put += 1;
        }
        CmdResult::Ok(())
    }
    .await;
    let finished = finish(&bus, &args.connect).await;
    status(&format!("put {put} items on {}", args.name));
    outcome.and(finished)
}

/// Takes `--count` items and prints them; `--ack`/`--nack` show at-least-once.
pub(crate) async fn get(args: QueueGetArgs) -> CmdResult {
    Name::new(&args.name)?;
    let bus = connect(&args.connect).await?;
    let queue = bus
        .queue::<Value>(&args.name)?
        .visibility_timeout(args.visibility);
    let mut taken = 0u64;
    let outcome = async {
        while taken < args.count {
            let got = if args.ack || args.nack {
                take_acknowledged(&queue, &args).await?
            } else {
                let item = queue
                    .get(args.timeout)
                    .await
                    .context(|| format!("get on {} failed", args.name))?;
                match item {
                    Some(value) => {
                        print_json(&value)?;
                        true
                    }
                    None => false,
                }
            };
            if !got {
                let msg = if args.count == 1 {
                    format!("no item arrived on {} within {:?}", args.name, args.timeout)
                } else {
                    format!(
                        "only {taken} of {} items arrived on {} (waited {:?} for the next)",
                        args.count, args.name, args.timeout
                    )
                };
                return Err(Failure::BusContext(msg, Error::Timeout));
            }
            taken += 1;
        }
        Ok(())
    }
    .await;
    let finished = finish(&bus, &args.connect).await;
    outcome.and(finished)
}

/// One `receive`: print, then ack or nack. False when nothing came.
async fn take_acknowledged(queue: &busbar::Queue<Value>, args: &QueueGetArgs) -> CmdResult<bool> {
    let delivery = queue
        .receive(args.timeout)
        .await
        .context(|| format!("receive on {} failed", args.name))?;
    let Some(delivery) = delivery else {
        return Ok(false);
    };
    let attempt = delivery.attempt();
    let again = if delivery.is_redelivery() {
        ", a redelivery"
    } else {
        ""
    };
    // Printed before the ack: if printing fails, the item is not lost.
    print_json(delivery.value())?;
    if args.nack {
        delivery
            .nack()
            .await
            .context(|| format!("nack on {} failed", args.name))?;
        status(&format!(
            "nacked (attempt {attempt}{again}): the item goes back to {}",
            args.name
        ));
    } else {
        delivery
            .ack()
            .await
            .context(|| format!("ack on {} failed", args.name))?;
        status(&format!("acked (attempt {attempt}{again})"));
    }
    Ok(true)
}

/// Prints the number of waiting items.
pub(crate) async fn len(args: QueueLenArgs) -> CmdResult {
    Name::new(&args.name)?;
    let bus = connect(&args.connect).await?;
    let outcome = async {
        let len = bus
            .queue::<Value>(&args.name)?
            .len()
            .await
            .context(|| format!("len of {} failed", args.name))?;
        print_line(&len.to_string())?;
        CmdResult::Ok(())
    }
    .await;
    let finished = finish(&bus, &args.connect).await;
    outcome.and(finished)
}
