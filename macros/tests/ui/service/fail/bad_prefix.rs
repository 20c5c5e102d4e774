pub struct Inventory;

#[busbar::service(prefix = "shop.>")]
impl Inventory {
    pub fn count(&self) -> u32 {
        0
    }
}

fn main() {}
