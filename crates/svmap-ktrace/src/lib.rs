//! # svmap-ktrace
//!
//! The running kernel as the test oracle: [`kernel_trace`] records what
//! Linux answers to seeded random anonymous `mmap` calls as a trace in the
//! format of `docs/trace-format.md`, with an `expect` field on every
//! `mmap` line, so that `svmap replay --check` can compare svmap's answers
//! with the kernel's. [`smaps`] is the allocation-free `/proc/self/smaps`
//! reader the recorder takes its snapshots with.
//!
//! This crate shares no code with what it checks: it depends on none of
//! `svmap-core`, `svmap-svm` or `svmap-linux`, and keeps its own small
//! address-range bookkeeping and smaps parser. An oracle built on the code
//! under test would inherit that code's bugs and then agree with them; the
//! traces it writes are only worth checking against when they come from
//! the kernel and from nothing else.
//!
//! System calls go through `rustix`, and through `libc` only where rustix
//! has no call (listed in `sys`). Every `unsafe` block of the crate lives
//! in that one private module, each with a `// SAFETY:` comment.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod kernel_trace;
pub mod smaps;
#[allow(unsafe_code)]
mod sys;
