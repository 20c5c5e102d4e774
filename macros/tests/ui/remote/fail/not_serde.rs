struct Sku(String);

#[busbar::remote]
fn reserve(sku: Sku) -> u32 {
    sku.0.len() as u32
}

fn main() {}
