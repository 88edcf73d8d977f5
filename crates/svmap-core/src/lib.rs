//! # svmap-core
//!
//! The pure layers of svmap (layers 1 and 2 of `DESIGN.md`): no system
//! calls, `no_std` + `alloc`, so it runs in unit tests, fuzzing and Miri.
//!
//! - [`AddressMap`]: an ordered map of VMAs `[start, end)` whose search tree
//!   caches the largest free gap of every subtree. It answers the Linux
//!   kernel's `unmapped_area()` / `unmapped_area_topdown()` to the bit
//!   ([`AddressMap::unmapped_area`]) and an exact aligned fit
//!   ([`AddressMap::find_fit`]) in O(log n).
//! - [`linux`]: the x86-64 `mmap` placement policy on top
//!   ([`linux::Mm::mmap`]): hints, `MAP_FIXED`, `MAP_FIXED_NOREPLACE`,
//!   `MAP_32BIT`, `MAP_GROWSDOWN`, top-down and legacy layouts, the
//!   transparent-huge-page alignment.
//! - [`model`]: a deliberately simple reference model (a sorted `Vec` with
//!   linear scans) of the same semantics, for property tests and fuzzing.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

mod btree;
mod check;
#[doc(hidden)]
pub mod fuzzing;
pub mod linux;
mod map;
pub mod model;
mod search;

pub use map::{AddressMap, Iter, MapError, SearchParams, Vma, VmaFlags};
pub use search::{FitError, FitRequest, SearchError, SearchStats, UnmappedAreaInfo};
