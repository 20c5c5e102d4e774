struct Inventory;

impl Inventory {
    #[busbar::remote]
    pub fn count(&self) -> u32 {
        0
    }
}

fn main() {}
