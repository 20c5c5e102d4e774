//! The busbar ZeroMQ broker as a program:
//! `busbar-zmq-broker --bind tcp://127.0.0.1:5555 [--heartbeat-ms 1000] [--liveness 3]
//! [--high-water 50000] [--high-water-bytes 67108864] [--stall-limit-ms 10000]`.

use busbar_zmq::{Broker, BrokerConfig};
use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage: busbar-zmq-broker --bind tcp://HOST:PORT [--heartbeat-ms N] [--liveness N] \
         [--high-water N] [--high-water-bytes N] [--stall-limit-ms N]"
    );
    std::process::exit(2)
}

fn main() {
    let mut bind = None;
    let mut config = BrokerConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--bind" => bind = Some(value()),
            "--heartbeat-ms" => {
                let ms: u64 = value().parse().unwrap_or_else(|_| usage());
                config.heartbeat = Duration::from_millis(ms.max(10));
            }
            "--liveness" => config.liveness = value().parse().unwrap_or_else(|_| usage()),
            "--high-water" => config.high_water = value().parse().unwrap_or_else(|_| usage()),
            "--high-water-bytes" => {
                config.high_water_bytes = value().parse().unwrap_or_else(|_| usage())
            }
            "--stall-limit-ms" => {
                let ms: u64 = value().parse().unwrap_or_else(|_| usage());
                config.stall_limit = Duration::from_millis(ms);
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let Some(bind) = bind else { usage() };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("busbar-zmq-broker: cannot start the runtime: {err}");
            std::process::exit(1)
        }
    };
    runtime.block_on(async {
        let broker = match Broker::bind_with(&bind, config).await {
            Ok(broker) => broker,
            Err(err) => {
                eprintln!("busbar-zmq-broker: {err}");
                std::process::exit(1)
            }
        };
        // The bound endpoint on stdout, so a parent process can read the port.
        println!("{}", broker.endpoint());
        broker
            .run_until(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
    });
}
