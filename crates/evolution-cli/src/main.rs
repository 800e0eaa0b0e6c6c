//! The `evolution` command.

fn main() {}
