pub struct Clock;

#[busbar::service]
impl Clock {
    pub fn timeout(&self) -> u64 {
        5
    }
}

fn main() {}
