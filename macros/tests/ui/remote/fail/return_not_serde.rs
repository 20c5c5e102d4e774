struct Stock(u32);

#[busbar::remote]
fn stock() -> Stock {
    Stock(1)
}

fn main() {}
