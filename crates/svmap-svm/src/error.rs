//! The error enum of the SVM layer and the device fault kinds.
//!
//! Every variant carries the values that were wrong; its doc comment is the
//! message. [`SvmError::trace_errno`] maps a variant to the `err` result
//! a trace prints (`docs/trace-format.md`), or to `None` where the trace
//! format calls the input a bad line.

use core::fmt;

use svmap_core::linux::Errno;

/// Why an SVM operation failed. Nothing changed when one is returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SvmError {
    /// `va_bits` must lie in 12..=64.
    BadVaBits {
        /// The value given.
        va_bits: u32,
    },
    /// A device page size must be a power of two from 0x1000 to
    /// [`crate::MAX_DEVICE_PAGE_SIZE`] (1 GiB).
    BadPageSize {
        /// The value given.
        page_size: u64,
    },
    /// A device page must not be larger than the device's whole address
    /// space `2^va_bits`.
    PageAboveLimit {
        /// The page size given.
        page_size: u64,
        /// The device's `va_bits`.
        va_bits: u32,
    },
    /// A device TLB must have 1..=[`crate::MAX_TLB_ENTRIES`] entries.
    BadTlbEntries {
        /// The value given.
        tlb_entries: usize,
    },
    /// The space already holds [`crate::MAX_DEVICES`] devices, the most it
    /// may hold at once.
    TooManyDevices {
        /// The cap, [`crate::MAX_DEVICES`].
        max: usize,
    },
    /// A device with this name is already defined.
    DuplicateDevice {
        /// The name.
        name: String,
    },
    /// No device with this name is defined.
    UnknownDevice {
        /// The name.
        name: String,
    },
    /// The device's base lies at or above its limit `2^va_bits`.
    BaseOutOfRange {
        /// The base given.
        base: u64,
        /// The device's `va_bits`.
        va_bits: u32,
    },
    /// The range `[start, end)` is empty or inverted.
    EmptyRange {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// A start or end is not a multiple of the page size that applies.
    Unaligned {
        /// Start.
        start: u64,
        /// End (or start + length).
        end: u64,
        /// The page size.
        page_size: u64,
    },
    /// A device-only region ends above the device's limit `2^va_bits`.
    BeyondDeviceLimit {
        /// Start.
        start: u64,
        /// End.
        end: u64,
        /// The device's `va_bits`.
        va_bits: u32,
    },
    /// The range overlaps something already mapped (a CPU VMA or something
    /// on the device).
    Overlap {
        /// Start.
        start: u64,
        /// End.
        end: u64,
        /// The lowest existing range that overlaps, `[start, end)`.
        existing: (u64, u64),
    },
    /// A zero length.
    ZeroLength,
    /// An alignment that is not a power of two.
    BadAlignment {
        /// The value given.
        align: u64,
    },
    /// The length rounded up to the page size `page` does not fit in 64 bits.
    LengthOverflow {
        /// The length given.
        length: u64,
        /// The page size it is rounded to.
        page: u64,
    },
    /// The windows of the CPU and the listed devices do not intersect in a
    /// range of `length` bytes: `[low, high)` is their intersection.
    NoCommonWindow {
        /// The largest floor (`mmap_min_addr` and the device bases).
        low: u64,
        /// The smallest limit (`task_size` and `2^va_bits`), saturated.
        high: u64,
        /// The rounded length.
        length: u64,
    },
    /// No aligned range of `length` bytes is free in every space inside
    /// the common window.
    NoSpace {
        /// The rounded length.
        length: u64,
        /// The alignment.
        align: u64,
    },
    /// `svm_free` of an address that is not the start of a live SVM range.
    NotAnSvmRange {
        /// The address given.
        addr: u64,
    },
    /// `start + length` does not fit in 64 bits.
    RangeOverflow {
        /// Start.
        start: u64,
        /// Length.
        length: u64,
    },
    /// A page of the range is not mapped on the CPU (`protect`).
    NotMapped {
        /// The first unmapped address in the range.
        addr: u64,
    },
    /// The CPU's `mmap` answered this errno.
    Mmap(Errno),
    /// A window reservation needs at least one device.
    NoDevices,
    /// No part of the common window `[start, end)` is free on the CPU, so
    /// nothing could be reserved.
    WindowFull {
        /// Start of the common window.
        start: u64,
        /// End of the common window.
        end: u64,
    },
    /// No window reservation has this id (never made, or released).
    UnknownWindow {
        /// The id given.
        id: u64,
    },
    /// CPU memory `[start, end)` lies above the limit of a device that must
    /// address it.
    AboveDeviceLimit {
        /// The device.
        device: String,
        /// Start of the CPU range.
        start: u64,
        /// End of the CPU range.
        end: u64,
        /// The device's limit `2^va_bits` (saturated at `u64::MAX`).
        limit: u64,
    },
}

impl SvmError {
    /// The `err` result a trace gives for this error, or `None` where the
    /// trace format calls the input a bad line (replay stops with exit 2).
    pub fn trace_errno(&self) -> Option<Errno> {
        use SvmError::*;
        match self {
            BadVaBits { .. }
            | BadPageSize { .. }
            | PageAboveLimit { .. }
            | BadTlbEntries { .. }
            | TooManyDevices { .. }
            | UnknownDevice { .. }
            | BadAlignment { .. }
            | AboveDeviceLimit { .. } => None,
            // `map` with end <= start or unaligned bounds, `unmap` /
            // `protect` with unaligned start or bad length are bad lines;
            // `device_map`'s are EINVAL. The executor knows which op it ran:
            // see `SvmSpace` for which op can return which.
            EmptyRange { .. } | Unaligned { .. } => Some(Errno::EINVAL),
            DuplicateDevice { .. } | Overlap { .. } => Some(Errno::EEXIST),
            BaseOutOfRange { .. } | BeyondDeviceLimit { .. } | ZeroLength => Some(Errno::EINVAL),
            NotAnSvmRange { .. } | NoDevices | UnknownWindow { .. } => Some(Errno::EINVAL),
            WindowFull { .. } => Some(Errno::ENOMEM),
            LengthOverflow { .. }
            | NoCommonWindow { .. }
            | NoSpace { .. }
            | RangeOverflow { .. }
            | NotMapped { .. } => Some(Errno::ENOMEM),
            Mmap(e) => Some(*e),
        }
    }
}

impl fmt::Display for SvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SvmError::*;
        match self {
            BadVaBits { va_bits } => write!(f, "va_bits {va_bits} is outside 12..=64"),
            BadPageSize { page_size } => write!(
                f,
                "page size {page_size:#x} is not a power of two from 0x1000 to {:#x}",
                crate::MAX_DEVICE_PAGE_SIZE
            ),
            PageAboveLimit { page_size, va_bits } => write!(
                f,
                "page size {page_size:#x} is larger than the whole address space 2^{va_bits}"
            ),
            BadTlbEntries { tlb_entries } => write!(
                f,
                "{tlb_entries} TLB entries is outside 1..={}",
                crate::MAX_TLB_ENTRIES
            ),
            TooManyDevices { max } => write!(
                f,
                "the space already holds {max} devices, the most it may hold"
            ),
            DuplicateDevice { name } => write!(f, "device {} is already defined", Name(name)),
            UnknownDevice { name } => write!(f, "no device named {}", Name(name)),
            BaseOutOfRange { base, va_bits } => {
                write!(f, "base {base:#x} is not below 2^{va_bits}")
            }
            EmptyRange { start, end } => write!(f, "empty range [{start:#x}, {end:#x})"),
            Unaligned {
                start,
                end,
                page_size,
            } => write!(
                f,
                "[{start:#x}, {end:#x}) is not aligned to the page size {page_size:#x}"
            ),
            BeyondDeviceLimit {
                start,
                end,
                va_bits,
            } => write!(f, "[{start:#x}, {end:#x}) ends above 2^{va_bits}"),
            Overlap {
                start,
                end,
                existing,
            } => write!(
                f,
                "[{start:#x}, {end:#x}) overlaps [{:#x}, {:#x})",
                existing.0, existing.1
            ),
            ZeroLength => write!(f, "zero length"),
            BadAlignment { align } => write!(f, "alignment {align:#x} is not a power of two"),
            LengthOverflow { length, page } => {
                write!(f, "length {length:#x} rounded up to {page:#x} overflows")
            }
            NoCommonWindow { low, high, length } => write!(
                f,
                "the common window [{low:#x}, {high:#x}) cannot hold {length:#x} bytes"
            ),
            NoSpace { length, align } => write!(
                f,
                "no free range of {length:#x} bytes aligned to {align:#x} in every space"
            ),
            NotAnSvmRange { addr } => write!(f, "{addr:#x} is not the start of an SVM range"),
            RangeOverflow { start, length } => {
                write!(f, "{start:#x} + {length:#x} overflows 64 bits")
            }
            NotMapped { addr } => write!(f, "{addr:#x} is not mapped on the CPU"),
            Mmap(e) => write!(f, "mmap failed: {}", e.name()),
            NoDevices => write!(f, "a window reservation needs at least one device"),
            WindowFull { start, end } => write!(
                f,
                "no part of the common window [{start:#x}, {end:#x}) is free on the CPU"
            ),
            UnknownWindow { id } => write!(f, "no window reservation with id {id}"),
            AboveDeviceLimit {
                device,
                start,
                end,
                limit,
            } => write!(
                f,
                "CPU memory [{start:#x}, {end:#x}) lies above the limit {limit:#x} of device {}",
                Name(device)
            ),
        }
    }
}

impl std::error::Error for SvmError {}

/// A device name in a message: quoted, and cut after
/// [`Name::MAX_SHOWN`] bytes (with the full length) so that a huge name
/// cannot make a huge message.
struct Name<'a>(&'a str);

impl Name<'_> {
    /// The most bytes of a name a message shows.
    const MAX_SHOWN: usize = 64;
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= Self::MAX_SHOWN {
            return write!(f, "{s:?}");
        }
        let mut cut = Self::MAX_SHOWN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        write!(f, "{:?}... ({} bytes)", &s[..cut], s.len())
    }
}

/// What a device access that does not succeed reports (`docs/trace-format.md`,
/// "What a device sees").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The address is at or above `2^va_bits` (never wraps).
    OutOfRange,
    /// Nothing is mapped there for this device.
    Unmapped,
    /// Mapped, but the CPU protection forbids the access.
    Protection,
}

impl Fault {
    /// The name a trace prints: `"out_of_range"`, `"unmapped"`,
    /// `"protection"`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::OutOfRange => "out_of_range",
            Fault::Unmapped => "unmapped",
            Fault::Protection => "protection",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
