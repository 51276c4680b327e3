//! The router-server binary.
fn main() {}
