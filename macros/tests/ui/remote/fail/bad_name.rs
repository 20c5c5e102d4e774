#[busbar::remote(name = "inventory reserve")]
fn whitespace() {}

#[busbar::remote(name = "inventory..reserve")]
fn empty_segment() {}

#[busbar::remote(name = "inventory.*")]
fn wildcard() {}

fn main() {}
