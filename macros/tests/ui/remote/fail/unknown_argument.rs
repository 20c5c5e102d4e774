#[busbar::remote(method = "math.product")]
fn product(a: i64, b: i64) -> i64 {
    a * b
}

fn main() {}
