//! The exact message of every error of svmap-core: callers show these to
//! users (the CLI, the C ABI's last-error message), so they are part of the
//! interface.

use svmap_core::linux::Errno;
use svmap_core::{FitError, HeapError, MapError, SearchError, Vma, VmaFlags};

#[test]
fn search_error_messages() {
    let cases = [
        (
            SearchError::LengthOverflow,
            "length plus alignment padding overflows 64 bits",
        ),
        (
            SearchError::EmptyWindow,
            "the search window is empty or shorter than the length",
        ),
        (
            SearchError::NoSpace,
            "no free gap of that length in the window",
        ),
        (
            SearchError::RetryLimit,
            "guard-gap retries made no progress",
        ),
    ];
    for (e, msg) in cases {
        assert_eq!(e.to_string(), msg);
        let dynamic: &dyn std::error::Error = &e;
        assert!(dynamic.source().is_none());
    }
}

#[test]
fn fit_error_messages() {
    let cases = [
        (FitError::ZeroLength, "zero length"),
        (
            FitError::BadAlignment(0x3000),
            "alignment 0x3000 is not a power of two",
        ),
        (
            FitError::BadAlignment(0),
            "alignment 0x0 is not a power of two",
        ),
        (
            FitError::EmptyWindow {
                low: 0x2000,
                high: 0x1000,
            },
            "window [0x2000, 0x1000) is empty or too short",
        ),
        (FitError::NoSpace, "no aligned placement fits in the window"),
        (
            FitError::TooManyVmas,
            "the map holds the maximum number of VMAs",
        ),
        (
            FitError::TooManyHoles,
            "the heap holds the maximum number of holes",
        ),
    ];
    for (e, msg) in cases {
        assert_eq!(e.to_string(), msg);
        let dynamic: &dyn std::error::Error = &e;
        assert!(dynamic.source().is_none());
    }
}

#[test]
fn map_error_messages() {
    let existing = Vma {
        start: 0x10000,
        end: 0x20000,
        flags: VmaFlags::GROWSDOWN,
    };
    let cases = [
        (
            MapError::EmptyRange {
                start: 0x5000,
                end: 0x4000,
            },
            "empty or inverted range [0x5000, 0x4000)",
        ),
        (
            MapError::Overlap {
                start: 0x1f000,
                end: 0x30000,
                existing,
            },
            "[0x1f000, 0x30000) overlaps the VMA [0x10000, 0x20000)",
        ),
        (
            MapError::TooManyVmas,
            "the map holds the maximum number of VMAs",
        ),
    ];
    for (e, msg) in cases {
        assert_eq!(e.to_string(), msg);
        let dynamic: &dyn std::error::Error = &e;
        assert!(dynamic.source().is_none());
    }
}

/// The errors the map itself returns read as above.
#[test]
fn map_errors_as_returned() {
    let mut m = svmap_core::AddressMap::new();
    m.insert(0x10000, 0x20000, VmaFlags::NONE).unwrap();
    let e = m.insert(0x18000, 0x28000, VmaFlags::NONE).unwrap_err();
    assert_eq!(
        e.to_string(),
        "[0x18000, 0x28000) overlaps the VMA [0x10000, 0x20000)"
    );
    let e = m.unmap(0x3000, 0x2000).unwrap_err();
    assert_eq!(e.to_string(), "empty or inverted range [0x3000, 0x2000)");
}

/// `Errno` prints its symbolic name, or `E<number>` without one, and the
/// name parses back.
#[test]
fn errno_names() {
    let cases = [
        (Errno::EPERM, "EPERM"),
        (Errno::ENOMEM, "ENOMEM"),
        (Errno::EEXIST, "EEXIST"),
        (Errno::EINVAL, "EINVAL"),
        (Errno(0), "E0"),
        (Errno(4095), "E4095"),
        (Errno(u16::MAX), "E65535"),
    ];
    for (e, msg) in cases {
        assert_eq!(e.to_string(), msg);
        assert_eq!(e.name().to_string(), msg);
    }
    for e in [
        Errno::EPERM,
        Errno::ENOMEM,
        Errno::EEXIST,
        Errno::EINVAL,
        Errno(4095),
    ] {
        assert_eq!(Errno::from_name(&e.to_string()), Some(e));
    }
    // No number outside 1..=4095 is an errno.
    assert_eq!(Errno::from_name("E0"), None);
    assert_eq!(Errno::from_name("E4096"), None);
    assert_eq!(Errno::from_name("ENOTANERRNO"), None);
}

#[test]
fn heap_error_messages() {
    let cases = [
        (
            HeapError::EmptyRange {
                start: 0x2000,
                end: 0x1000,
            },
            "empty range [0x2000, 0x1000)",
        ),
        (
            HeapError::AlreadyFree {
                start: 0x1000,
                end: 0x3000,
                hole_start: 0x2000,
                hole_end: 0x4000,
            },
            "[0x1000, 0x3000) meets the free hole [0x2000, 0x4000)",
        ),
        (
            HeapError::NotFree {
                start: 0x1000,
                end: 0x2000,
            },
            "[0x1000, 0x2000) is not inside one free hole",
        ),
        (
            HeapError::TooManyHoles,
            "the heap holds the maximum number of holes",
        ),
    ];
    for (e, msg) in cases {
        assert_eq!(e.to_string(), msg);
        let dynamic: &dyn std::error::Error = &e;
        assert!(dynamic.source().is_none());
    }
}
