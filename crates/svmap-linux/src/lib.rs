//! # svmap-linux
//!
//! svmap on the real address space of a Linux process (layer 5 of
//! `DESIGN.md`):
//!
//! - [`maps`]: `/proc/<pid>/maps` and `smaps` into an
//!   [`svmap_core::AddressMap`]; [`probe`]: the effective `mmap_min_addr`
//!   floor and the user address width.
//! - [`reserve`]: window reservations with `MAP_FIXED_NOREPLACE`, retried on
//!   races; [`heap`]: memfd-backed SVM buffers inside a reservation.
//! - [`fence`]: `svmap run`, a preloaded library that fences off the
//!   address space above a device limit for unmodified programs.
//! - [`inspect`]: `svmap inspect`, what a device with N address bits can see.
//! - [`demo`]: `svmap demo`, the whole SVM story with a device peer, and
//!   pictures of address spaces ([`svmap_viz`]).
//!
//! System calls live in [`sys`] (safe wrappers), the only module allowed
//! `unsafe`, with a `// SAFETY:` comment on every block. The kernel-trace
//! recorder, the test oracle, is its own crate (`svmap-ktrace`) so that it
//! shares no code with what it checks.

pub mod demo;
pub mod error;
pub mod fence;
pub mod heap;
pub mod inspect;
pub mod maps;
pub mod peer;
pub mod probe;
pub mod reserve;
pub mod sys; // #![allow(unsafe_code)] inside
