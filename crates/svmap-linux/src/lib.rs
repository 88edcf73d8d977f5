//! # svmap-linux
//!
//! svmap on the real address space of this Linux process (layer 5 of
//! `docs/design.md`):
//!
//! - [`maps`]: `/proc/<pid>/maps` and `smaps` into an
//!   [`svmap_core::AddressMap`]; [`probe`]: the effective `mmap_min_addr`
//!   floor and the user address width.
//! - [`reserve`]: window reservations with `MAP_FIXED_NOREPLACE`, retried on
//!   races; [`heap`]: memfd-backed SVM buffers inside a reservation;
//!   [`sparse`]: one sparse memfd per window, buffers without system calls.
//! - [`fence`]: the library side of `svmap run`, a preloaded library that
//!   fences off the address space above a device limit for unmodified
//!   programs, and the same fence as a library call.
//! - [`inspect`]: what a device with N address bits can see of a process
//!   (the data; the `svmap` command renders it).
//!
//! System calls live in [`sys`] (safe wrappers), the only module allowed
//! `unsafe`, with a `// SAFETY:` comment on every block. The device peer
//! process is the `svmap-peer` crate; the demo and the report rendering
//! are in the `svmap` command (`svmap-cli`). The kernel-trace recorder, the
//! test oracle, is its own crate (`svmap-ktrace`) so that it shares no code
//! with what it checks.

pub mod error;
pub mod fence;
pub mod heap;
pub mod inspect;
pub mod launch;
pub mod maps;
pub mod probe;
pub mod reserve;
pub mod sparse;
pub mod sys; // #![allow(unsafe_code)] inside
mod trace_sys;
pub mod uffd; // #![allow(unsafe_code)] inside: userfaultfd ioctls // #![allow(unsafe_code)] inside: ptrace, waitpid, signals
