//! # svmap-bench
//!
//! The "churn" benchmark: N live ranges, each step frees a random
//! live range and allocates a new one, for svmap and its peers on the same
//! pseudo-random sequence. See `docs/PERFORMANCE.md` for the results and
//! `src/bin/churn.rs` for the driver.

pub mod count_alloc;
pub mod peers;
pub mod workload;
