//! `svmap_peer_t`: a device peer process that maps SVM buffers at the same
//! addresses as this process and reaches them through its own device MMU
//! ([`svmap_peer`]).

use std::ffi::{c_char, c_int, c_void};
use std::process::Command;

use svmap_peer::{device, DeviceAccess, Peer, PeerConfig, PeerError, PEER_FD_ENV};
use svmap_svm::Fault;

use crate::linux::linux_failure;
use crate::svmap_status_t::{self, *};
use crate::{c_str, ffi_status, ffi_value, handle, range_end, status_of_errno, Failure, Out};

/// The CPU side of a device peer: the peer process, the window both agreed
/// on (free and reserved in both address spaces, below the device's
/// `2^va_bits`) and the SVM buffers in it. Owned by the caller from
/// `svmap_peer_spawn` to `svmap_peer_delete`; not thread-safe.
#[derive(Debug)]
pub struct svmap_peer_t {
    peer: Peer,
}

fn peer_failure(e: PeerError) -> Failure {
    let status = match &e {
        PeerError::InvalidArgument { .. }
        | PeerError::NotMapped { .. }
        | PeerError::WalkLimit { .. } => SVMAP_EINVAL,
        PeerError::Spawn { source } if source.kind() == std::io::ErrorKind::NotFound => {
            SVMAP_ENOENT
        }
        PeerError::Sys { errno, .. } => status_of_errno(errno.0),
        PeerError::NoCommonWindow { .. } | PeerError::PeerLimit { .. } => SVMAP_ENOMEM,
        PeerError::RetriesExhausted { .. } => SVMAP_EEXIST,
        PeerError::DeviceFault { fault, .. } => match fault {
            Fault::Unmapped => SVMAP_FAULT_UNMAPPED,
            Fault::Protection => SVMAP_FAULT_PROTECTION,
            Fault::OutOfRange => SVMAP_FAULT_OUT_OF_RANGE,
        },
        PeerError::Linux(_) => {
            let PeerError::Linux(inner) = e else {
                unreachable!()
            };
            return linux_failure(inner);
        }
        // Spawn, PeerExited, Timeout, Malformed, Remote, WindowMismatch, ...
        _ => SVMAP_EIO,
    };
    Failure::new(status, e.to_string())
}

/// The peer side. Call it first thing in `main`: in a process that
/// `svmap_peer_spawn` started as a peer (`SVMAP_PEER_FD` is set) it serves
/// the device until the CPU side lets it go and returns the exit status to
/// `exit()` with (0: a normal end). In any other process it returns -1 at
/// once.
#[no_mangle]
pub extern "C" fn svmap_peer_serve_from_env() -> c_int {
    ffi_value(1, || {
        if std::env::var_os(PEER_FD_ENV).is_none() {
            return Ok(-1);
        }
        Ok(device::serve_from_env())
    })
}

/// Starts a device peer with a `va_bits`-bit device (20..=56, 4 KiB pages,
/// 64 TLB entries) and agrees with it on a window of `window_len` bytes free
/// in both address spaces below `2^va_bits`, reserved on both sides. The
/// peer runs `exe` with the single argument `arg` (NULL: none), or, for a
/// NULL `exe`, this executable again with no arguments: its `main` must
/// begin with `svmap_peer_serve_from_env()`. Returns an owned handle, or
/// NULL with the last error set. Free it with `svmap_peer_delete`.
///
/// A NULL `exe` in a process that was itself started as a peer
/// (`SVMAP_PEER_FD` is set: its `main` did not call
/// `svmap_peer_serve_from_env()` first) is refused with `SVMAP_EINVAL`:
/// it would start peers of peers without end.
///
/// # Safety
///
/// `exe` and `arg` are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn svmap_peer_spawn(
    exe: *const c_char,
    arg: *const c_char,
    va_bits: u32,
    window_len: u64,
) -> Option<Box<svmap_peer_t>> {
    ffi_value(None, || {
        let mut cmd = if exe.is_null() {
            if std::env::var_os(PEER_FD_ENV).is_some() {
                return Err(Failure::inval(format!(
                    "svmap_peer_spawn(NULL exe) in a process started as a device peer \
                     ({PEER_FD_ENV} is set) would start itself again without end: its main \
                     must begin with svmap_peer_serve_from_env()"
                )));
            }
            let me = std::env::current_exe()
                .map_err(|e| Failure::new(SVMAP_EIO, format!("this executable: {e}")))?;
            Command::new(me)
        } else {
            // SAFETY: the caller's contract for `exe`.
            Command::new(unsafe { c_str(exe, "exe") }?)
        };
        if !arg.is_null() {
            // SAFETY: the caller's contract for `arg`.
            cmd.arg(unsafe { c_str(arg, "arg") }?);
        }
        let peer = Peer::spawn(cmd, &PeerConfig::new(va_bits, window_len)).map_err(peer_failure)?;
        Ok(Some(Box::new(svmap_peer_t { peer })))
    })
}

/// Deletes the peer handle: asks the peer to exit, reaps it (killing it
/// after a timeout), and releases every buffer and the window. Takes ownership; NULL is fine.
#[no_mangle]
pub extern "C" fn svmap_peer_delete(peer: Option<Box<svmap_peer_t>>) {
    ffi_value((), || {
        if let Some(p) = peer {
            let _ = p.peer.shutdown();
        }
        Ok(())
    })
}

/// The peer's process id (0 for NULL).
#[no_mangle]
pub extern "C" fn svmap_peer_pid(peer: Option<&svmap_peer_t>) -> u32 {
    ffi_value(0, || Ok(handle(peer, "peer")?.peer.pid()))
}

/// The agreed window `[*out_start, *out_end)`.
///
/// # Safety
///
/// `out_start` and `out_end` are NULL (`SVMAP_EINVAL`) or valid for
/// writing a `uint64_t` each.
#[no_mangle]
pub unsafe extern "C" fn svmap_peer_window(
    peer: Option<&svmap_peer_t>,
    out_start: *mut u64,
    out_end: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for both.
        let (s, e) = unsafe {
            (
                Out::new(out_start, "out_start")?,
                Out::new(out_end, "out_end")?,
            )
        };
        let (lo, hi) = handle(peer, "peer")?.peer.window();
        s.write(lo);
        e.write(hi);
        Ok(())
    })
}

/// Allocates an SVM buffer of `length` bytes (whole device pages) in the
/// window: real, zero-filled memory mapped at the same address in this
/// process and in the peer, and in the device's page table (read-only for
/// the device with `device_read_only`). Writes the pointer to `*out_ptr`.
///
/// # Safety
///
/// `out_ptr` is NULL (`SVMAP_EINVAL`) or valid for writing a `void *`.
#[no_mangle]
pub unsafe extern "C" fn svmap_peer_alloc(
    peer: Option<&mut svmap_peer_t>,
    length: u64,
    device_read_only: bool,
    out_ptr: *mut *mut c_void,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_ptr`.
        let out = unsafe { Out::new(out_ptr, "out_ptr") }?;
        let p = handle(peer, "peer")?;
        let access = if device_read_only {
            DeviceAccess::ReadOnly
        } else {
            DeviceAccess::ReadWrite
        };
        let buf = p.peer.alloc_with(length, access).map_err(peer_failure)?;
        out.write(buf.as_ptr().cast());
        Ok(())
    })
}

/// Frees the SVM buffer that starts at `ptr`: the device is invalidated
/// (and the peer unmaps it) before the memory goes, so the device's next
/// access there faults. `SVMAP_EINVAL` if `ptr` does not start a live
/// buffer of this peer.
#[no_mangle]
pub extern "C" fn svmap_peer_dealloc(
    peer: Option<&mut svmap_peer_t>,
    ptr: *mut c_void,
) -> svmap_status_t {
    ffi_status(|| {
        let p = handle(peer, "peer")?;
        let addr = ptr as u64;
        let buf = p
            .peer
            .buffers()
            .find(|b| b.addr == addr)
            .ok_or_else(|| Failure::inval(format!("{addr:#x} does not start a live buffer")))?;
        p.peer.free(buf).map_err(peer_failure)
    })
}

/// The device walks a linked list through its MMU, starting at `head`
/// (NULL: empty): nodes are `struct { uint64_t next; uint64_t value; }`,
/// `next` a pointer (0 ends it), at most `max_nodes` of them. Writes the
/// node count and the FNV-1a checksum of the values (from
/// 0xcbf29ce484222325, `h = (h ^ value) * 0x100000001b3` per node).
/// Returns the device fault (`SVMAP_FAULT_*`) if a load faults.
///
/// # Safety
///
/// `out_count` and `out_checksum` are NULL (`SVMAP_EINVAL`) or valid for
/// writing a `uint64_t` each. `head` is only an address here; the peer
/// reads through its own mapping.
#[no_mangle]
pub unsafe extern "C" fn svmap_peer_walk_list(
    peer: Option<&mut svmap_peer_t>,
    head: *const c_void,
    max_nodes: u64,
    out_count: *mut u64,
    out_checksum: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for both.
        let (c, s) = unsafe {
            (
                Out::new(out_count, "out_count")?,
                Out::new(out_checksum, "out_checksum")?,
            )
        };
        let p = handle(peer, "peer")?;
        let r = p
            .peer
            .walk_list(head as u64, max_nodes)
            .map_err(peer_failure)?;
        c.write(r.count);
        s.write(r.checksum);
        Ok(())
    })
}

/// The device sums the `uint64_t` words of `[addr, addr + length)`
/// (wrapping; `addr` 8-aligned, `length` a multiple of 8) through its MMU.
/// `SVMAP_EINVAL` for an unaligned `addr` or `length` or a range that wraps
/// past 2^64; the device fault (`SVMAP_FAULT_*`) if a load faults.
///
/// # Safety
///
/// `out_sum` is NULL (`SVMAP_EINVAL`) or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_peer_sum_u64(
    peer: Option<&mut svmap_peer_t>,
    addr: *const c_void,
    length: u64,
    out_sum: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_sum`.
        let out = unsafe { Out::new(out_sum, "out_sum") }?;
        let p = handle(peer, "peer")?;
        let addr = addr as u64;
        range_end(addr, length)?;
        if !addr.is_multiple_of(8) || !length.is_multiple_of(8) {
            return Err(Failure::inval(format!(
                "sum of [{addr:#x}, +{length:#x}): not whole 8-byte words"
            )));
        }
        out.write(p.peer.sum_u64(addr, length).map_err(peer_failure)?);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that hits its own address-space limit is `SVMAP_ENOMEM`, and
    /// the message keeps the peer's numbers.
    #[test]
    fn a_peer_at_its_limit_is_enomem() {
        let e = PeerError::PeerLimit {
            pid: 42,
            addr: 0x100_0000_0000,
            len: 1 << 34,
            source: svmap_linux::error::Error::AddressSpaceLimit {
                call: "mmap",
                len: 1 << 34,
                vm_size: 1 << 30,
                limit: 1 << 32,
            },
        };
        let text = e.to_string();
        let f = peer_failure(e);
        assert_eq!(f.status, SVMAP_ENOMEM, "{text}");
        assert!(
            f.msg.contains("RLIMIT_AS") && f.msg.contains("pid 42"),
            "{}",
            f.msg
        );
    }
}
