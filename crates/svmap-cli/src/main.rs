//! The svmap command-line tool.
fn main() {}
