use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Default)]
pub struct Inventory {
    stock: AtomicU32,
}

#[busbar::service(prefix = "shop.inventory")]
impl Inventory {
    /// Served: pub and `&self`.
    pub async fn reserve(&self, qty: u32) -> Result<u32, busbar::Error> {
        Ok(self.stock.fetch_sub(qty, Ordering::SeqCst))
    }

    /// Served: pub and `&self`, sync.
    pub fn count(&self) -> u32 {
        self.stock.load(Ordering::SeqCst)
    }

    /// Served although private: marked.
    #[busbar::remote]
    fn audit(&self) {}

    /// Not served: private helper, may take `&mut self`.
    fn reset(&mut self) {
        *self.stock.get_mut() = 0;
    }

    /// Not served: no receiver.
    pub fn new() -> Self {
        Inventory::default()
    }
}

async fn use_it(bus: &busbar::Bus) -> busbar::Result<()> {
    let _served = bus.serve(Inventory::new()).await?;
    let client = InventoryClient::new(bus).timeout(std::time::Duration::from_secs(1));
    let _: u32 = client.reserve(1).await?;
    let _: u32 = client.count().await?;
    client.audit().await?;
    Ok(())
}

fn main() {
    let _ = use_it;
    let _ = Inventory::reset;
}
