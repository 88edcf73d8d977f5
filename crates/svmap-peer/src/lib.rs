//! # svmap-peer
//!
//! A second process at identical addresses: the device peer (layer 5 of
//! `docs/design.md`, on top of `svmap-linux` and the SVM layer's device
//! mirror).
//!
//! [`Peer::spawn`] starts a peer process (this executable re-executed in a
//! peer role, or `svmap device-peer`) connected over a Unix
//! `SOCK_SEQPACKET` socketpair whose peer end it inherits (descriptor number
//! in `SVMAP_PEER_FD`). The peer hosts a device: an
//! [`svmap_svm::Mirror`] (device MMU with its own VA width, page size, page
//! table and TLB) over the real memory of SVM buffers that the CPU side
//! creates as memfds and passes with `SCM_RIGHTS`.
//!
//! ```text
//!  CPU process (Peer)                           peer process (serve)
//!  Hello{va_bits,page,tlb}  ------------------>  HelloAck{pid,floor,high}
//!  Negotiate{round,len,..} + Vmas(own maps) -->  reads own maps
//!                           <------------------  Vmas(own maps), Reserved{Ok|Busy|NoSpace|limit}
//!  both: find_fit over the union of both views in [floor, 2^N), guard gaps kept
//!  CPU reserves the same window  Commit ------>  keeps it        (or Abandon -> next round)
//!  alloc: memfd in CPU window, Map{addr,len}+fd  maps it MAP_SHARED|MAP_FIXED at addr,
//!                           <------------------  MapAck{id}      installs PTEs (frame = id)
//!  Walk/Sum/Copy ----------------------------->  every access: Mirror::access (TLB, walk,
//!                           <------------------  Done | Fault{kind,addr}   fault handler)
//!  free: Unmap{seq,addr} --------------------->  invalidate_start (PTEs, TLB), PROT_NONE,
//!        then the CPU frees  <-----------------  UnmapAck{seq}    invalidate_end
//! ```
//!
//! # Failures
//!
//! Every wait on the peer is bounded ([`PeerConfig::timeout`]). A peer that
//! exits (or is killed) is reported as [`PeerError::PeerExited`] with its
//! wait status; a peer that times out or sends a malformed message is
//! killed and reaped, and the call reports [`PeerError::Timeout`] /
//! [`PeerError::Malformed`]. Either way the CPU side's own memory (the
//! heap, every live buffer and its contents) stays intact and usable; later
//! device operations report [`PeerError::PeerExited`].

pub mod device;
mod sys;
pub mod wire;

use core::fmt;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use rustix::event::PollFlags;

use svmap_core::{FitError, FitRequest, SearchParams, VmaFlags};
use svmap_linux::error::{Errno, Error};
use svmap_linux::heap::Heap;
use svmap_linux::maps::{self, Target, View};
use svmap_linux::reserve::{self, Reservation, STACK_GUARD_GAP};
use svmap_linux::sys::PAGE;
use svmap_svm::interval::union_map;
use svmap_svm::Fault;
use wire::{Msg, Reserved, WireError};

/// The most mappings [`DirectPeer::own_maps`] accepts from a peer (far
/// above any `vm.max_map_count` in use; a bound on what a misbehaving peer
/// can make this side hold).
pub const MAX_OWN_MAPS: usize = 1 << 22;

/// The environment variable that tells a peer which descriptor is its socket.
pub const PEER_FD_ENV: &str = "SVMAP_PEER_FD";
/// Fault injection for tests (see [`device::Failpoint`]).
pub const FAILPOINT_ENV: &str = "SVMAP_PEER_FAILPOINT";

/// Offset of `next` in a list node (`#[repr(C)] struct { next: u64, value: u64 }`).
pub const NODE_NEXT: u64 = 0;
/// Offset of `value` in a list node.
pub const NODE_VALUE: u64 = 8;
/// Size of a list node.
pub const NODE_SIZE: u64 = 16;
/// The checksum of an empty list (FNV-1a offset basis).
pub const CHECKSUM_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// One step of the list checksum: FNV-1a over whole `u64` values, in list
/// order. Compute it locally the same way to compare with
/// [`Peer::walk_list`].
pub fn checksum_step(h: u64, value: u64) -> u64 {
    (h ^ value).wrapping_mul(0x0000_0100_0000_01b3)
}

/// How a peer process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal, if one killed it.
    pub signal: Option<i32>,
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => f.write_str("unknown status"),
        }
    }
}

/// Errors of the peer protocol and the device.
#[derive(Debug)]
pub enum PeerError {
    /// The configuration is unusable.
    InvalidArgument {
        /// What was wrong.
        what: String,
    },
    /// The peer could not be started.
    Spawn {
        /// The failure.
        source: std::io::Error,
    },
    /// A system call on the CPU side failed.
    Sys {
        /// Which call.
        call: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// A reservation or heap operation on the CPU side failed.
    Linux(Error),
    /// The peer process has exited (or was killed).
    PeerExited {
        /// How it ended.
        status: ExitInfo,
        /// What the CPU side was doing when it noticed.
        during: &'static str,
    },
    /// The peer did not answer in time; it has been killed.
    Timeout {
        /// What the CPU side was waiting for.
        during: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The peer sent something that is not a valid answer; it has been
    /// killed.
    Malformed {
        /// What the CPU side was waiting for.
        during: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The peer could not reserve the agreed window in its own address
    /// space because it is at one of its limits: `source` is
    /// [`Error::AddressSpaceLimit`] or [`Error::MapCountLimit`] with the
    /// peer's numbers (its `RLIMIT_AS` and `VmSize`, or its mapping count
    /// and `vm.max_map_count`), as svmap-linux tells them apart there.
    PeerLimit {
        /// The peer's pid.
        pid: u32,
        /// Start of the window.
        addr: u64,
        /// Length of the window.
        len: u64,
        /// The limit, with the peer's numbers.
        source: Error,
    },
    /// The peer refused a request (its error code and message).
    Remote {
        /// One of [`wire::code`].
        code: u32,
        /// The peer's message.
        message: String,
    },
    /// No window of the requested length is free in both address spaces.
    NoCommonWindow {
        /// Window low.
        low: u64,
        /// Window high.
        high: u64,
        /// Requested length.
        len: u64,
    },
    /// The two sides computed different windows from the same views (a
    /// protocol bug); the peer has been killed.
    WindowMismatch {
        /// The CPU's answer.
        cpu: Option<u64>,
        /// The peer's answer.
        peer: Option<u64>,
    },
    /// Every agreement round lost a race to another mapping.
    RetriesExhausted {
        /// Rounds tried.
        tries: u32,
    },
    /// The device faulted.
    DeviceFault {
        /// `out_of_range`, `unmapped` or `protection`.
        fault: Fault,
        /// The faulting address.
        addr: u64,
        /// The access was a write.
        write: bool,
    },
    /// A list walk visited its node limit without reaching the end.
    WalkLimit {
        /// Nodes visited.
        nodes: u64,
    },
    /// The address does not lie in a live SVM buffer of this CPU side.
    NotMapped {
        /// The address.
        addr: u64,
    },
    /// The peer speaks another version of the protocol; it has been
    /// killed.
    VersionMismatch {
        /// This side's version ([`wire::VERSION`]).
        ours: u8,
        /// The version of the peer's packets.
        theirs: u8,
    },
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
            PeerError::Spawn { source } => write!(f, "cannot start the device peer: {source}"),
            PeerError::Sys { call, errno } => write!(f, "{call} failed: {errno}"),
            PeerError::Linux(e) => write!(f, "{e}"),
            PeerError::PeerExited { status, during } => {
                write!(f, "the device peer exited ({status}) during {during}")
            }
            PeerError::Timeout { during, after } => write!(
                f,
                "the device peer did not answer {during} within {after:?}; it was killed"
            ),
            PeerError::Malformed { during, reason } => write!(
                f,
                "malformed message from the device peer during {during}: {reason}; it was killed"
            ),
            PeerError::PeerLimit {
                pid,
                addr,
                len,
                source,
            } => write!(
                f,
                "the device peer (pid {pid}) could not reserve the window \
                 [{addr:#x}, +{len:#x}) in its own address space: {source}"
            ),
            PeerError::Remote { code, message } => {
                write!(f, "the device peer refused (code {code}): {message}")
            }
            PeerError::NoCommonWindow { low, high, len } => write!(
                f,
                "no range of {len:#x} bytes in [{low:#x}, {high:#x}) is free in both processes"
            ),
            PeerError::WindowMismatch { cpu, peer } => write!(
                f,
                "the CPU side chose {cpu:#x?} and the peer {peer:#x?} from the same views"
            ),
            PeerError::RetriesExhausted { tries } => write!(
                f,
                "no common window after {tries} rounds: other mappings kept taking it"
            ),
            PeerError::DeviceFault { fault, addr, write } => write!(
                f,
                "device fault: {fault} at {addr:#x} ({})",
                if *write { "write" } else { "read" }
            ),
            PeerError::WalkLimit { nodes } => {
                write!(f, "the list walk stopped at its limit of {nodes} nodes")
            }
            PeerError::NotMapped { addr } => {
                write!(f, "{addr:#x} is not inside a live SVM buffer")
            }
            PeerError::VersionMismatch { ours, theirs } => write!(
                f,
                "the device peer speaks protocol version {theirs}, this side {ours}; it was killed"
            ),
        }
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PeerError::Spawn { source } => Some(source),
            PeerError::Linux(e) | PeerError::PeerLimit { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for PeerError {
    fn from(e: Error) -> Self {
        PeerError::Linux(e)
    }
}

/// The device the peer hosts and the window both sides agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Device VA width: the window lies below `2^va_bits` (20..=56).
    pub va_bits: u32,
    /// Device page size (a power of two, 4 KiB..=1 GiB). Buffers are whole
    /// device pages, aligned to one.
    pub page_size: u64,
    /// Device TLB entries.
    pub tlb_entries: u32,
    /// Window length (rounded up to the alignment).
    pub window_len: u64,
    /// Window alignment (a power of two; at least the device page).
    pub window_align: u64,
    /// Lowest window start (raised to both processes' `mmap_min_addr`).
    pub low: u64,
    /// Highest fit first (true) or lowest.
    pub topdown: bool,
    /// Agreement rounds before giving up on races.
    pub max_tries: u32,
    /// The bound on every wait for the peer.
    pub timeout: Duration,
}

impl PeerConfig {
    /// A 4 KiB-page device with `va_bits` bits and a window of `window_len`
    /// bytes; 64 TLB entries, 8 rounds, 10 s timeout.
    pub fn new(va_bits: u32, window_len: u64) -> PeerConfig {
        PeerConfig {
            va_bits,
            page_size: PAGE,
            tlb_entries: 64,
            window_len,
            window_align: PAGE,
            low: 0,
            topdown: true,
            max_tries: 8,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What the device can do with a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceAccess {
    /// Read and write.
    ReadWrite,
    /// Read only: device writes fault with `protection`.
    ReadOnly,
}

/// An SVM buffer, valid at the same address in both processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SvmBuf {
    /// First address.
    pub addr: u64,
    /// Length (whole device pages).
    pub len: u64,
    /// The device's id for it (its frame number in the device page table).
    pub id: u64,
}

impl SvmBuf {
    /// The start as a pointer (valid in this process until freed).
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.addr + self.len
    }
}

/// The result of [`Peer::walk_list`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkResult {
    /// Nodes visited.
    pub count: u64,
    /// [`checksum_step`] folded over the values, from [`CHECKSUM_INIT`].
    pub checksum: u64,
}

/// The device's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Accesses answered by a page-table walk.
    pub walks: u64,
    /// Fault-handler runs.
    pub faults: u64,
    /// Fault-handler retries.
    pub retries: u64,
    /// Invalidations.
    pub invalidations: u64,
    /// PTEs installed.
    pub installs: u64,
    /// TLB hits.
    pub tlb_hits: u64,
    /// TLB misses.
    pub tlb_misses: u64,
    /// Buffers mapped in the peer.
    pub live_buffers: u64,
    /// The last invalidation sequence number the peer acknowledged.
    pub last_seq: u64,
}

impl DeviceStats {
    fn from_words(w: [u64; 9]) -> Self {
        DeviceStats {
            walks: w[0],
            faults: w[1],
            retries: w[2],
            invalidations: w[3],
            installs: w[4],
            tlb_hits: w[5],
            tlb_misses: w[6],
            live_buffers: w[7],
            last_seq: w[8],
        }
    }
    pub(crate) fn to_words(self) -> [u64; 9] {
        [
            self.walks,
            self.faults,
            self.retries,
            self.invalidations,
            self.installs,
            self.tlb_hits,
            self.tlb_misses,
            self.live_buffers,
            self.last_seq,
        ]
    }
}

/// What one side occupies, as the protocol sends it: `(start, end,
/// grows_down)`.
pub type Occupied = (u64, u64, bool);

/// The occupied ranges of a view (user half only).
pub fn occupied(view: &View) -> Vec<Occupied> {
    view.map
        .iter()
        .map(|v| (v.start, v.end, v.flags.contains(VmaFlags::GROWSDOWN)))
        .collect()
}

/// What both sides search for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowRequest {
    /// Length.
    pub len: u64,
    /// Alignment.
    pub align: u64,
    /// Lowest start (both floors already applied).
    pub low: u64,
    /// Highest end.
    pub high: u64,
    /// Highest fit first.
    pub topdown: bool,
}

/// The window both sides compute: svmap's exact fit over the union of the
/// two views. A grows-down range occupies its guard gap too
/// ([`STACK_GUARD_GAP`] below it), so the union keeps every guard gap of
/// either side whatever lies next to it in the other. Deterministic: both
/// sides get the same answer from the same two lists.
pub fn common_window(a: &[Occupied], b: &[Occupied], req: &WindowRequest) -> Result<u64, FitError> {
    let taken = a.iter().chain(b).map(|&(s, e, gd)| {
        let s = if gd {
            s.saturating_sub(STACK_GUARD_GAP) & !(PAGE - 1)
        } else {
            s
        };
        (s, e)
    });
    // The SVM layer's union: one VMA per maximal occupied range, so the
    // holes of `map` are free in both processes.
    let map = union_map(taken);
    map.find_fit(
        &FitRequest {
            length: req.len,
            low: req.low,
            high: req.high,
            align: req.align,
            align_offset: 0,
            topdown: req.topdown,
            respect_guard_gaps: true,
        },
        &SearchParams {
            mmap_min_addr: req.low,
            stack_guard_gap: STACK_GUARD_GAP,
            growsup_guard: false,
            page_size: PAGE,
        },
    )
}

/// Reads this process's view, re-reading a torn one a few times.
pub(crate) fn own_view() -> Result<View, Error> {
    let mut last = None;
    for _ in 0..8 {
        match maps::read_view(Target::SelfProcess) {
            Ok(v) => return Ok(v),
            Err(e @ Error::Inconsistent { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("eight tries"))
}

/// Why a channel operation failed.
#[derive(Debug)]
pub(crate) enum ChanError {
    /// End of stream or `EPIPE`/`ECONNRESET`: the other side is gone.
    Closed,
    /// Nothing within the deadline.
    Timeout,
    /// A packet that is not a valid message (or carries the wrong fds).
    Malformed(String),
    /// A packet of another protocol version (this one).
    Version(u8),
    /// Another failure.
    Sys(&'static str, Errno),
}

/// One end of the socketpair with message framing and deadlines.
#[derive(Debug)]
pub(crate) struct Channel {
    fd: OwnedFd,
    buf: Vec<u8>,
    /// System calls made on the socket so far (sendmsg, recvmsg, poll).
    syscalls: u64,
}

impl Channel {
    pub(crate) fn new(fd: OwnedFd) -> Channel {
        Channel {
            fd,
            buf: vec![0; wire::MAX_PACKET],
            syscalls: 0,
        }
    }

    fn remaining_ms(deadline: Option<Instant>) -> Result<i32, ChanError> {
        match deadline {
            None => Ok(-1),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ChanError::Timeout);
                }
                Ok(left.as_millis().clamp(1, i32::MAX as u128) as i32)
            }
        }
    }

    /// Sends one message (with `fd` attached, if any) before `deadline`.
    pub(crate) fn send(
        &mut self,
        id: u64,
        msg: &Msg,
        fd: Option<BorrowedFd<'_>>,
        deadline: Option<Instant>,
    ) -> Result<(), ChanError> {
        self.send_raw(&msg.encode(id), fd, deadline)
    }

    /// Sends raw bytes as one packet.
    pub(crate) fn send_raw(
        &mut self,
        bytes: &[u8],
        fd: Option<BorrowedFd<'_>>,
        deadline: Option<Instant>,
    ) -> Result<(), ChanError> {
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        loop {
            self.syscalls += 1;
            match sys::send_packet(self.fd.as_fd(), bytes, &fds) {
                Ok(_) => return Ok(()),
                Err(e) if e.0 == libc::EAGAIN => {
                    let ms = Self::remaining_ms(deadline)?;
                    self.syscalls += 1;
                    let rev = sys::poll_one(self.fd.as_fd(), PollFlags::OUT, ms)
                        .map_err(|e| ChanError::Sys("poll", e))?;
                    if rev.intersects(PollFlags::HUP | PollFlags::ERR) {
                        return Err(ChanError::Closed);
                    }
                }
                Err(e) if e.0 == libc::EINTR => {}
                Err(e) if e.0 == libc::EPIPE || e.0 == libc::ECONNRESET => {
                    return Err(ChanError::Closed)
                }
                Err(e) => return Err(ChanError::Sys("sendmsg", e)),
            }
        }
    }

    /// Receives one message before `deadline`: `(id, msg, fds)`.
    pub(crate) fn recv(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(u64, Msg, Vec<OwnedFd>), ChanError> {
        loop {
            self.syscalls += 1;
            match sys::recv_packet(self.fd.as_fd(), &mut self.buf) {
                Ok(r) => {
                    if r.len == 0 && !r.truncated && r.fds.is_empty() {
                        return Err(ChanError::Closed);
                    }
                    if r.truncated {
                        return Err(ChanError::Malformed(format!(
                            "packet longer than {} bytes",
                            wire::MAX_PACKET
                        )));
                    }
                    if r.truncated_fds {
                        return Err(ChanError::Malformed("too many descriptors".into()));
                    }
                    let p = &self.buf[..r.len];
                    if p.len() >= wire::HEADER
                        && p[..4] == wire::MAGIC.to_le_bytes()
                        && p[4] != wire::VERSION
                    {
                        return Err(ChanError::Version(p[4]));
                    }
                    let (id, msg) =
                        Msg::decode(p).map_err(|WireError(s)| ChanError::Malformed(s))?;
                    let want_fd = matches!(msg, Msg::Map { .. } | Msg::Attach { .. });
                    if r.fds.len() != usize::from(want_fd) {
                        return Err(ChanError::Malformed(format!(
                            "{} message with {} descriptors",
                            msg.name(),
                            r.fds.len()
                        )));
                    }
                    return Ok((id, msg, r.fds));
                }
                Err(e) if e.0 == libc::EAGAIN => {
                    let ms = Self::remaining_ms(deadline)?;
                    self.syscalls += 1;
                    sys::poll_one(self.fd.as_fd(), PollFlags::IN, ms)
                        .map_err(|e| ChanError::Sys("poll", e))?;
                }
                Err(e) if e.0 == libc::EINTR => {}
                Err(e) if e.0 == libc::ECONNRESET => return Err(ChanError::Closed),
                Err(e) => return Err(ChanError::Sys("recvmsg", e)),
            }
        }
    }
}

/// Live or gone.
#[derive(Debug)]
enum State {
    Alive(Child),
    Dead(ExitInfo),
}

/// A command that runs `svmap device-peer` (this executable with the
/// `device-peer` argument): for the `svmap` binary itself.
pub fn device_peer_command() -> std::io::Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.arg("device-peer");
    Ok(c)
}

/// The CPU side of a device peer: the agreed window (an SVM heap in it),
/// the peer process, and the device operations.
#[derive(Debug)]
pub struct Peer {
    chan: Channel,
    state: State,
    pid: u32,
    /// The SVM heap in the agreed window (`None` only during `spawn`).
    heap: Option<Heap>,
    /// Live buffers: start -> buffer.
    bufs: BTreeMap<u64, SvmBuf>,
    cfg: PeerConfig,
    next_id: u64,
    next_seq: u64,
    tries: u32,
    setup: Duration,
    /// A request sent without waiting for its answer.
    in_flight: Option<InFlight>,
}

/// A request of the direct mode sent without waiting for its answer.
#[derive(Clone, Copy, Debug)]
enum InFlight {
    /// A batch invalidation ([`DirectPeer::send_invalidate_unmap`]).
    Invalidate {
        /// Request id.
        id: u64,
        /// Its sequence number.
        seq: u64,
    },
    /// A range mapping ([`DirectPeer::send_map_range`]).
    Map {
        /// Request id.
        id: u64,
        /// The address mapped.
        addr: u64,
    },
}

fn check_config(cfg: &PeerConfig) -> Result<(), PeerError> {
    let bad = |what: String| Err(PeerError::InvalidArgument { what });
    if !(20..=56).contains(&cfg.va_bits) {
        return bad(format!("va_bits {} is not in 20..=56", cfg.va_bits));
    }
    if !cfg.page_size.is_power_of_two() || !(PAGE..=1 << 30).contains(&cfg.page_size) {
        return bad(format!("device page size {:#x}", cfg.page_size));
    }
    if !cfg.window_align.is_power_of_two() {
        return bad(format!("window alignment {:#x}", cfg.window_align));
    }
    if cfg.window_len == 0 || cfg.tlb_entries == 0 || cfg.timeout.is_zero() {
        return bad("window length, TLB entries and timeout must be non-zero".into());
    }
    Ok(())
}

impl Peer {
    /// Starts `cmd` as the device peer (it must end up calling
    /// [`device::serve_from_env`]), agrees on a window free in both address
    /// spaces, reserves it on both sides and returns the CPU side with an
    /// empty SVM heap in that window.
    ///
    /// `cmd`'s stdin is set to null; its stdout and stderr are left as
    /// given. The peer's socket is passed as an inherited descriptor named
    /// in `SVMAP_PEER_FD`.
    pub fn spawn(cmd: Command, cfg: &PeerConfig) -> Result<Peer, PeerError> {
        let t0 = Instant::now();
        let mut p = Peer::start(cmd, cfg)?;
        let res = p.handshake()?;
        p.heap = Some(Heap::new(res));
        p.setup = t0.elapsed();
        Ok(p)
    }

    /// Starts the peer process, connected, before the hello.
    fn start(mut cmd: Command, cfg: &PeerConfig) -> Result<Peer, PeerError> {
        check_config(cfg)?;
        let (mine, theirs) = sys::socketpair_seqpacket().map_err(|errno| PeerError::Sys {
            call: "socketpair(AF_UNIX, SOCK_SEQPACKET)",
            errno,
        })?;
        sys::inherit_fd_in_child(&mut cmd, theirs.as_fd());
        {
            use std::os::fd::AsRawFd;
            cmd.env(PEER_FD_ENV, theirs.as_raw_fd().to_string());
        }
        cmd.stdin(Stdio::null());
        let child = cmd.spawn().map_err(|source| PeerError::Spawn { source })?;
        drop(theirs);
        let pid = child.id();
        Ok(Peer {
            chan: Channel::new(mine),
            state: State::Alive(child),
            pid,
            heap: None,
            bufs: BTreeMap::new(),
            cfg: cfg.clone(),
            next_id: 1,
            next_seq: 1,
            tries: 0,
            setup: Duration::ZERO,
            in_flight: None,
        })
    }

    /// The hello: the peer's floor and the top of its window.
    fn hello(&mut self) -> Result<(u64, u64), PeerError> {
        let during = "the hello";
        let msg = Msg::Hello {
            va_bits: self.cfg.va_bits,
            page_size: self.cfg.page_size,
            tlb_entries: self.cfg.tlb_entries,
        };
        match self.call(&msg, None, during)? {
            Msg::HelloAck { pid, floor, high } if pid == self.pid => Ok((floor, high)),
            m => Err(self.unexpected(&m, during)),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        Some(Instant::now() + self.cfg.timeout)
    }

    /// Turns a channel failure into the error to report, killing and
    /// reaping the peer (a peer that closed its end is reaped; one that
    /// timed out or misbehaved is killed first).
    fn fail(&mut self, e: ChanError, during: &'static str) -> PeerError {
        match e {
            ChanError::Closed => {
                let status = self.reap(Duration::from_secs(5));
                PeerError::PeerExited { status, during }
            }
            ChanError::Timeout => {
                self.kill();
                PeerError::Timeout {
                    during,
                    after: self.cfg.timeout,
                }
            }
            ChanError::Malformed(reason) => {
                self.kill();
                PeerError::Malformed { during, reason }
            }
            ChanError::Version(theirs) => {
                self.kill();
                PeerError::VersionMismatch {
                    ours: wire::VERSION,
                    theirs,
                }
            }
            ChanError::Sys(call, errno) => {
                self.kill();
                PeerError::Sys { call, errno }
            }
        }
    }

    /// Waits up to `grace` for the peer to exit (it closed its socket, so
    /// it is on its way), then kills it; returns how it ended.
    fn reap(&mut self, grace: Duration) -> ExitInfo {
        let end = Instant::now() + grace;
        loop {
            match &mut self.state {
                State::Dead(s) => return *s,
                State::Alive(child) => match child.try_wait() {
                    Ok(Some(st)) => {
                        let s = ExitInfo {
                            code: st.code(),
                            signal: st.signal(),
                        };
                        self.state = State::Dead(s);
                        return s;
                    }
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    _ => {
                        let _ = child.kill();
                        let st = child.wait().ok();
                        let s = ExitInfo {
                            code: st.and_then(|s| s.code()),
                            signal: st.and_then(|s| s.signal()),
                        };
                        self.state = State::Dead(s);
                        return s;
                    }
                },
            }
        }
    }

    /// Kills the peer with `SIGKILL` (if it is still running) and reaps it.
    /// The CPU side's memory is untouched; device operations fail with
    /// [`PeerError::PeerExited`] from now on, and `free` frees locally.
    pub fn kill(&mut self) -> ExitInfo {
        if let State::Alive(child) = &mut self.state {
            let _ = child.kill();
        }
        self.reap(Duration::from_secs(5))
    }

    /// How the peer ended, if it has (checks without blocking).
    pub fn exit_status(&mut self) -> Option<ExitInfo> {
        match &mut self.state {
            State::Dead(s) => Some(*s),
            State::Alive(child) => match child.try_wait() {
                Ok(Some(_)) => Some(self.reap(Duration::ZERO)),
                _ => None,
            },
        }
    }

    fn alive(&mut self, during: &'static str) -> Result<(), PeerError> {
        match &self.state {
            State::Dead(status) => Err(PeerError::PeerExited {
                status: *status,
                during,
            }),
            State::Alive(_) => Ok(()),
        }
    }

    /// One request and its answer.
    fn call(
        &mut self,
        msg: &Msg,
        fd: Option<BorrowedFd<'_>>,
        during: &'static str,
    ) -> Result<Msg, PeerError> {
        self.idle()?;
        self.alive(during)?;
        let id = self.next_id;
        self.next_id += 1;
        let dl = self.deadline();
        if let Err(e) = self.chan.send(id, msg, fd, dl) {
            return Err(self.fail(e, during));
        }
        self.answer(id, during)
    }

    /// Refuses a request while a batch invalidation awaits its answer
    /// (its answer would come first).
    fn idle(&self) -> Result<(), PeerError> {
        match self.in_flight {
            None => Ok(()),
            Some(InFlight::Invalidate { seq, .. }) => Err(PeerError::InvalidArgument {
                what: format!("the invalidation {seq} awaits its answer: finish it first"),
            }),
            Some(InFlight::Map { addr, .. }) => Err(PeerError::InvalidArgument {
                what: format!("the mapping at {addr:#x} awaits its answer: finish it first"),
            }),
        }
    }

    fn answer(&mut self, id: u64, during: &'static str) -> Result<Msg, PeerError> {
        let dl = self.deadline();
        match self.chan.recv(dl) {
            Ok((rid, _, _)) if rid != id => Err(self.fail(
                ChanError::Malformed(format!("answer to request {rid}, expected {id}")),
                during,
            )),
            Ok((_, Msg::Error { code, message }, _)) => Err(PeerError::Remote { code, message }),
            Ok((_, m, _)) => Ok(m),
            Err(e) => Err(self.fail(e, during)),
        }
    }

    fn unexpected(&mut self, m: &Msg, during: &'static str) -> PeerError {
        self.fail(
            ChanError::Malformed(format!("unexpected {} message", m.name())),
            during,
        )
    }

    /// Hello, then agreement rounds until both hold the same window.
    fn handshake(&mut self) -> Result<Reservation, PeerError> {
        let cfg = self.cfg.clone();
        let (floor, high) = self.hello()?;
        let align = cfg.window_align.max(cfg.page_size).max(PAGE);
        let len = cfg
            .window_len
            .checked_next_multiple_of(align)
            .ok_or_else(|| PeerError::InvalidArgument {
                what: format!("window length {:#x}", cfg.window_len),
            })?;
        let req = WindowRequest {
            len,
            align,
            low: cfg
                .low
                .max(floor)
                .max(reserve::live_params()?.mmap_min_addr),
            high: high.min(reserve::window_high(cfg.va_bits)?),
            topdown: cfg.topdown,
        };
        let during = "the window agreement";
        for attempt in 1..=cfg.max_tries.max(1) {
            self.tries = attempt;
            let mine = occupied(&own_view()?);
            let id = self.next_id;
            self.next_id += 1;
            let dl = self.deadline();
            let sent = self
                .chan
                .send(
                    id,
                    &Msg::Negotiate {
                        attempt,
                        len: req.len,
                        align: req.align,
                        low: req.low,
                        high: req.high,
                        topdown: req.topdown,
                    },
                    None,
                    dl,
                )
                .and_then(|()| send_vmas(&mut self.chan, id, attempt, &mine, dl));
            if let Err(e) = sent {
                return Err(self.fail(e, during));
            }
            // The peer's ranges, then its reservation outcome.
            let mut theirs = Vec::new();
            loop {
                match self.answer(id, during)? {
                    Msg::Vmas {
                        attempt: a,
                        last,
                        ranges,
                    } if a == attempt => {
                        theirs.extend(ranges.into_iter().map(|(s, e, f)| (s, e, f == 1)));
                        if last {
                            break;
                        }
                    }
                    m => return Err(self.unexpected(&m, during)),
                }
            }
            let ours = common_window(&mine, &theirs, &req);
            let outcome = match self.answer(id, during)? {
                Msg::Reserved {
                    attempt: a,
                    outcome,
                } if a == attempt => outcome,
                m => return Err(self.unexpected(&m, during)),
            };
            match (ours, outcome) {
                (Err(FitError::NoSpace | FitError::EmptyWindow { .. }), Reserved::NoSpace) => {
                    return Err(PeerError::NoCommonWindow {
                        low: req.low,
                        high: req.high,
                        len: req.len,
                    })
                }
                (Err(e), Reserved::NoSpace) => {
                    return Err(PeerError::InvalidArgument {
                        what: e.to_string(),
                    })
                }
                (Ok(a), Reserved::Busy(b)) if a == b => continue,
                (Ok(a), Reserved::Failed(errno)) => {
                    return Err(PeerError::Remote {
                        code: wire::code::SYS,
                        message: format!(
                            "mmap(MAP_FIXED_NOREPLACE) of [{a:#x}, +{len:#x}) failed: {}",
                            Errno(errno)
                        ),
                    })
                }
                (
                    Ok(a),
                    Reserved::AddressSpaceLimit {
                        len: grows,
                        vm_size,
                        limit,
                    },
                ) => {
                    return Err(PeerError::PeerLimit {
                        pid: self.pid,
                        addr: a,
                        len,
                        source: Error::AddressSpaceLimit {
                            call: "mmap(MAP_FIXED_NOREPLACE)",
                            len: grows,
                            vm_size,
                            limit,
                        },
                    })
                }
                (
                    Ok(a),
                    Reserved::MapCountLimit {
                        vmas,
                        max_map_count,
                    },
                ) => {
                    return Err(PeerError::PeerLimit {
                        pid: self.pid,
                        addr: a,
                        len,
                        source: Error::MapCountLimit {
                            call: "mmap(MAP_FIXED_NOREPLACE)",
                            vmas: usize::try_from(vmas).unwrap_or(usize::MAX),
                            max_map_count,
                        },
                    })
                }
                (Ok(a), Reserved::Ok(b)) if a == b => {
                    match Reservation::at(a, req.len) {
                        Ok(res) => {
                            match self.call(
                                &Msg::Commit {
                                    attempt,
                                    addr: a,
                                    len: req.len,
                                },
                                None,
                                during,
                            )? {
                                Msg::Ack => return Ok(res),
                                m => return Err(self.unexpected(&m, during)),
                            }
                        }
                        Err(Error::Sys {
                            errno: Errno::EEXIST,
                            ..
                        }) => {
                            // We lost a race in our own process: both let go
                            // and try again with fresh views.
                            match self.call(&Msg::Abandon { attempt }, None, during)? {
                                Msg::Ack => continue,
                                m => return Err(self.unexpected(&m, during)),
                            }
                        }
                        Err(e) => {
                            let _ = self.call(&Msg::Abandon { attempt }, None, during);
                            return Err(e.into());
                        }
                    }
                }
                (ours, theirs) => {
                    self.kill();
                    let peer = match theirs {
                        Reserved::Ok(b) | Reserved::Busy(b) => Some(b),
                        _ => None,
                    };
                    return Err(PeerError::WindowMismatch {
                        cpu: ours.ok(),
                        peer,
                    });
                }
            }
        }
        Err(PeerError::RetriesExhausted {
            tries: cfg.max_tries.max(1),
        })
    }

    fn heap(&self) -> &Heap {
        self.heap.as_ref().expect("the window is agreed in spawn")
    }

    fn heap_mut(&mut self) -> &mut Heap {
        self.heap.as_mut().expect("the window is agreed in spawn")
    }

    /// The peer's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The agreed window `[start, end)`, reserved in both processes.
    pub fn window(&self) -> (u64, u64) {
        let r = self.heap().reservation();
        (r.addr(), r.end())
    }

    /// Agreement rounds used (1 without races).
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Time from `spawn` to the agreed window (process start included).
    pub fn setup_time(&self) -> Duration {
        self.setup
    }

    /// The configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.cfg
    }

    /// Live buffers in address order.
    pub fn buffers(&self) -> impl Iterator<Item = SvmBuf> + '_ {
        self.bufs.values().copied()
    }

    /// Allocates a read-write SVM buffer of `len` bytes (rounded up to device
    /// pages) mapped at the same address in both processes and in the
    /// device page table.
    pub fn alloc(&mut self, len: u64) -> Result<SvmBuf, PeerError> {
        self.alloc_with(len, DeviceAccess::ReadWrite)
    }

    /// [`Peer::alloc`] with the device's access rights given.
    ///
    /// The memfd is created and mapped here (lowest free fit of the window),
    /// passed with `SCM_RIGHTS`, mapped by the peer over its own reservation
    /// at the same address, and its device pages installed. If the peer
    /// fails, the buffer is freed here again and the error returned.
    pub fn alloc_with(&mut self, len: u64, access: DeviceAccess) -> Result<SvmBuf, PeerError> {
        let during = "a buffer mapping";
        self.alive(during)?;
        let ps = self.cfg.page_size;
        let Some(len) = len.checked_next_multiple_of(ps).filter(|&l| l > 0) else {
            return Err(PeerError::InvalidArgument {
                what: format!("buffer length {len:#x}"),
            });
        };
        let ptr = self.heap_mut().alloc(len, ps)?;
        let addr = ptr.as_ptr() as u64;
        let msg = Msg::Map {
            addr,
            len,
            writable: access == DeviceAccess::ReadWrite,
        };
        let r = {
            let fd = self
                .heap()
                .memfd(ptr)
                .expect("just allocated")
                .try_clone_to_owned()
                .map_err(|e| PeerError::Sys {
                    call: "dup(memfd)",
                    errno: Errno::of(&e),
                });
            match fd {
                Ok(fd) => self.call(&msg, Some(fd.as_fd()), during),
                Err(e) => Err(e),
            }
        };
        match r {
            Ok(Msg::MapAck { addr: a, id }) if a == addr => {
                let b = SvmBuf { addr, len, id };
                self.bufs.insert(addr, b);
                Ok(b)
            }
            other => {
                let err = match other {
                    Ok(m) => self.unexpected(&m, during),
                    Err(e) => e,
                };
                // The peer refused (nothing mapped there) or is gone.
                let _ = self.heap_mut().free(ptr);
                Err(err)
            }
        }
    }

    /// Frees a buffer: first the peer invalidates it (clears its PTEs,
    /// shoots down its TLB, puts `PROT_NONE` back over the range) and
    /// acknowledges with the invalidation's sequence number; only then is
    /// the range freed here and open for reuse.
    ///
    /// If the peer is gone (before or during the call) there is no device
    /// left to invalidate: the buffer is freed here all the same, and the
    /// peer's failure is returned if it happened during this call.
    pub fn free(&mut self, buf: SvmBuf) -> Result<(), PeerError> {
        let during = "a buffer invalidation";
        match self.bufs.get(&buf.addr) {
            Some(b) if b.len == buf.len => {}
            _ => return Err(PeerError::NotMapped { addr: buf.addr }),
        }
        let mut result = Ok(());
        if matches!(self.state, State::Alive(_)) {
            let seq = self.next_seq;
            self.next_seq += 1;
            match self.call(
                &Msg::Unmap {
                    seq,
                    addr: buf.addr,
                    len: buf.len,
                },
                None,
                during,
            ) {
                Ok(Msg::UnmapAck { seq: s }) if s == seq => {}
                Ok(m) => result = Err(self.unexpected(&m, during)),
                // The peer refused: it still maps the buffer. Keep it.
                Err(e @ PeerError::Remote { .. }) => return Err(e),
                Err(e) => result = Err(e),
            }
            if result.is_err() {
                // Whatever happened, the peer must be gone before the range
                // may be reused.
                self.kill();
            }
        }
        let ptr = NonNull::new(buf.as_ptr()).expect("buffers are above the floor");
        self.heap_mut().free(ptr)?;
        self.bufs.remove(&buf.addr);
        result
    }

    /// The device walks the list starting at `head` (0: empty): nodes are
    /// `{ next: u64, value: u64 }` ([`NODE_NEXT`], [`NODE_VALUE`]), `next`
    /// a raw address (0 ends the list). Every load goes through the device
    /// MMU. At most `max_nodes` nodes.
    pub fn walk_list(&mut self, head: u64, max_nodes: u64) -> Result<WalkResult, PeerError> {
        match self.call(&Msg::Walk { head, max_nodes }, None, "a list walk")? {
            Msg::Done { a, b } => Ok(WalkResult {
                count: a,
                checksum: b,
            }),
            m => Err(self.device_result(m, "a list walk")),
        }
    }

    /// The device sums the `u64` words of `[addr, addr + len)` (wrapping;
    /// `addr` 8-aligned, `len` a multiple of 8).
    pub fn sum_u64(&mut self, addr: u64, len: u64) -> Result<u64, PeerError> {
        match self.call(&Msg::Sum { addr, len }, None, "a sum")? {
            Msg::Done { a, .. } => Ok(a),
            m => Err(self.device_result(m, "a sum")),
        }
    }

    /// The device copies `len` bytes from `src` to `dst` (memmove).
    pub fn copy(&mut self, dst: u64, src: u64, len: u64) -> Result<(), PeerError> {
        match self.call(&Msg::Copy { dst, src, len }, None, "a copy")? {
            Msg::Done { .. } => Ok(()),
            m => Err(self.device_result(m, "a copy")),
        }
    }

    fn device_result(&mut self, m: Msg, during: &'static str) -> PeerError {
        match m {
            Msg::Fault { kind, addr, write } => PeerError::DeviceFault {
                fault: match kind {
                    0 => Fault::OutOfRange,
                    1 => Fault::Unmapped,
                    _ => Fault::Protection,
                },
                addr,
                write,
            },
            Msg::WalkLimit { nodes } => PeerError::WalkLimit { nodes },
            m => self.unexpected(&m, during),
        }
    }

    /// The device's counters.
    pub fn device_stats(&mut self) -> Result<DeviceStats, PeerError> {
        match self.call(&Msg::Stats, None, "a stats request")? {
            Msg::StatsReply { words } => Ok(DeviceStats::from_words(words)),
            m => Err(self.unexpected(&m, "a stats request")),
        }
    }

    fn containing(&self, addr: u64) -> Result<SvmBuf, PeerError> {
        self.bufs
            .range(..=addr)
            .next_back()
            .map(|(_, b)| *b)
            .filter(|b| addr < b.end())
            .ok_or(PeerError::NotMapped { addr })
    }

    /// Reads the `u64` at `addr` on the CPU side (inside a live buffer).
    pub fn read_u64(&self, addr: u64) -> Result<u64, PeerError> {
        let b = self.containing(addr)?;
        sys::heap_read_u64(self.heap(), b.addr, addr).map_err(|_| PeerError::NotMapped { addr })
    }

    /// Writes the `u64` at `addr` on the CPU side (inside a live buffer).
    pub fn write_u64(&mut self, addr: u64, v: u64) -> Result<(), PeerError> {
        let b = self.containing(addr)?;
        sys::heap_write_u64(self.heap(), b.addr, addr, v).map_err(|_| PeerError::NotMapped { addr })
    }

    /// Asks the peer to exit and reaps it (killing it after the timeout).
    pub fn shutdown(mut self) -> ExitInfo {
        self.stop()
    }

    fn stop(&mut self) -> ExitInfo {
        if matches!(self.state, State::Alive(_)) {
            let dl = Some(Instant::now() + Duration::from_millis(500));
            let _ = self.chan.send(0, &Msg::Shutdown, None, dl);
            let grace = self.cfg.timeout.min(Duration::from_secs(2));
            return self.reap(grace);
        }
        self.reap(Duration::ZERO)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A device peer in the direct mode: the CPU side (an engine) decides
/// every address; there is no window agreement and no heap of its own.
///
/// The memory of a heap of the CPU side is passed once ([`Self::attach`]:
/// its memfd, mapped at the same address in the peer); ranges of it are
/// then mapped, invalidated, protected and unmapped by address alone.
/// Every wait is bounded by [`PeerConfig::timeout`] (the window fields of
/// the configuration are not used). A peer that dies, times out or
/// misbehaves is reported as for [`Peer`] and is dead from then on: every
/// later call reports [`PeerError::PeerExited`].
#[derive(Debug)]
pub struct DirectPeer {
    inner: Peer,
}

fn prot_word(p: svmap_svm::Prot) -> u8 {
    match p {
        svmap_svm::Prot::None => 0,
        svmap_svm::Prot::Read => 1,
        svmap_svm::Prot::ReadWrite => 2,
    }
}

impl DirectPeer {
    /// Starts `cmd` as the device peer (it must end up calling
    /// [`device::serve_from_env`]) hosting the device of `cfg` (VA width,
    /// page size, TLB), in the direct mode.
    pub fn spawn(cmd: Command, cfg: &PeerConfig) -> Result<DirectPeer, PeerError> {
        let t0 = Instant::now();
        let mut p = Peer::start(cmd, cfg)?;
        p.hello()?;
        match p.call(&Msg::Direct, None, "the direct-mode request")? {
            Msg::Ack => {}
            m => return Err(p.unexpected(&m, "the direct-mode request")),
        }
        p.setup = t0.elapsed();
        Ok(DirectPeer { inner: p })
    }

    /// The peer's pid.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// System calls this side has made on the peer's socket so far
    /// (`sendmsg`, `recvmsg`, `poll`): a request costs one `sendmsg` and
    /// one `recvmsg`, plus a `poll` and a second `recvmsg` when the answer
    /// was not there yet.
    pub fn syscalls(&self) -> u64 {
        self.inner.chan.syscalls
    }

    /// The configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.inner.cfg
    }

    /// Time from `spawn` to a peer ready for requests.
    pub fn setup_time(&self) -> Duration {
        self.inner.setup
    }

    /// Kills the peer with `SIGKILL` (if it is still running) and reaps it.
    pub fn kill(&mut self) -> ExitInfo {
        self.inner.kill()
    }

    /// How the peer ended, if it has (checks without blocking).
    pub fn exit_status(&mut self) -> Option<ExitInfo> {
        self.inner.exit_status()
    }

    fn ack(
        &mut self,
        msg: &Msg,
        fd: Option<BorrowedFd<'_>>,
        during: &'static str,
    ) -> Result<(), PeerError> {
        match self.inner.call(msg, fd, during)? {
            Msg::Ack => Ok(()),
            m => Err(self.inner.unexpected(&m, during)),
        }
    }

    /// Maps the first `len` bytes of the memfd `fd` at `[addr, addr + len)`
    /// in the peer (replacing earlier attachments that overlap the range).
    pub fn attach(&mut self, addr: u64, len: u64, fd: BorrowedFd<'_>) -> Result<(), PeerError> {
        self.ack(&Msg::Attach { addr, len }, Some(fd), "an attachment")
    }

    /// Installs device pages with access `prot` for `[addr, addr + len)`, a
    /// range inside an attachment. Returns the device's id for it.
    pub fn map_range(
        &mut self,
        addr: u64,
        len: u64,
        prot: svmap_svm::Prot,
    ) -> Result<u64, PeerError> {
        self.send_map_range(addr, len, prot)?;
        self.finish_map_range()
    }

    /// Invalidates `[addr, addr + len)` on the device (page-table entries
    /// cleared, TLB shot down) and waits for the acknowledgement, at most
    /// the configured timeout. Returns the acknowledged sequence number.
    /// On any failure but a refusal the peer is dead afterwards.
    pub fn invalidate(&mut self, addr: u64, len: u64) -> Result<u64, PeerError> {
        let during = "an invalidation";
        let seq = self.inner.next_seq;
        self.inner.next_seq += 1;
        match self
            .inner
            .call(&Msg::Invalidate { seq, addr, len }, None, during)?
        {
            Msg::UnmapAck { seq: s } if s == seq => Ok(seq),
            m => Err(self.inner.unexpected(&m, during)),
        }
    }

    /// Invalidates every range of `ranges` (`(addr, len)`, at most
    /// [`wire::RANGES_PER_PACKET`]) and then forgets it as
    /// [`Self::unmap_range`] does, in one request: one round trip for the
    /// whole batch. Returns the acknowledged sequence number. The peer
    /// checks every range before it acts on any; on any failure but such a
    /// refusal the peer is dead afterwards, and none of the ranges counts
    /// as acknowledged.
    pub fn invalidate_unmap(&mut self, ranges: &[(u64, u64)]) -> Result<u64, PeerError> {
        self.send_invalidate_unmap(ranges)?;
        self.finish_invalidate_unmap()
    }

    /// The first half of [`Self::invalidate_unmap`]: sends the request and
    /// returns without waiting, so that several device processes can work
    /// on their batches at the same time. Until
    /// [`Self::finish_invalidate_unmap`], every other request is refused
    /// with [`PeerError::InvalidArgument`].
    pub fn send_invalidate_unmap(&mut self, ranges: &[(u64, u64)]) -> Result<(), PeerError> {
        let during = "an invalidation";
        self.inner.idle()?;
        if ranges.is_empty() || ranges.len() > wire::RANGES_PER_PACKET {
            return Err(PeerError::InvalidArgument {
                what: format!(
                    "{} ranges in one invalidation (1..={})",
                    ranges.len(),
                    wire::RANGES_PER_PACKET
                ),
            });
        }
        self.inner.alive(during)?;
        let seq = self.inner.next_seq;
        self.inner.next_seq += 1;
        let msg = Msg::InvalidateUnmap {
            seq,
            ranges: ranges.to_vec(),
        };
        let id = self.inner.next_id;
        self.inner.next_id += 1;
        let dl = self.inner.deadline();
        if let Err(e) = self.inner.chan.send(id, &msg, None, dl) {
            return Err(self.inner.fail(e, during));
        }
        self.inner.in_flight = Some(InFlight::Invalidate { id, seq });
        Ok(())
    }

    /// Whether a request sent with [`Self::send_invalidate_unmap`] or
    /// [`Self::send_map_range`] awaits its answer.
    pub fn in_flight(&self) -> bool {
        self.inner.in_flight.is_some()
    }

    /// The first half of [`Self::map_range`]: sends the request and returns
    /// without waiting, so that several device processes can map a range
    /// at the same time. Until [`Self::finish_map_range`], every other
    /// request is refused with [`PeerError::InvalidArgument`].
    pub fn send_map_range(
        &mut self,
        addr: u64,
        len: u64,
        prot: svmap_svm::Prot,
    ) -> Result<(), PeerError> {
        let during = "a range mapping";
        self.inner.idle()?;
        self.inner.alive(during)?;
        let msg = Msg::MapRange {
            addr,
            len,
            prot: prot_word(prot),
        };
        let id = self.inner.next_id;
        self.inner.next_id += 1;
        let dl = self.inner.deadline();
        if let Err(e) = self.inner.chan.send(id, &msg, None, dl) {
            return Err(self.inner.fail(e, during));
        }
        self.inner.in_flight = Some(InFlight::Map { id, addr });
        Ok(())
    }

    /// The second half of [`Self::map_range`]: waits (at most the
    /// configured timeout) for the answer to the mapping in flight and
    /// returns the device's id for it.
    pub fn finish_map_range(&mut self) -> Result<u64, PeerError> {
        let during = "a range mapping";
        let (id, addr) = match self.inner.in_flight {
            Some(InFlight::Map { id, addr }) => (id, addr),
            _ => {
                return Err(PeerError::InvalidArgument {
                    what: "no range mapping awaits its answer".into(),
                })
            }
        };
        self.inner.in_flight = None;
        match self.inner.answer(id, during)? {
            Msg::MapAck { addr: a, id } if a == addr => Ok(id),
            m => Err(self.inner.unexpected(&m, during)),
        }
    }

    /// The second half of [`Self::invalidate_unmap`]: waits (at most the
    /// configured timeout) for the answer to the batch in flight and
    /// returns its acknowledged sequence number.
    pub fn finish_invalidate_unmap(&mut self) -> Result<u64, PeerError> {
        let during = "an invalidation";
        let (id, seq) = match self.inner.in_flight {
            Some(InFlight::Invalidate { id, seq }) => (id, seq),
            _ => {
                return Err(PeerError::InvalidArgument {
                    what: "no invalidation awaits its answer".into(),
                })
            }
        };
        self.inner.in_flight = None;
        match self.inner.answer(id, during)? {
            Msg::UnmapAck { seq: s } if s == seq => Ok(seq),
            m => Err(self.inner.unexpected(&m, during)),
        }
    }

    /// The peer's own mappings (its `/proc/self/maps`, user half):
    /// `(start, end, grows_down)`, ascending. An `attach` or a region over
    /// one of them fails with `EEXIST` in the peer.
    pub fn own_maps(&mut self) -> Result<Vec<Occupied>, PeerError> {
        let during = "reading the peer's mappings";
        self.inner.idle()?;
        self.inner.alive(during)?;
        let id = self.inner.next_id;
        self.inner.next_id += 1;
        let dl = self.inner.deadline();
        if let Err(e) = self.inner.chan.send(id, &Msg::Maps, None, dl) {
            return Err(self.inner.fail(e, during));
        }
        let mut out: Vec<Occupied> = Vec::new();
        loop {
            match self.inner.answer(id, during)? {
                Msg::MapsReply { last, ranges } => {
                    if out.len() + ranges.len() > MAX_OWN_MAPS {
                        return Err(self.inner.fail(
                            ChanError::Malformed(format!("more than {MAX_OWN_MAPS} mappings")),
                            during,
                        ));
                    }
                    for (s, e, f) in ranges {
                        if out.last().is_some_and(|&(_, pe, _)| pe > s) {
                            return Err(self.inner.fail(
                                ChanError::Malformed(format!(
                                    "mapping [{s:#x}, {e:#x}) out of order"
                                )),
                                during,
                            ));
                        }
                        out.push((s, e, f == 1));
                    }
                    if last {
                        return Ok(out);
                    }
                }
                m => return Err(self.inner.unexpected(&m, during)),
            }
        }
    }

    /// Requests sent to the peer so far (each one round trip; the
    /// shutdown is not counted).
    pub fn requests(&self) -> u64 {
        self.inner.next_id - 1
    }

    /// Forgets the device mapping of `[addr, addr + len)` (after an
    /// acknowledged invalidation); an attachment entirely inside it is
    /// unmapped in the peer.
    pub fn unmap_range(&mut self, addr: u64, len: u64) -> Result<(), PeerError> {
        self.ack(&Msg::UnmapRange { addr, len }, None, "a range unmapping")
    }

    /// Changes the device's access to `[addr, addr + len)`.
    pub fn protect(&mut self, addr: u64, len: u64, prot: svmap_svm::Prot) -> Result<(), PeerError> {
        let msg = Msg::Protect {
            addr,
            len,
            prot: prot_word(prot),
        };
        self.ack(&msg, None, "a protection change")
    }

    /// Backs the device-only region `[addr, addr + len)` with memory
    /// private to the peer, read-write for the device.
    pub fn map_region(&mut self, addr: u64, len: u64) -> Result<(), PeerError> {
        self.ack(&Msg::MapRegion { addr, len }, None, "a device-only region")
    }

    /// The device sums the `u64` words of `[addr, addr + len)` through its
    /// MMU (see [`Peer::sum_u64`]).
    pub fn sum_u64(&mut self, addr: u64, len: u64) -> Result<u64, PeerError> {
        self.inner.sum_u64(addr, len)
    }

    /// Migrates `[addr, addr + len)` (inside an attachment, whole device
    /// pages) into the device's own memory ([`Msg::MigrateIn`]): from the
    /// answer on, the peer no longer reads or writes the memfd there. The
    /// caller has stopped CPU writers to the range before and punches it
    /// out of the memfd after.
    pub fn migrate_in(&mut self, addr: u64, len: u64) -> Result<(), PeerError> {
        self.ack(
            &Msg::MigrateIn { addr, len },
            None,
            "a migration to the device",
        )
    }

    /// Migrates `[addr, addr + len)` back from the device's memory
    /// ([`Msg::MigrateOut`]): its bytes are in the memfd when this returns
    /// (with `write_back`; else they are dropped), and the device reaches
    /// the range through the memfd again.
    pub fn migrate_out(&mut self, addr: u64, len: u64, write_back: bool) -> Result<(), PeerError> {
        let msg = Msg::MigrateOut {
            addr,
            len,
            write_back,
        };
        self.ack(&msg, None, "a migration from the device")
    }

    /// Marks `[addr, addr + len)` resident for the device or not
    /// ([`Msg::Resident`]): not resident, the device invalidates it and
    /// faults there ([`PeerError::DeviceFault`]) instead of reaching the
    /// memfd, until it is marked resident again.
    pub fn set_resident(&mut self, addr: u64, len: u64, resident: bool) -> Result<(), PeerError> {
        let msg = Msg::Resident {
            addr,
            len,
            resident,
        };
        self.ack(&msg, None, "a residency change")
    }

    /// The device copies `len` bytes from `src` to `dst` through its MMU.
    pub fn copy(&mut self, dst: u64, src: u64, len: u64) -> Result<(), PeerError> {
        self.inner.copy(dst, src, len)
    }

    /// The device walks a list (see [`Peer::walk_list`]).
    pub fn walk_list(&mut self, head: u64, max_nodes: u64) -> Result<WalkResult, PeerError> {
        self.inner.walk_list(head, max_nodes)
    }

    /// The device's counters.
    pub fn device_stats(&mut self) -> Result<DeviceStats, PeerError> {
        self.inner.device_stats()
    }

    /// Asks the peer to exit and reaps it.
    pub fn shutdown(self) -> ExitInfo {
        self.inner.shutdown()
    }
}

/// Sends `ranges` as [`Msg::Vmas`] chunks (at least one, the last flagged).
pub(crate) fn send_vmas(
    chan: &mut Channel,
    id: u64,
    attempt: u32,
    ranges: &[Occupied],
    deadline: Option<Instant>,
) -> Result<(), ChanError> {
    let mut chunks = ranges.chunks(wire::VMAS_PER_PACKET).peekable();
    if chunks.peek().is_none() {
        return chan.send(
            id,
            &Msg::Vmas {
                attempt,
                last: true,
                ranges: Vec::new(),
            },
            None,
            deadline,
        );
    }
    while let Some(c) = chunks.next() {
        let msg = Msg::Vmas {
            attempt,
            last: chunks.peek().is_none(),
            ranges: c.iter().map(|&(s, e, g)| (s, e, u64::from(g))).collect(),
        };
        chan.send(id, &msg, None, deadline)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = STACK_GUARD_GAP;

    fn req(len: u64, low: u64, high: u64, topdown: bool) -> WindowRequest {
        WindowRequest {
            len,
            align: PAGE,
            low,
            high,
            topdown,
        }
    }

    #[test]
    fn union_of_both_sides() {
        let a = [(0x10_0000, 0x20_0000, false), (0x40_0000, 0x50_0000, false)];
        let b = [(0x18_0000, 0x30_0000, false)];
        // Lowest: [0x30_0000, 0x40_0000) is the first hole free in both.
        let r = req(0x10_0000, 0x10_0000, 0x100_0000, false);
        assert_eq!(common_window(&a, &b, &r), Ok(0x30_0000));
        assert_eq!(common_window(&b, &a, &r), Ok(0x30_0000));
        // Too big for that hole: above the last range.
        let r = req(0x20_0000, 0x10_0000, 0x100_0000, false);
        assert_eq!(common_window(&a, &b, &r), Ok(0x50_0000));
        // Top-down.
        let r = req(0x10_0000, 0x10_0000, 0x100_0000, true);
        assert_eq!(common_window(&a, &b, &r), Ok(0xf0_0000));
        // Nothing free.
        let full = [(0x1000, 0x100_0000, false)];
        assert_eq!(common_window(&full, &[], &r), Err(FitError::NoSpace));
    }

    /// The peer side refuses malformed and out-of-order requests with a
    /// typed error and keeps serving; `Shutdown` ends it cleanly.
    #[test]
    fn serve_refuses_bad_requests() {
        let (a, b) = sys::socketpair_seqpacket().unwrap();
        let server = std::thread::spawn(move || device::serve(b, &device::ServeOptions::default()));
        let mut c = Channel::new(a);
        let dl = Some(Instant::now() + Duration::from_secs(10));
        let expect_error = |c: &mut Channel, want_id: u64, want_code: u32| match c.recv(dl) {
            Ok((id, Msg::Error { code, message }, _)) => {
                assert_eq!((id, code), (want_id, want_code), "{message}");
            }
            other => panic!("{other:?}"),
        };
        c.send_raw(b"garbage", None, dl).unwrap();
        expect_error(&mut c, 0, wire::code::BAD_REQUEST);
        let mut p = Msg::Ack.encode(5);
        p[5] = 99; // unknown kind
        c.send_raw(&p, None, dl).unwrap();
        expect_error(&mut c, 0, wire::code::BAD_REQUEST);
        // A hello of another protocol version is refused with a message
        // that names both versions.
        let mut p = Msg::Hello {
            va_bits: 40,
            page_size: 4096,
            tlb_entries: 1,
        }
        .encode(4);
        p[4] = wire::VERSION - 1;
        c.send_raw(&p, None, dl).unwrap();
        match c.recv(dl) {
            Ok((0, Msg::Error { code, message }, _)) => {
                assert_eq!(code, wire::code::BAD_REQUEST);
                let want = format!("version {}", wire::VERSION - 1);
                assert!(message.contains(&want), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A device operation before the hello.
        c.send(
            6,
            &Msg::Walk {
                head: 0,
                max_nodes: 1,
            },
            None,
            dl,
        )
        .unwrap();
        expect_error(&mut c, 6, wire::code::BAD_REQUEST);
        // A hello with a bad device.
        let bad = Msg::Hello {
            va_bits: 70,
            page_size: 4096,
            tlb_entries: 1,
        };
        c.send(7, &bad, None, dl).unwrap();
        expect_error(&mut c, 7, wire::code::BAD_REQUEST);
        c.send(8, &Msg::Shutdown, None, dl).unwrap();
        assert!(server.join().unwrap().is_ok());
        // And a peer whose CPU side just goes away ends cleanly too.
        let (a, b) = sys::socketpair_seqpacket().unwrap();
        let server = std::thread::spawn(move || device::serve(b, &device::ServeOptions::default()));
        drop(a);
        assert!(server.join().unwrap().is_ok());
    }

    #[test]
    fn guard_gap_of_either_side_is_kept() {
        // A grows-down range on one side at 0x80_0000: its guard gap
        // [0x70_0000, 0x80_0000) is taken even though the other side has a
        // range just below it that would merge with it.
        let a = [(0x80_0000, 0x90_0000, true)];
        let b = [(0x60_0000, 0x6f_0000, false)];
        let r = req(0x10_0000, 0x60_0000, 0x80_0000, true);
        // [0x6f_0000, 0x70_0000) is too small; nothing fits.
        assert_eq!(common_window(&a, &b, &r), Err(FitError::NoSpace));
        let r = req(0x1000, 0x60_0000, 0x80_0000, true);
        assert_eq!(common_window(&a, &b, &r), Ok(0x80_0000 - G - 0x1000));
    }
}
