use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Serialize, Deserialize)]
enum StockError {
    OutOfStock,
}

impl fmt::Display for StockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("out of stock")
    }
}

#[derive(Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

mod math {
    #[busbar::remote]
    pub async fn product(a: i64, b: i64) -> i64 {
        a * b
    }
}

#[busbar::remote(name = "inventory.reserve")]
fn reserve(_sku: String, _qty: u32) -> Result<u32, StockError> {
    Err(StockError::OutOfStock)
}

#[busbar::remote]
fn nothing() {}

#[busbar::remote]
fn fallible() -> busbar::Result<Vec<Point>> {
    Ok(vec![Point { x: 1, y: 2 }])
}

#[busbar::remote]
async fn patterns(Point { x, y }: Point, (a, b): (u8, u8), _: bool) -> i32 {
    x + y + i32::from(a) + i32::from(b)
}

#[busbar::remote]
async fn with_bus(count: u32, bus: &busbar::Bus) -> busbar::Result<u32> {
    bus.publish_to("counts", &count).await?;
    Ok(count)
}

async fn client(bus: &busbar::Bus) -> busbar::Result<()> {
    let _: i64 = math::product::call(bus, 6, 7).await?;
    let _: Vec<busbar::Result<u32>> = reserve::stub(bus)
        .call_all(&("lamp".to_string(), 1))
        .await?;
    nothing::call(bus).await?;
    let _: Vec<Point> = fallible::call(bus).await?;
    let _: i32 = patterns::call(bus, Point { x: 1, y: 1 }, (1, 2), true).await?;
    let _: u32 = with_bus::call(bus, 1).await?;
    Ok(())
}

fn main() {
    let _ = client;
    let _: &str = math::product::NAME;
}
