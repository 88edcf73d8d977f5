//! The peer side: the process that plays the device.
//!
//! [`serve_from_env`] takes the socket named in `SVMAP_PEER_FD`, answers the
//! hello and the window agreement, then hosts a device MMU
//! ([`svmap_svm::Mirror`]: the VA width, page size and TLB the CPU side
//! asked for) whose page table maps exactly the SVM buffers it was given:
//!
//! - `Map` (with a memfd): map it `MAP_SHARED | MAP_FIXED` at the same
//!   address over the peer's own reservation; install its device pages with
//!   the buffer id as the frame.
//! - `Unmap{seq}`: `invalidate_start` (PTEs cleared, TLB shot down), forget
//!   the buffer, put `PROT_NONE` back over it, `invalidate_end`, then
//!   acknowledge `seq`. Sequence numbers must increase.
//! - `Walk`, `Sum`, `Copy`: every load and store is translated by the device
//!   MMU first (TLB, page-table walk, then the fault handler, whose snapshot
//!   of "the CPU mapping" is the peer's table of buffers): the address must
//!   be below `2^va_bits` (`out_of_range`), mapped (`unmapped`), and
//!   writable for stores (`protection`); only then is the real memory at
//!   that same address read or written. A word that crosses a device page
//!   is translated on both pages; a burst (`Sum`, `Copy`) is translated once
//!   per device page it touches.
//!
//! In the direct mode (`Direct` right after the hello) there is no window
//! agreement: the CPU side's engine decides every address.
//!
//! - `Attach` (with a memfd): map the whole memfd at the same address
//!   (`MAP_FIXED_NOREPLACE`; an earlier attachment that overlaps is
//!   unmapped first). One per heap (window piece) of the CPU side.
//! - `MapRange`: install device pages for a range inside an attachment.
//! - `Invalidate{seq}`: `invalidate_start` (PTEs cleared, TLB shot down),
//!   `invalidate_end`, acknowledge `seq`.
//! - `UnmapRange`: forget the range (an attachment entirely inside it is
//!   unmapped); `Protect`: change the device's access to a range;
//!   `MapRegion`: back a device-only region with private memory of this
//!   process, which the CPU process cannot see.
//! - `InvalidateUnmap{seq, ranges}`: a free in one request: every range
//!   checked, then invalidated, `seq` recorded, every range forgotten as
//!   `UnmapRange` does; one `UnmapAck{seq}` for the whole batch.
//! - `Maps`: this process's own mappings (`/proc/self/maps`) in
//!   `MapsReply` chunks, so that the CPU side never places anything over
//!   them.
//! - `MigrateIn` / `MigrateOut`: a range moves into memory private to this
//!   process and back into the memfd.
//! - `Resident{resident}`: a range another device holds is not resident
//!   here: invalidated, and the fault handler maps nothing there (accesses
//!   fault and the fault is the request's answer) until it is resident
//!   again.
//!
//! The peer never blocks on anything but its socket; it exits when the CPU
//! side closes it or sends `Shutdown`.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use svmap_svm::mirror::{Perm, Snapshot};
use svmap_svm::{Fault, Mirror};

use super::wire::{code, Msg, Reserved};
use super::{
    checksum_step, common_window, occupied, own_view, send_vmas, ChanError, Channel, DeviceStats,
    PeerError, WindowRequest, CHECKSUM_INIT, FAILPOINT_ENV, NODE_NEXT, NODE_VALUE, PEER_FD_ENV,
};
use svmap_linux::error::{Errno, Error};
use svmap_linux::probe;
use svmap_linux::reserve::{self, Reservation};
use svmap_linux::sys::PAGE;

use crate::sys::{self, SharedWindow};

/// Fault injection, for tests of the CPU side's failure handling (from
/// `SVMAP_PEER_FAILPOINT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    /// `die-walk:N`: `SIGKILL` itself after visiting N nodes of a walk.
    DieInWalk(u64),
    /// `die-map:N`: `SIGKILL` itself on the N-th `Map`, after mapping the
    /// buffer and before acknowledging it.
    DieOnMap(u64),
    /// `hang-walk`: stop answering when a walk starts.
    HangInWalk,
    /// `garbage-sum`: answer a sum with a packet that is not a message.
    GarbageOnSum,
    /// `steal-window`: in the first agreement round, map a one-page canary
    /// at the agreed address just before reserving it, as another thread
    /// of the peer could (the round fails with `EEXIST`; the canary stays).
    StealWindow,
    /// `die-invalidate:N`: `SIGKILL` itself on the N-th `Invalidate` or
    /// `InvalidateUnmap` of the direct mode, after clearing the ranges and
    /// before acknowledging (or unmapping) them.
    DieOnInvalidate(u64),
    /// `old-version`: answer the hello in the previous protocol version.
    OldVersion,
}

impl Failpoint {
    /// Parses the `SVMAP_PEER_FAILPOINT` syntax.
    pub fn parse(s: &str) -> Option<Failpoint> {
        let (k, n) = s.split_once(':').unwrap_or((s, ""));
        let n = || n.parse::<u64>().ok();
        match k {
            "die-walk" => Some(Failpoint::DieInWalk(n()?)),
            "die-map" => Some(Failpoint::DieOnMap(n()?)),
            "die-invalidate" => Some(Failpoint::DieOnInvalidate(n()?)),
            "hang-walk" => Some(Failpoint::HangInWalk),
            "garbage-sum" => Some(Failpoint::GarbageOnSum),
            "steal-window" => Some(Failpoint::StealWindow),
            "old-version" => Some(Failpoint::OldVersion),
            _ => None,
        }
    }
}

/// Options of [`serve`].
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Fault injection.
    pub failpoint: Option<Failpoint>,
}

/// The entry point of a peer process: serves the socket named in
/// `SVMAP_PEER_FD` (with the failpoint of `SVMAP_PEER_FAILPOINT`, if any)
/// and returns the exit status: 0 when the CPU side shut it down or went
/// away, 2 for a bad environment, 1 for any other failure (printed on
/// stderr).
pub fn serve_from_env() -> i32 {
    let Some(raw) = std::env::var(PEER_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        eprintln!("svmap device-peer: {PEER_FD_ENV} does not name a descriptor; this command is started by svmap itself");
        return 2;
    };
    let fd = match sys::take_inherited_socket(raw) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("svmap device-peer: descriptor {raw} from {PEER_FD_ENV}: {e}");
            return 2;
        }
    };
    let failpoint = match std::env::var(FAILPOINT_ENV) {
        Ok(s) => match Failpoint::parse(&s) {
            Some(f) => Some(f),
            None => {
                eprintln!("svmap device-peer: bad {FAILPOINT_ENV} {s:?}");
                return 2;
            }
        },
        Err(_) => None,
    };
    match serve(fd, &ServeOptions { failpoint }) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("svmap device-peer: {e}");
            1
        }
    }
}

/// Why serving stopped early.
enum Stop {
    /// The CPU side went away (a normal end).
    Gone,
    /// A failure.
    Failed(PeerError),
}

impl From<PeerError> for Stop {
    fn from(e: PeerError) -> Self {
        Stop::Failed(e)
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(PeerError::Linux(e))
    }
}

fn chan_err(e: ChanError) -> Stop {
    match e {
        ChanError::Closed | ChanError::Timeout => Stop::Gone,
        ChanError::Malformed(reason) => Stop::Failed(PeerError::Malformed {
            during: "serving",
            reason,
        }),
        ChanError::Sys(call, errno) => Stop::Failed(PeerError::Sys { call, errno }),
        ChanError::Version(theirs) => Stop::Failed(PeerError::VersionMismatch {
            ours: super::wire::VERSION,
            theirs,
        }),
    }
}

fn refuse(chan: &mut Channel, id: u64, code: u32, message: String) -> Result<(), Stop> {
    chan.send(id, &Msg::Error { code, message }, None, None)
        .map_err(chan_err)
}

/// One received message, or `None` if a malformed packet was answered
/// with an error and should be skipped.
fn next(chan: &mut Channel) -> Result<Option<(u64, Msg, Vec<OwnedFd>)>, Stop> {
    match chan.recv(None) {
        Ok(x) => Ok(Some(x)),
        Err(ChanError::Malformed(reason)) => {
            refuse(
                chan,
                0,
                code::BAD_REQUEST,
                format!("malformed packet: {reason}"),
            )?;
            Ok(None)
        }
        Err(ChanError::Version(theirs)) => {
            refuse(
                chan,
                0,
                code::BAD_REQUEST,
                format!(
                    "protocol version {theirs}; this peer speaks version {}",
                    super::wire::VERSION
                ),
            )?;
            Ok(None)
        }
        Err(e) => Err(chan_err(e)),
    }
}

/// Serves one CPU side on `sock` until it shuts the peer down or goes away
/// (both `Ok`).
pub fn serve(sock: OwnedFd, opts: &ServeOptions) -> Result<(), PeerError> {
    match serve_inner(Channel::new(sock), opts) {
        Ok(()) | Err(Stop::Gone) => Ok(()),
        Err(Stop::Failed(e)) => Err(e),
    }
}

fn serve_inner(mut chan: Channel, opts: &ServeOptions) -> Result<(), Stop> {
    // The hello.
    let (va_bits, page_size, tlb_entries) = loop {
        let Some((id, msg, _)) = next(&mut chan)? else {
            continue;
        };
        match msg {
            Msg::Hello {
                va_bits,
                page_size,
                tlb_entries,
            } if (20..=56).contains(&va_bits)
                && page_size.is_power_of_two()
                && (PAGE..=1 << 30).contains(&page_size)
                && (1..=1 << 16).contains(&tlb_entries) =>
            {
                let ack = Msg::HelloAck {
                    pid: std::process::id(),
                    floor: probe::mmap_floor()?,
                    high: reserve::window_high(va_bits)?,
                };
                if opts.failpoint == Some(Failpoint::OldVersion) {
                    let mut p = ack.encode(id);
                    p[4] = super::wire::VERSION - 1;
                    chan.send_raw(&p, None, None).map_err(chan_err)?;
                    continue;
                }
                chan.send(id, &ack, None, None).map_err(chan_err)?;
                break (va_bits, page_size, tlb_entries);
            }
            Msg::Shutdown => return Ok(()),
            m => refuse(
                &mut chan,
                id,
                code::BAD_REQUEST,
                format!("expected a valid hello, got {m:?}"),
            )?,
        }
    };
    let mem = match negotiate(&mut chan, va_bits, opts.failpoint)? {
        Some(win) => Mem::Window(win),
        None => Mem::Direct(BTreeMap::new()),
    };
    let mut dev = Device {
        mirror: Mirror::new(va_bits, page_size, tlb_entries as usize),
        va_bits,
        mem,
        page: page_size,
        bufs: BTreeMap::new(),
        absent: BTreeMap::new(),
        by_id: HashMap::new(),
        next_id: 1,
        last_seq: 0,
        maps: 0,
        invalidations: 0,
        failpoint: opts.failpoint,
    };
    loop {
        let Some((id, msg, fds)) = next(&mut chan)? else {
            continue;
        };
        let reply = match msg {
            Msg::Shutdown => return Ok(()),
            Msg::Map {
                addr,
                len,
                writable,
            } => dev.map(addr, len, writable, fds),
            Msg::Unmap { seq, addr, len } => dev.unmap(seq, addr, len),
            Msg::Walk { head, max_nodes } => dev.walk(head, max_nodes),
            Msg::Sum { addr, len } => {
                if dev.failpoint == Some(Failpoint::GarbageOnSum) {
                    chan.send_raw(b"not a message", None, None)
                        .map_err(chan_err)?;
                    continue;
                }
                dev.sum(addr, len)
            }
            Msg::Copy { dst, src, len } => dev.copy(dst, src, len),
            Msg::Attach { addr, len } => dev.attach(addr, len, fds),
            Msg::MapRange { addr, len, prot } => dev.map_range(addr, len, prot),
            Msg::Invalidate { seq, addr, len } => dev.invalidate(seq, addr, len),
            Msg::UnmapRange { addr, len } => dev.unmap_range(addr, len),
            Msg::Protect { addr, len, prot } => dev.protect(addr, len, prot),
            Msg::MapRegion { addr, len } => dev.map_region(addr, len),
            Msg::InvalidateUnmap { seq, ranges } => dev.invalidate_unmap(seq, &ranges),
            Msg::Maps if matches!(dev.mem, Mem::Direct(_)) => {
                send_own_maps(&mut chan, id)?;
                continue;
            }
            Msg::MigrateIn { addr, len } => dev.migrate_in(addr, len),
            Msg::MigrateOut {
                addr,
                len,
                write_back,
            } => dev.migrate_out(addr, len, write_back),
            Msg::Resident {
                addr,
                len,
                resident,
            } => dev.set_resident(addr, len, resident),
            Msg::Stats => Msg::StatsReply {
                words: dev.stats().to_words(),
            },
            m => Msg::Error {
                code: code::BAD_REQUEST,
                message: format!("unexpected {} message", m.name()),
            },
        };
        chan.send(id, &reply, None, None).map_err(chan_err)?;
    }
}

/// Answers `Maps` (`id`): this process's own mappings, in
/// [`Msg::MapsReply`] chunks, the last one flagged.
fn send_own_maps(chan: &mut Channel, id: u64) -> Result<(), Stop> {
    let own = match own_view() {
        Ok(v) => occupied(&v),
        Err(e) => {
            let m = Msg::Error {
                code: code::SYS,
                message: format!("reading this peer's mappings: {e}"),
            };
            return chan.send(id, &m, None, None).map_err(chan_err);
        }
    };
    let mut chunks = own.chunks(super::wire::VMAS_PER_PACKET).peekable();
    if chunks.peek().is_none() {
        let m = Msg::MapsReply {
            last: true,
            ranges: Vec::new(),
        };
        return chan.send(id, &m, None, None).map_err(chan_err);
    }
    while let Some(c) = chunks.next() {
        let m = Msg::MapsReply {
            last: chunks.peek().is_none(),
            ranges: c.iter().map(|&(s, e, g)| (s, e, u64::from(g))).collect(),
        };
        chan.send(id, &m, None, None).map_err(chan_err)?;
    }
    Ok(())
}

/// Agreement rounds until a `Commit` (the agreed window), or `Direct`
/// before any round (`None`: the direct mode).
fn negotiate(
    chan: &mut Channel,
    va_bits: u32,
    failpoint: Option<Failpoint>,
) -> Result<Option<SharedWindow>, Stop> {
    let my_floor = probe::mmap_floor()?;
    let my_high = reserve::window_high(va_bits)?;
    let mut pending: Option<(u32, Reservation)> = None;
    loop {
        let Some((id, msg, _)) = next(chan)? else {
            continue;
        };
        match msg {
            Msg::Negotiate {
                attempt,
                len,
                align,
                low,
                high,
                topdown,
            } => {
                pending = None;
                // The CPU's ranges of this round.
                let mut cpu = Vec::new();
                loop {
                    match next(chan)? {
                        Some((
                            rid,
                            Msg::Vmas {
                                attempt: a,
                                last,
                                ranges,
                            },
                            _,
                        )) if rid == id && a == attempt => {
                            cpu.extend(ranges.into_iter().map(|(s, e, f)| (s, e, f == 1)));
                            if last {
                                break;
                            }
                        }
                        Some((rid, m, _)) => {
                            refuse(
                                chan,
                                rid,
                                code::BAD_REQUEST,
                                format!("expected the vmas of round {attempt}, got {}", m.name()),
                            )?;
                        }
                        None => {}
                    }
                }
                let ok = len > 0
                    && align.is_power_of_two()
                    && align >= PAGE
                    && low >= my_floor
                    && high <= my_high;
                if !ok {
                    refuse(
                        chan,
                        id,
                        code::BAD_REQUEST,
                        format!(
                            "window [{low:#x}, {high:#x}) len {len:#x} align {align:#x} is not \
                             inside this process's [{my_floor:#x}, {my_high:#x})"
                        ),
                    )?;
                    continue;
                }
                let mine = occupied(&own_view()?);
                send_vmas(chan, id, attempt, &mine, None).map_err(chan_err)?;
                let req = WindowRequest {
                    len,
                    align,
                    low,
                    high,
                    topdown,
                };
                let outcome = match common_window(&cpu, &mine, &req) {
                    Err(_) => Reserved::NoSpace,
                    Ok(a) => match steal_then_reserve(a, len, attempt, failpoint) {
                        Ok(r) => {
                            pending = Some((attempt, r));
                            Reserved::Ok(a)
                        }
                        Err(Error::Sys {
                            errno: Errno::EEXIST,
                            ..
                        }) => Reserved::Busy(a),
                        Err(Error::Sys { errno, .. }) => Reserved::Failed(errno.0),
                        // svmap-linux told the ENOMEM causes apart with
                        // this process's numbers: pass them on.
                        Err(Error::AddressSpaceLimit {
                            len,
                            vm_size,
                            limit,
                            ..
                        }) => Reserved::AddressSpaceLimit {
                            len,
                            vm_size,
                            limit,
                        },
                        Err(Error::MapCountLimit {
                            vmas,
                            max_map_count,
                            ..
                        }) => Reserved::MapCountLimit {
                            vmas: vmas as u64,
                            max_map_count,
                        },
                        Err(_) => Reserved::Failed(libc::ENOMEM),
                    },
                };
                chan.send(id, &Msg::Reserved { attempt, outcome }, None, None)
                    .map_err(chan_err)?;
            }
            Msg::Commit { attempt, addr, len } => match pending.take() {
                Some((a, r)) if a == attempt && r.addr() == addr && r.len() == len => {
                    chan.send(id, &Msg::Ack, None, None).map_err(chan_err)?;
                    return Ok(Some(SharedWindow::new(r)));
                }
                p => {
                    pending = p;
                    refuse(
                        chan,
                        id,
                        code::BAD_REQUEST,
                        format!("commit of round {attempt} at {addr:#x} without that reservation"),
                    )?;
                }
            },
            Msg::Abandon { .. } => {
                pending = None;
                chan.send(id, &Msg::Ack, None, None).map_err(chan_err)?;
            }
            Msg::Direct if pending.is_none() => {
                chan.send(id, &Msg::Ack, None, None).map_err(chan_err)?;
                return Ok(None);
            }
            Msg::Shutdown => return Err(Stop::Gone),
            m => refuse(
                chan,
                id,
                code::BAD_REQUEST,
                format!("unexpected {} message before a window is agreed", m.name()),
            )?,
        }
    }
}

/// `Reservation::at(a, len)`, after the `steal-window` failpoint's canary
/// in the first round.
fn steal_then_reserve(
    a: u64,
    len: u64,
    attempt: u32,
    failpoint: Option<Failpoint>,
) -> Result<Reservation, Error> {
    if attempt == 1 && failpoint == Some(Failpoint::StealWindow) {
        // Kept for the life of the process.
        std::mem::forget(Reservation::at(a, PAGE));
    }
    Reservation::at(a, len)
}

/// One buffer the device may reach.
#[derive(Clone, Copy, Debug)]
struct DevBuf {
    len: u64,
    id: u64,
    readable: bool,
    writable: bool,
}

/// The memory the device reaches.
enum Mem {
    /// The agreed window, buffers mapped into it one memfd each.
    Window(SharedWindow),
    /// The direct mode: attachments (one memfd each) and device-only
    /// regions (private memory), by start address; they never overlap.
    Direct(BTreeMap<u64, SharedWindow>),
}

impl Mem {
    /// The window that holds `addr`.
    fn at(&self, addr: u64) -> Option<&SharedWindow> {
        match self {
            Mem::Window(w) => Some(w),
            Mem::Direct(m) => m
                .range(..=addr)
                .next_back()
                .map(|(_, w)| w)
                .filter(|w| addr < w.reservation().end()),
        }
    }
    fn read_u64(&self, addr: u64) -> Result<u64, Errno> {
        self.at(addr).ok_or(Errno(libc::EFAULT))?.read_u64(addr)
    }
    fn read_bytes(&self, addr: u64, out: &mut [u8]) -> Result<(), Errno> {
        self.at(addr)
            .ok_or(Errno(libc::EFAULT))?
            .read_bytes(addr, out)
    }
    fn write_bytes(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        self.at(addr)
            .ok_or(Errno(libc::EFAULT))?
            .write_bytes(addr, data)
    }
}

/// A device fault at an address.
struct DevFault {
    fault: Fault,
    addr: u64,
    write: bool,
}

impl DevFault {
    fn msg(&self) -> Msg {
        Msg::Fault {
            kind: match self.fault {
                Fault::OutOfRange => 0,
                Fault::Unmapped => 1,
                Fault::Protection => 2,
            },
            addr: self.addr,
            write: self.write,
        }
    }
}

struct Device {
    mirror: Mirror,
    va_bits: u32,
    mem: Mem,
    page: u64,
    /// Start -> buffer: the "CPU mapping" the fault handler snapshots.
    bufs: BTreeMap<u64, DevBuf>,
    /// Start -> end: ranges not resident for this device (another device
    /// holds their data); the fault handler maps nothing there.
    absent: BTreeMap<u64, u64>,
    /// Buffer id (frame) -> start.
    by_id: HashMap<u64, u64>,
    next_id: u64,
    last_seq: u64,
    maps: u64,
    invalidations: u64,
    failpoint: Option<Failpoint>,
}

fn not_in_mode(what: &str) -> Msg {
    Msg::Error {
        code: code::BAD_REQUEST,
        message: format!("a {what} request does not belong to this peer's mode"),
    }
}

fn ack_or(r: Result<(), Msg>) -> Msg {
    r.err().unwrap_or(Msg::Ack)
}

fn sys_error(what: String, e: Errno) -> Msg {
    Msg::Error {
        code: if e == Errno::EEXIST || e == Errno::EINVAL {
            code::BAD_RANGE
        } else {
            code::SYS
        },
        message: format!("{what}: {e}"),
    }
}

fn bad_range(message: String) -> Msg {
    Msg::Error {
        code: code::BAD_RANGE,
        message,
    }
}

impl Device {
    fn map(&mut self, addr: u64, len: u64, writable: bool, mut fds: Vec<OwnedFd>) -> Msg {
        let fd = fds.pop().expect("the channel checks that a map has one fd");
        let Mem::Window(win) = &mut self.mem else {
            return not_in_mode("map");
        };
        let (ws, we) = (win.reservation().addr(), win.reservation().end());
        let aligned = addr.is_multiple_of(self.page) && len.is_multiple_of(self.page) && len > 0;
        if !aligned || addr < ws || addr.checked_add(len).is_none_or(|e| e > we) {
            return bad_range(format!(
                "buffer [{addr:#x}, +{len:#x}) is not whole device pages inside the window \
                 [{ws:#x}, {we:#x})"
            ));
        }
        if let Err(e) = win.map_fd(addr, len, fd.as_fd()) {
            return Msg::Error {
                code: if e == Errno::EEXIST || e == Errno::EINVAL {
                    code::BAD_RANGE
                } else {
                    code::SYS
                },
                message: format!("mapping the buffer at {addr:#x} (+{len:#x}): {e}"),
            };
        }
        drop(fd); // the mapping keeps the memfd alive
        let id = self.next_id;
        self.next_id += 1;
        self.bufs.insert(
            addr,
            DevBuf {
                len,
                id,
                readable: true,
                writable,
            },
        );
        self.by_id.insert(id, addr);
        self.mirror.prefault(
            addr,
            addr + len,
            Perm {
                frame: id,
                read: true,
                write: writable,
            },
            u64::MAX,
        );
        self.maps += 1;
        if self.failpoint == Some(Failpoint::DieOnMap(self.maps)) {
            sys::kill_self();
        }
        Msg::MapAck { addr, id }
    }

    fn unmap(&mut self, seq: u64, addr: u64, len: u64) -> Msg {
        if !matches!(self.mem, Mem::Window(_)) {
            return not_in_mode("unmap");
        }
        if seq <= self.last_seq {
            return Msg::Error {
                code: code::BAD_REQUEST,
                message: format!(
                    "invalidation sequence {seq} after {}: not increasing",
                    self.last_seq
                ),
            };
        }
        match self.bufs.get(&addr) {
            Some(b) if b.len == len => {}
            _ => return bad_range(format!("no buffer [{addr:#x}, +{len:#x}) is mapped")),
        }
        // Invalidate first: no PTE or TLB entry of the range survives this.
        self.mirror.invalidate_start(addr, addr + len);
        let b = self.bufs.remove(&addr).expect("checked above");
        self.by_id.remove(&b.id);
        let r = match &mut self.mem {
            Mem::Window(w) => w.unmap(addr, len),
            Mem::Direct(_) => unreachable!("checked above"),
        };
        self.mirror.invalidate_end();
        self.last_seq = seq;
        match r {
            Ok(()) => Msg::UnmapAck { seq },
            Err(e) => Msg::Error {
                code: code::SYS,
                message: format!("PROT_NONE over the freed buffer at {addr:#x}: {e}"),
            },
        }
    }

    /// The device MMU's translation of one byte: below the limit, mapped,
    /// permitted. The frame is the buffer id; the bytes are at the same
    /// address in this process.
    fn translate(&self, addr: u64, write: bool) -> Result<(), DevFault> {
        let bufs = &self.bufs;
        let absent = &self.absent;
        let mut snapshot = |a: u64| {
            let gone = absent.range(..=a).next_back().is_some_and(|(_, &e)| a < e);
            let perm = bufs
                .range(..=a)
                .next_back()
                .filter(|(&s, b)| !gone && a < s + b.len)
                .map(|(_, b)| Perm {
                    frame: b.id,
                    read: b.readable,
                    write: b.writable,
                });
            // Buffers are whole device pages, so the page is uniform.
            Snapshot {
                byte: perm,
                page: perm,
            }
        };
        let fault = |fault| DevFault { fault, addr, write };
        let frame = self
            .mirror
            .access(addr, write, &mut snapshot)
            .map_err(fault)?;
        match self.by_id.get(&frame) {
            Some(&s) if addr >= s && addr < s + bufs[&s].len => Ok(()),
            // A translation to a buffer that is gone would be a stale entry:
            // the invalidation protocol rules it out; report it as unmapped.
            _ => Err(fault(Fault::Unmapped)),
        }
    }

    fn read_u64(&self, addr: u64) -> Result<u64, DevFault> {
        self.translate(addr, false)?;
        if addr % self.page > self.page - 8 {
            let last = addr.checked_add(7).ok_or(DevFault {
                fault: Fault::OutOfRange,
                addr,
                write: false,
            })?;
            self.translate(last, false)?;
        }
        self.mem.read_u64(addr).map_err(|_| DevFault {
            fault: Fault::Unmapped,
            addr,
            write: false,
        })
    }

    fn walk(&mut self, head: u64, max_nodes: u64) -> Msg {
        if self.failpoint == Some(Failpoint::HangInWalk) {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let mut h = CHECKSUM_INIT;
        let mut count = 0u64;
        let mut node = head;
        while node != 0 {
            if count == max_nodes {
                return Msg::WalkLimit { nodes: count };
            }
            let step = node
                .checked_add(NODE_VALUE)
                .ok_or(DevFault {
                    fault: Fault::OutOfRange,
                    addr: node,
                    write: false,
                })
                .and_then(|va| Ok((self.read_u64(node + NODE_NEXT)?, self.read_u64(va)?)));
            let (next, value) = match step {
                Ok(x) => x,
                Err(f) => return f.msg(),
            };
            h = checksum_step(h, value);
            count += 1;
            node = next;
            if self.failpoint == Some(Failpoint::DieInWalk(count)) {
                sys::kill_self();
            }
        }
        Msg::Done { a: count, b: h }
    }

    /// The device pages of `[addr, addr + len)` as `(start, end)` chunks.
    fn chunks(&self, addr: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
        let page = self.page;
        let end = addr + len;
        let mut a = addr;
        std::iter::from_fn(move || {
            if a >= end {
                return None;
            }
            let e = (a | (page - 1)).saturating_add(1).min(end);
            let r = (a, e);
            a = e;
            Some(r)
        })
    }

    fn sum(&mut self, addr: u64, len: u64) -> Msg {
        if !addr.is_multiple_of(8) || !len.is_multiple_of(8) || addr.checked_add(len).is_none() {
            return Msg::Error {
                code: code::BAD_REQUEST,
                message: format!("sum of [{addr:#x}, +{len:#x}): not 8-byte words"),
            };
        }
        let mut sum = 0u64;
        for (a, e) in self.chunks(addr, len) {
            if let Err(f) = self.translate(a, false) {
                return f.msg();
            }
            for w in (a..e).step_by(8) {
                match self.mem.read_u64(w) {
                    Ok(v) => sum = sum.wrapping_add(v),
                    Err(_) => {
                        return DevFault {
                            fault: Fault::Unmapped,
                            addr: w,
                            write: false,
                        }
                        .msg()
                    }
                }
            }
        }
        Msg::Done { a: sum, b: len / 8 }
    }

    fn copy(&mut self, dst: u64, src: u64, len: u64) -> Msg {
        const MAX: u64 = 256 << 20;
        if len > MAX || dst.checked_add(len).is_none() || src.checked_add(len).is_none() {
            return Msg::Error {
                code: code::BAD_REQUEST,
                message: format!("copy of {len:#x} bytes: over {MAX:#x} or wraps"),
            };
        }
        // memmove: read the whole source, then write the destination.
        let mut tmp = vec![0u8; len as usize];
        for (a, e) in self.chunks(src, len) {
            if let Err(f) = self.translate(a, false) {
                return f.msg();
            }
            let o = (a - src) as usize;
            if self
                .mem
                .read_bytes(a, &mut tmp[o..o + (e - a) as usize])
                .is_err()
            {
                return DevFault {
                    fault: Fault::Unmapped,
                    addr: a,
                    write: false,
                }
                .msg();
            }
        }
        for (a, e) in self.chunks(dst, len) {
            if let Err(f) = self.translate(a, true) {
                return f.msg();
            }
            let o = (a - dst) as usize;
            if self
                .mem
                .write_bytes(a, &tmp[o..o + (e - a) as usize])
                .is_err()
            {
                return DevFault {
                    fault: Fault::Unmapped,
                    addr: a,
                    write: true,
                }
                .msg();
            }
        }
        Msg::Done { a: len, b: 0 }
    }

    /// Checks that `[addr, addr + len)` is whole device pages below the
    /// device's limit, in the direct mode; returns the end.
    fn direct_range(&self, addr: u64, len: u64) -> Result<u64, Msg> {
        if !matches!(self.mem, Mem::Direct(_)) {
            return Err(not_in_mode("direct-mode"));
        }
        let end = addr.checked_add(len).filter(|_| len > 0);
        let limit = 1u128 << self.va_bits;
        match end {
            Some(e)
                if addr.is_multiple_of(self.page)
                    && len.is_multiple_of(self.page)
                    && u128::from(e) <= limit =>
            {
                Ok(e)
            }
            _ => Err(bad_range(format!(
                "[{addr:#x}, +{len:#x}) is not whole device pages below the limit {limit:#x}"
            ))),
        }
    }

    fn attachments(&mut self) -> &mut BTreeMap<u64, SharedWindow> {
        match &mut self.mem {
            Mem::Direct(m) => m,
            Mem::Window(_) => unreachable!("direct_range checked the mode"),
        }
    }

    /// Rebuilds the device mapping over every buffer that meets
    /// `[addr, end)`: their pages are invalidated, the parts outside keep
    /// their access, the parts inside get `inside` (`None`: dropped), and
    /// every piece gets a fresh id and fresh device pages.
    fn rework(&mut self, addr: u64, end: u64, inside: Option<(bool, bool)>) {
        let hit: Vec<(u64, DevBuf)> = self
            .bufs
            .range(..end)
            .filter(|(&s, b)| s + b.len > addr)
            .map(|(&s, b)| (s, *b))
            .collect();
        let lo = hit.first().map_or(addr, |&(s, _)| s.min(addr));
        let hi = hit.last().map_or(end, |&(s, b)| (s + b.len).max(end));
        self.mirror.invalidate_start(lo, hi);
        let mut pieces = Vec::new();
        for (s, b) in hit {
            self.bufs.remove(&s);
            self.by_id.remove(&b.id);
            let e = s + b.len;
            for (ps, pe, is_inside) in [
                (s, e.min(addr), false),
                (s.max(addr), e.min(end), true),
                (s.max(end), e, false),
            ] {
                if ps >= pe {
                    continue;
                }
                let perm = if is_inside {
                    match inside {
                        Some(p) => p,
                        None => continue,
                    }
                } else {
                    (b.readable, b.writable)
                };
                pieces.push((ps, pe, perm));
            }
        }
        self.mirror.invalidate_end();
        for (ps, pe, (r, w)) in pieces {
            self.insert(ps, pe, r, w);
        }
    }

    fn insert(&mut self, start: u64, end: u64, readable: bool, writable: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.bufs.insert(
            start,
            DevBuf {
                len: end - start,
                id,
                readable,
                writable,
            },
        );
        self.by_id.insert(id, start);
        self.mirror.prefault(
            start,
            end,
            Perm {
                frame: id,
                read: readable,
                write: writable,
            },
            u64::MAX,
        );
        id
    }

    fn attach(&mut self, addr: u64, len: u64, mut fds: Vec<OwnedFd>) -> Msg {
        let fd = fds
            .pop()
            .expect("the channel checks that an attach has one fd");
        let end = match self.direct_range(addr, len) {
            Ok(e) => e,
            Err(m) => return m,
        };
        // Earlier attachments over the range are stale (the CPU side gave
        // their heaps up): drop them and whatever the device mapped there.
        let stale: Vec<(u64, u64)> = self
            .attachments()
            .range(..end)
            .map(|(&s, w)| (s, w.reservation().end()))
            .filter(|&(_, e)| e > addr)
            .collect();
        for (s, e) in stale {
            self.rework(s, e, None);
            self.attachments().remove(&s);
        }
        match SharedWindow::attach(addr, len, fd.as_fd()) {
            Ok(w) => {
                self.attachments().insert(addr, w);
                Msg::Ack
            }
            Err(e) => sys_error(format!("attaching the heap at {addr:#x} (+{len:#x})"), e),
        }
    }

    fn prot_bits(prot: u8) -> (bool, bool) {
        (prot >= 1, prot >= 2)
    }

    fn map_range(&mut self, addr: u64, len: u64, prot: u8) -> Msg {
        let end = match self.direct_range(addr, len) {
            Ok(e) => e,
            Err(m) => return m,
        };
        let inside = self
            .attachments()
            .range(..=addr)
            .next_back()
            .is_some_and(|(_, w)| end <= w.reservation().end());
        if !inside {
            return bad_range(format!(
                "[{addr:#x}, {end:#x}) is not inside one attached heap"
            ));
        }
        if self
            .bufs
            .range(..end)
            .next_back()
            .is_some_and(|(&s, b)| s + b.len > addr)
        {
            return bad_range(format!("[{addr:#x}, {end:#x}) is mapped already"));
        }
        let (r, w) = Self::prot_bits(prot);
        let id = self.insert(addr, end, r, w);
        self.maps += 1;
        Msg::MapAck { addr, id }
    }

    fn invalidate(&mut self, seq: u64, addr: u64, len: u64) -> Msg {
        let end = match self.direct_range(addr, len) {
            Ok(e) => e,
            Err(m) => return m,
        };
        if seq <= self.last_seq {
            return Msg::Error {
                code: code::BAD_REQUEST,
                message: format!(
                    "invalidation sequence {seq} after {}: not increasing",
                    self.last_seq
                ),
            };
        }
        self.mirror.invalidate_start(addr, end);
        self.mirror.invalidate_end();
        self.last_seq = seq;
        self.invalidations += 1;
        if self.failpoint == Some(Failpoint::DieOnInvalidate(self.invalidations)) {
            sys::kill_self();
        }
        Msg::UnmapAck { seq }
    }

    /// Invalidates every range, acknowledges `seq`, and forgets every
    /// range as `unmap_range` does; every range and the sequence number
    /// are checked before anything changes.
    fn invalidate_unmap(&mut self, seq: u64, ranges: &[(u64, u64)]) -> Msg {
        let mut ends = Vec::with_capacity(ranges.len());
        for &(addr, len) in ranges {
            match self.direct_range(addr, len) {
                Ok(e) => ends.push((addr, e)),
                Err(m) => return m,
            }
        }
        if seq <= self.last_seq {
            return Msg::Error {
                code: code::BAD_REQUEST,
                message: format!(
                    "invalidation sequence {seq} after {}: not increasing",
                    self.last_seq
                ),
            };
        }
        for &(addr, end) in &ends {
            self.mirror.invalidate_start(addr, end);
            self.mirror.invalidate_end();
        }
        self.last_seq = seq;
        self.invalidations += 1;
        if self.failpoint == Some(Failpoint::DieOnInvalidate(self.invalidations)) {
            sys::kill_self();
        }
        for &(addr, end) in &ends {
            self.forget_range(addr, end);
        }
        Msg::UnmapAck { seq }
    }

    fn unmap_range(&mut self, addr: u64, len: u64) -> Msg {
        let end = match self.direct_range(addr, len) {
            Ok(e) => e,
            Err(m) => return m,
        };
        self.forget_range(addr, end);
        Msg::Ack
    }

    /// Drops the device pages of `[addr, end)` and every attachment or
    /// region entirely inside it.
    fn forget_range(&mut self, addr: u64, end: u64) {
        self.rework(addr, end, None);
        self.absent.retain(|&s, &mut e| e <= addr || s >= end);
        // Attachments and regions entirely inside the range go too.
        let gone: Vec<u64> = self
            .attachments()
            .range(addr..end)
            .filter(|(_, w)| w.reservation().end() <= end)
            .map(|(&s, _)| s)
            .collect();
        for s in gone {
            self.attachments().remove(&s);
        }
    }

    fn protect(&mut self, addr: u64, len: u64, prot: u8) -> Msg {
        let end = match self.direct_range(addr, len) {
            Ok(e) => e,
            Err(m) => return m,
        };
        self.rework(addr, end, Some(Self::prot_bits(prot)));
        Msg::Ack
    }

    fn map_region(&mut self, addr: u64, len: u64) -> Msg {
        let end = match self.direct_range(addr, len) {
            Ok(e) => e,
            Err(m) => return m,
        };
        let r = (|| {
            if self
                .attachments()
                .range(..end)
                .next_back()
                .is_some_and(|(_, w)| w.reservation().end() > addr)
            {
                return Err(bad_range(format!(
                    "region [{addr:#x}, {end:#x}) overlaps memory the device holds"
                )));
            }
            let w = SharedWindow::private(addr, len)
                .map_err(|e| sys_error(format!("region at {addr:#x} (+{len:#x})"), e))?;
            self.attachments().insert(addr, w);
            self.insert(addr, end, true, true);
            Ok(())
        })();
        ack_or(r)
    }

    /// The attachment that holds all of `[addr, end)`, by start.
    fn attachment_of(&mut self, addr: u64, end: u64) -> Result<u64, Msg> {
        self.attachments()
            .range(..=addr)
            .next_back()
            .filter(|(_, w)| end <= w.reservation().end() && w.is_attachment())
            .map(|(&s, _)| s)
            .ok_or_else(|| {
                bad_range(format!(
                    "[{addr:#x}, {end:#x}) is not inside one attached heap"
                ))
            })
    }

    /// Changes the memory behind `[addr, end)` with `change` inside an
    /// invalidation of the range (the `mmu_interval_notifier` pattern):
    /// every device page-table and TLB entry of the range is gone before
    /// the memory moves, and the invalidation ends only after it moved, so
    /// the next device access faults and the fault handler maps the range
    /// again over the new memory. Buffers and their access do not change.
    fn move_backing(
        &mut self,
        addr: u64,
        end: u64,
        change: impl FnOnce(&mut SharedWindow) -> Result<(), Errno>,
    ) -> Msg {
        let s = match self.attachment_of(addr, end) {
            Ok(s) => s,
            Err(m) => return m,
        };
        self.mirror.invalidate_start(addr, end);
        let w = self.attachments().get_mut(&s).expect("found above");
        let r = change(w);
        self.mirror.invalidate_end();
        match r {
            Ok(()) => Msg::Ack,
            Err(e) => sys_error(format!("migrating [{addr:#x}, {end:#x})"), e),
        }
    }

    fn migrate_in(&mut self, addr: u64, len: u64) -> Msg {
        let end = match self.direct_range(addr, len) {
            Ok(e) => e,
            Err(m) => return m,
        };
        self.move_backing(addr, end, |w| w.privatize(addr, len))
    }

    fn migrate_out(&mut self, addr: u64, len: u64, write_back: bool) -> Msg {
        let end = match self.direct_range(addr, len) {
            Ok(e) => e,
            Err(m) => return m,
        };
        self.move_backing(addr, end, |w| w.share_again(addr, len, write_back))
    }

    fn set_resident(&mut self, addr: u64, len: u64, resident: bool) -> Msg {
        let end = match self.direct_range(addr, len) {
            Ok(e) => e,
            Err(m) => return m,
        };
        if resident {
            self.absent.retain(|&s, &mut e| e <= addr || s >= end);
        } else {
            self.mirror.invalidate_start(addr, end);
            self.mirror.invalidate_end();
            self.absent.retain(|&s, &mut e| e <= addr || s >= end);
            self.absent.insert(addr, end);
        }
        Msg::Ack
    }

    fn stats(&self) -> DeviceStats {
        let s = self.mirror.stats();
        let (tlb_hits, tlb_misses) = self.mirror.tlb_counts();
        DeviceStats {
            walks: s.walks,
            faults: s.faults,
            retries: s.retries,
            invalidations: s.invalidations,
            installs: s.installs,
            tlb_hits,
            tlb_misses,
            live_buffers: self.bufs.len() as u64,
            last_seq: self.last_seq,
        }
    }
}
