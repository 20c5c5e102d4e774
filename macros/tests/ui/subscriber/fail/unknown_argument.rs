#[busbar::subscriber(queue = "jobs")]
fn on_job(_job: String) {}

fn main() {}
