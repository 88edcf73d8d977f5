//! Every system call of the crate, behind safe functions; the only module with `unsafe`.
//!
//! Calls go through `rustix`. `libc` remains for what rustix has no call for:
//!
//! - `personality(2)` and its `ADDR_NO_RANDOMIZE` / `ADDR_COMPAT_LAYOUT` bits: rustix has no
//!   wrapper for it.
//! - `sbrk(0)`, the program break: rustix's `brk` sits in its hidden runtime API, meant for
//!   processes without a libc, and does not return glibc's view of the break.
//! - `memchr(3)`: not a system call, so not rustix's business; glibc's vectorised scan keeps
//!   the smaps parser fast in debug builds, where a byte-by-byte loop over the megabytes of
//!   each snapshot would dominate the kernel-oracle tests.
//! - the `MAP_32BIT` value, which rustix's `MapFlags` does not name.

use core::ffi::{c_void, CStr};
use std::io;

use rustix::mm::{MapFlags, ProtFlags};
use rustix::process::{Resource, Rlimit};

/// `ADDR_NO_RANDOMIZE`: no address-space randomisation after the next `execve`.
pub const ADDR_NO_RANDOMIZE: u64 = libc::ADDR_NO_RANDOMIZE as u64;
/// `ADDR_COMPAT_LAYOUT`: the bottom-up (legacy) layout after the next `execve`.
pub const ADDR_COMPAT_LAYOUT: u64 = libc::ADDR_COMPAT_LAYOUT as u64;
/// `MAP_32BIT` (x86-64): place the mapping in the first 2 GiB.
pub const MAP_32BIT: MapFlags = MapFlags::from_bits_retain(libc::MAP_32BIT as u32);
/// The stack rlimit value that stands for `RLIM_INFINITY`.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// `personality(persona)`: sets the persona and returns the previous one;
/// `persona == 0xffffffff` only reads it.
pub fn personality(persona: u64) -> io::Result<u64> {
    // SAFETY: personality() takes a plain integer and touches no memory of this process; a
    // new persona affects only later execve()s (the layout bits only those), and
    // 0xffffffff only reads the current one.
    let previous = unsafe { libc::personality(persona as libc::c_ulong) };
    if previous < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(previous as u64)
}

/// The soft `RLIMIT_STACK` ([`RLIM_INFINITY`] when unlimited).
pub fn stack_rlimit() -> u64 {
    rustix::process::getrlimit(Resource::Stack)
        .current
        .unwrap_or(RLIM_INFINITY)
}

/// Sets the soft `RLIMIT_STACK` to `cur` ([`RLIM_INFINITY`] for unlimited), raising the hard
/// limit too when it is lower (which only a privileged process may do).
pub fn set_stack_rlimit(cur: u64) -> io::Result<()> {
    let as_limit = |v: u64| (v != RLIM_INFINITY).then_some(v);
    let mut lim = rustix::process::getrlimit(Resource::Stack);
    lim.current = as_limit(cur);
    if lim.maximum.is_some_and(|max| max < cur) {
        lim.maximum = as_limit(cur);
    }
    rustix::process::setrlimit(
        Resource::Stack,
        Rlimit {
            current: lim.current,
            maximum: lim.maximum,
        },
    )?;
    Ok(())
}

/// `mmap(hint, length, PROT_NONE, MAP_ANONYMOUS | flags, -1, 0)`: the address the kernel
/// answered, or its errno.
///
/// With `MAP_FIXED` in `flags`, `[hint, hint + length)` must be memory the caller mapped
/// itself with this function and that nothing else uses: the kernel replaces whatever is
/// there.
pub fn mmap_none(hint: u64, length: u64, flags: MapFlags) -> io::Result<u64> {
    // SAFETY: an anonymous PROT_NONE mapping creates no memory that Rust code can reach. The
    // hint is only a hint without MAP_FIXED*, and MAP_FIXED_NOREPLACE never replaces a
    // mapping; callers pass MAP_FIXED only for ranges that they mapped themselves with this
    // function (or free ranges), so no memory that Rust code or libc uses is replaced. The
    // raw address goes to the kernel unchanged, aligned or not: judging it is the point.
    let p = unsafe {
        rustix::mm::mmap_anonymous(
            hint as usize as *mut c_void,
            length as usize,
            ProtFlags::empty(),
            flags,
        )
    }?;
    Ok(p as usize as u64)
}

/// `munmap(start, length)`.
///
/// `[start, start + length)` must hold only mappings made with [`mmap_none`] by the caller
/// (or nothing).
pub fn munmap(start: u64, length: u64) -> io::Result<()> {
    // SAFETY: callers pass only ranges that they mapped themselves with `mmap_none`
    // (PROT_NONE, never referenced by Rust code or libc), so no live memory goes away.
    unsafe { rustix::mm::munmap(start as usize as *mut c_void, length as usize) }?;
    Ok(())
}

/// The program break (`sbrk(0)`).
pub fn program_break() -> u64 {
    // SAFETY: sbrk(0) only reads the current break; it moves nothing.
    let p = unsafe { libc::sbrk(0) };
    p as usize as u64
}

/// Reads the whole file at `path` into `buf`, setting `*len`. Returns `Ok(false)` when the
/// file did not fit. Makes no heap allocation (the descriptor closes when `fd` drops).
pub fn read_file_into(path: &CStr, buf: &mut [u8], len: &mut usize) -> io::Result<bool> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut filled = 0;
    let result = loop {
        if filled == buf.len() {
            break Ok(false);
        }
        match rustix::io::read(&fd, &mut buf[filled..]) {
            Ok(0) => break Ok(true),
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => break Err(e.into()),
        }
    };
    *len = filled;
    result
}

/// The index of the first `byte` in `s` (`memchr(3)`; see the module header for why libc).
pub fn find_byte(s: &[u8], byte: u8) -> Option<usize> {
    if s.is_empty() {
        // An empty slice's pointer may be dangling (`&[]`); C wants a valid
        // pointer even for a zero length.
        return None;
    }
    // SAFETY: `s` is a live, non-empty slice of `s.len()` readable bytes;
    // memchr reads no further, and a non-null result points into `s`.
    let p = unsafe { libc::memchr(s.as_ptr().cast(), i32::from(byte), s.len()) };
    if p.is_null() {
        None
    } else {
        Some(p as usize - s.as_ptr() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_byte_on_empty_and_unterminated_inputs() {
        assert_eq!(find_byte(&[], b'\n'), None);
        assert_eq!(find_byte(b"abc", b'\n'), None);
        assert_eq!(find_byte(b"ab\n", b'\n'), Some(2));
        assert_eq!(find_byte(b"\nab\n", b'\n'), Some(0));
    }

    #[test]
    fn read_file_into_reports_fit_and_missing_files() {
        let mut buf = [0u8; 1];
        let mut len = 0;
        assert!(read_file_into(c"/nonexistent/smaps", &mut buf, &mut len).is_err());
        // /proc/self/stat is longer than one byte: it does not fit.
        assert!(!read_file_into(c"/proc/self/stat", &mut buf, &mut len).unwrap());
        assert_eq!(len, 1);
        let mut big = vec![0u8; 1 << 16];
        assert!(read_file_into(c"/proc/self/stat", &mut big, &mut len).unwrap());
        let pid = std::process::id().to_string();
        assert!(big[..len].starts_with(pid.as_bytes()));
    }

    #[test]
    fn mmap_none_and_munmap_round_trip() {
        let flags = MapFlags::PRIVATE | MapFlags::NORESERVE;
        let addr = mmap_none(0, 4 * 4096, flags).unwrap();
        assert_eq!(addr % 4096, 0);
        // MAP_FIXED_NOREPLACE over our own mapping: EEXIST, nothing replaced.
        let e = mmap_none(addr, 4096, flags | MapFlags::FIXED_NOREPLACE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        // MAP_FIXED over our own mapping lands exactly there.
        let fixed = mmap_none(addr + 4096, 4096, flags | MapFlags::FIXED).unwrap();
        assert_eq!(fixed, addr + 4096);
        munmap(addr, 4 * 4096).unwrap();
        // Zero length is EINVAL.
        let e = mmap_none(0, 0, flags).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        // An unaligned munmap is EINVAL.
        assert_eq!(
            munmap(addr + 1, 4096).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn map_32bit_lands_below_2_gib() {
        let flags = MapFlags::PRIVATE | MapFlags::NORESERVE | MAP_32BIT;
        let addr = mmap_none(0, 4096, flags).unwrap();
        munmap(addr, 4096).unwrap();
        assert!(addr + 4096 <= 1 << 31, "{addr:#x}");
    }

    #[test]
    fn personality_reads_without_changing() {
        let before = personality(0xffff_ffff).unwrap();
        assert_eq!(personality(0xffff_ffff).unwrap(), before);
    }

    #[test]
    fn stack_rlimit_reads_back_what_was_set() {
        let cur = stack_rlimit();
        // Setting the current value again must succeed and change nothing.
        set_stack_rlimit(cur).unwrap();
        assert_eq!(stack_rlimit(), cur);
    }

    #[test]
    fn program_break_is_a_user_address() {
        let brk = program_break();
        assert!(brk > 0 && brk < 1 << 47, "{brk:#x}");
    }
}
