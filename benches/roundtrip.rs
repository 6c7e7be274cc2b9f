//! Round-trip benchmark (placeholder until the benchmark issue fills it).
fn main() {}
