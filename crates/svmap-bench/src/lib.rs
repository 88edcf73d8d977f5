//! # svmap-bench
//!
//! The "churn" benchmark: N live ranges, each step frees a random
//! live range and allocates a new one, for svmap and its peers on the same
//! pseudo-random sequence. See `docs/PERFORMANCE.md` for the results and
//! `src/bin/churn.rs` for the driver.
//!
//! [`vma_random`] is a second workload: Mesa's random test of its VMA heap
//! (random power-of-two sizes and alignments per call) on the exact
//! implementations; `src/bin/vma_random.rs` is its driver.

pub mod count_alloc;
pub mod peers;
pub mod vma_random;
pub mod workload;
