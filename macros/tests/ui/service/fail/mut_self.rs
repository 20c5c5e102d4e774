pub struct Counter {
    value: u32,
}

#[busbar::service]
impl Counter {
    pub fn increment(&mut self) -> u32 {
        self.value += 1;
        self.value
    }
}

fn main() {}
