use busbar::Bus;

#[busbar::remote]
fn relay(_first: &Bus, n: u32, _second: &Bus) -> u32 {
    n
}

fn main() {}
