//! # svmap-core
//!
//! The pure layers of svmap (layers 1 and 2 of `docs/design.md`): no system
//! calls, `no_std` + `alloc`, so it runs in unit tests, fuzzing and Miri.
//!
//! - [`AddressMap`]: an ordered map of VMAs `[start, end)` whose search tree
//!   caches the largest free gap of every subtree. It answers the Linux
//!   kernel's `unmapped_area()` / `unmapped_area_topdown()` to the bit
//!   ([`AddressMap::unmapped_area`]) and an exact aligned fit
//!   ([`AddressMap::find_fit`]) in O(log n), also one that must not cross
//!   a multiple of a power of two ([`AddressMap::find_fit_nocross`]).
//! - [`VaHeap`]: the same exact fit as an allocator that keeps only the free
//!   holes (a GPU driver's VA heap): a sorted array while it holds at most
//!   256 holes, a B+tree of holes above; `alloc`, `alloc_at`, `free`.
//! - [`linux`]: the x86-64 `mmap` placement policy on top
//!   ([`linux::Mm::mmap`]): hints, `MAP_FIXED`, `MAP_FIXED_NOREPLACE`,
//!   `MAP_32BIT`, `MAP_GROWSDOWN`, top-down and legacy layouts, the
//!   transparent-huge-page alignment.
//! - [`fence_plan`]: which holes above a device limit a fence reserves and
//!   what room it leaves a grows-down stack (allocation free, shared by the
//!   preload library and the Linux backend).
//! - `model` and `fuzzing` (with the `fuzzing` cargo feature only): a
//!   deliberately simple reference model (a sorted `Vec` with linear scans)
//!   of the same semantics and the differential driver that compares the
//!   two, for property tests and the fuzz target.
//! - `heap_model` (with the `fuzzing` feature only): the same for
//!   [`VaHeap`], a sorted `Vec` of holes whose fits are computed per hole
//!   in 128-bit arithmetic.
//!
//! ```
//! use svmap_core::{AddressMap, FitRequest, SearchParams, UnmappedAreaInfo, VmaFlags};
//!
//! # fn main() -> Result<(), Box<dyn core::error::Error>> {
//! let mut map = AddressMap::new();
//! map.insert(0x10000, 0x200000, VmaFlags::NONE)?;
//! map.insert(0x500000, 0x10000000, VmaFlags::NONE)?;
//! let params = SearchParams::default();
//! // The kernel's vm_unmapped_area(): a 2 MiB-aligned 2 MiB area needs a
//! // hole of 4 MiB - 4 KiB, so the 3 MiB hole at 2 MiB is skipped.
//! let kernel = map.unmapped_area(
//!     &UnmappedAreaInfo {
//!         length: 0x200000,
//!         low_limit: 0,
//!         high_limit: 1 << 40,
//!         align_mask: 0x1fffff,
//!         ..Default::default()
//!     },
//!     &params,
//! )?;
//! assert_eq!(kernel, 0x10000000);
//! // The exact aligned fit finds the aligned slot inside it.
//! let fit = map.find_fit(
//!     &FitRequest {
//!         length: 0x200000,
//!         low: 0,
//!         high: 1 << 40,
//!         align: 0x200000,
//!         align_offset: 0,
//!         topdown: false,
//!         respect_guard_gaps: true,
//!     },
//!     &params,
//! )?;
//! assert_eq!(fit, 0x200000);
//! // An allocator's alloc: the same search and the mapping, in one descent.
//! let req = FitRequest {
//!     length: 0x1000,
//!     low: 0x10000,
//!     high: 1 << 40,
//!     align: 0x1000,
//!     align_offset: 0,
//!     topdown: false,
//!     respect_guard_gaps: false,
//! };
//! let a = map.allocate(&req, &params, VmaFlags::NONE)?;
//! assert_eq!(a, 0x200000);
//! assert_eq!(map.vma_at(a).map(|v| v.end), Some(0x201000));
//! map.unmap(a, a + 0x1000)?; // the allocator's free
//! # Ok(())
//! # }
//! ```
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

mod btree;
mod check;
pub mod fence_plan;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "fuzzing")]
pub mod heap_model;
pub mod linux;
mod map;
#[cfg(feature = "fuzzing")]
pub mod model;
mod search;
mod va_heap;

pub use map::{AddressMap, Iter, MapError, SearchParams, Vma, VmaFlags};
pub use search::{FitError, FitRequest, NoCrossError, SearchError, SearchStats, UnmappedAreaInfo};
pub use va_heap::{HeapError, Holes, VaHeap};
