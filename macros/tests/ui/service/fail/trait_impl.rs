pub struct Inventory;

#[busbar::service]
impl Clone for Inventory {
    fn clone(&self) -> Self {
        Inventory
    }
}

fn main() {}
