//! The kernel as a reference: anonymous `PROT_NONE` `mmap` + `munmap`.
#![allow(unsafe_code)]

use crate::workload::Churn;

/// Live mappings of this process, made with
/// `mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)`.
/// The kernel places them top-down (highest first) with page alignment;
/// neighbouring mappings with equal flags may merge into one VMA.
#[derive(Debug, Default)]
pub struct Kernel;

/// A mapping: address and length.
#[derive(Clone, Copy, Debug)]
pub struct Mapping(*mut libc::c_void, usize);

impl Default for Mapping {
    fn default() -> Self {
        Mapping(std::ptr::null_mut(), 0)
    }
}

impl Churn for Kernel {
    type Handle = Mapping;

    fn alloc(&mut self, bytes: u64) -> Mapping {
        let len = bytes as usize;
        // SAFETY: an anonymous, inaccessible mapping at an address of the
        // kernel's choice: it cannot alias any memory Rust knows about.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "mmap failed: {}",
            std::io::Error::last_os_error()
        );
        Mapping(p, len)
    }

    fn free(&mut self, m: Mapping) {
        if m.0.is_null() {
            return;
        }
        // SAFETY: `m` is a mapping this adapter made and has not unmapped
        // yet (every handle is freed once); nothing references its pages.
        let r = unsafe { libc::munmap(m.0, m.1) };
        assert_eq!(r, 0, "munmap failed: {}", std::io::Error::last_os_error());
    }
}

/// Number of VMAs of this process (lines of `/proc/self/maps`).
pub fn vma_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count())
}

/// `vm.max_map_count`.
pub fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65530)
}
