pub struct Empty;

#[busbar::service]
impl Empty {
    fn private(&self) {}
}

fn main() {}
