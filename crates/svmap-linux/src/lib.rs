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
//! - [`kernel_trace`]: the running kernel as the test oracle: records
//!   `mmap` answers as TRACE.md traces (with the allocation-free [`smaps`]
//!   reader).
//!
//! System calls live in [`sys`] (safe wrappers), [`kernel_trace`] and
//! [`smaps`]; those three modules are the only ones allowed `unsafe`, with
//! a `// SAFETY:` comment on every block.

pub mod demo;
pub mod error;
pub mod fence;
pub mod heap;
pub mod inspect;
#[allow(unsafe_code)]
pub mod kernel_trace;
pub mod maps;
pub mod peer;
pub mod probe;
pub mod reserve;
#[allow(unsafe_code)]
pub mod smaps;
pub mod sys; // #![allow(unsafe_code)] inside
