#[derive(Debug)]
struct StockError;

#[busbar::remote]
fn reserve(_sku: String) -> Result<u32, StockError> {
    Err(StockError)
}

fn main() {}
