//! # svmap-cli
//!
//! The library half of the `svmap` command: what the command shows and how
//! it shows it, kept out of the layers below so that they hold data only.
//!
//! - [`demo`]: `svmap demo`, the whole SVM story with a device peer process
//!   (`svmap-peer`), its report as text and JSON, and pictures of address
//!   spaces (`svmap-viz`).
//! - [`render`]: the text and JSON of `svmap inspect`'s report
//!   ([`svmap_linux::inspect::Report`]).

pub mod demo;
pub mod render;
