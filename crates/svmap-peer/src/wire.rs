//! The messages between the CPU side and the device peer, and their
//! encoding: one message per `SOCK_SEQPACKET` packet.
//!
//! ```text
//!  0        4   5    6      8            16
//!  [ "SVMP" ][v][kind][ 0 0 ][ id (u64 LE) ][ body: u64 LE words ... ]
//! ```
//!
//! Every body is a fixed sequence of little-endian `u64` words for its kind
//! ([`Msg::Vmas`] has a count word and three words per range;
//! [`Msg::Reserved`] an outcome tag and the words of that outcome;
//! [`Msg::Error`] a length word and the message bytes, zero padded to a
//! word). Decoding is strict: a wrong magic, version, kind, reserved byte,
//! body length or trailing byte is a [`WireError`]. A `Map` carries the
//! buffer's memfd and an `Attach` the heap's memfd as `SCM_RIGHTS`; every
//! other message carries none.
//!
//! After the hello the CPU side chooses one of two modes: the window
//! agreement (`Negotiate` ... `Commit`, then `Map`/`Unmap` per buffer with
//! a memfd each), or the direct mode (`Direct`): the CPU side's engine
//! decides every address, a heap's memfd is passed once (`Attach`), and
//! ranges of it are mapped, invalidated, protected and unmapped without
//! descriptors.

use core::fmt;

/// `"SVMP"`, little endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"SVMP");
/// Protocol version (2: [`Reserved`] names the peer's address-space and
/// map-count limits; 3: the direct mode, where the CPU side decides every
/// address: [`Msg::Direct`], [`Msg::Attach`], [`Msg::MapRange`],
/// [`Msg::Invalidate`], [`Msg::UnmapRange`], [`Msg::Protect`],
/// [`Msg::MapRegion`]; 4: [`Msg::InvalidateUnmap`], several ranges
/// invalidated, acknowledged and unmapped in one request, and
/// [`Msg::Maps`] / [`Msg::MapsReply`], the peer's own mappings;
/// 5: page migration, [`Msg::MigrateIn`] and [`Msg::MigrateOut`]; 6:
/// [`Msg::Resident`], ranges another device holds).
pub const VERSION: u8 = 6;
/// Header bytes.
pub const HEADER: usize = 16;
/// The largest packet either side sends or accepts.
pub const MAX_PACKET: usize = 64 * 1024;
/// Ranges per [`Msg::Vmas`] packet (24 bytes each, under [`MAX_PACKET`]).
pub const VMAS_PER_PACKET: usize = 2000;
/// Ranges per [`Msg::InvalidateUnmap`] packet (16 bytes each, under
/// [`MAX_PACKET`]).
pub const RANGES_PER_PACKET: usize = 4000;

/// How a reservation attempt went on the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserved {
    /// The peer reserved `[addr, addr + len)` and holds it.
    Ok(u64),
    /// `MAP_FIXED_NOREPLACE` at this address failed with `EEXIST`.
    Busy(u64),
    /// The peer's search over the union found no window.
    NoSpace,
    /// The reservation failed with this errno.
    Failed(i32),
    /// The reservation would take the peer's address space past its
    /// `RLIMIT_AS` (the peer's numbers, as in
    /// [`svmap_linux::error::Error::AddressSpaceLimit`]).
    AddressSpaceLimit {
        /// Bytes the reservation would have added.
        len: u64,
        /// The peer's `VmSize` before the call.
        vm_size: u64,
        /// The peer's soft `RLIMIT_AS`.
        limit: u64,
    },
    /// The peer is at its limit on the number of mappings (as in
    /// [`svmap_linux::error::Error::MapCountLimit`]).
    MapCountLimit {
        /// The peer's VMA count.
        vmas: u64,
        /// The peer's `vm.max_map_count`.
        max_map_count: u64,
    },
}

/// Error codes of [`Msg::Error`].
pub mod code {
    /// The request was malformed or out of order.
    pub const BAD_REQUEST: u32 = 1;
    /// A `Map` or `Unmap` named a range the peer cannot use.
    pub const BAD_RANGE: u32 = 2;
    /// A system call failed on the peer.
    pub const SYS: u32 = 3;
}

/// One protocol message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// CPU -> peer, first: the device to host.
    Hello {
        /// Device VA width.
        va_bits: u32,
        /// Device page size.
        page_size: u64,
        /// Device TLB entries.
        tlb_entries: u32,
    },
    /// Peer -> CPU: who it is and its limits.
    HelloAck {
        /// The peer's pid.
        pid: u32,
        /// The peer's effective `mmap_min_addr`.
        floor: u64,
        /// `min(2^va_bits, top of the peer's user window)`.
        high: u64,
    },
    /// CPU -> peer: start a window agreement round; the CPU's
    /// [`Msg::Vmas`] follow.
    Negotiate {
        /// Round number, from 1.
        attempt: u32,
        /// Window length.
        len: u64,
        /// Window alignment.
        align: u64,
        /// Lowest start.
        low: u64,
        /// Highest end.
        high: u64,
        /// Highest fit first.
        topdown: bool,
    },
    /// Either way: a chunk of what the sender occupies, `(start, end,
    /// flags)` with `flags & 1` = grows down.
    Vmas {
        /// The round.
        attempt: u32,
        /// The sender's last chunk of this round.
        last: bool,
        /// The ranges.
        ranges: Vec<(u64, u64, u64)>,
    },
    /// Peer -> CPU: its own reservation attempt.
    Reserved {
        /// The round.
        attempt: u32,
        /// The outcome.
        outcome: Reserved,
    },
    /// CPU -> peer: the CPU holds the same window; keep it.
    Commit {
        /// The round.
        attempt: u32,
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// CPU -> peer: drop the reservation of this round and await another.
    Abandon {
        /// The round.
        attempt: u32,
    },
    /// Peer -> CPU: a request that has no other answer was done.
    Ack,
    /// CPU -> peer, with one memfd: map it at `[addr, addr + len)`.
    Map {
        /// Start (identical in both processes).
        addr: u64,
        /// Length.
        len: u64,
        /// The device may write.
        writable: bool,
    },
    /// Peer -> CPU: mapped, with the device's buffer id.
    MapAck {
        /// Start.
        addr: u64,
        /// The buffer id (the device's frame number for it).
        id: u64,
    },
    /// CPU -> peer: invalidate and unmap the buffer at `addr`.
    Unmap {
        /// Invalidation sequence number (strictly increasing).
        seq: u64,
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// Peer -> CPU: the PTEs and TLB entries are gone and the range is
    /// `PROT_NONE` again.
    UnmapAck {
        /// The sequence number acknowledged.
        seq: u64,
    },
    /// CPU -> peer: walk a list of `{ next: u64, value: u64 }` nodes.
    Walk {
        /// First node (0: empty list).
        head: u64,
        /// Give up after this many nodes.
        max_nodes: u64,
    },
    /// CPU -> peer: the wrapping sum of the `u64` words of a range.
    Sum {
        /// Start (8-aligned).
        addr: u64,
        /// Length (a multiple of 8).
        len: u64,
    },
    /// CPU -> peer: copy `len` bytes (memmove).
    Copy {
        /// Destination.
        dst: u64,
        /// Source.
        src: u64,
        /// Length.
        len: u64,
    },
    /// Peer -> CPU: a device operation completed (walk: count, checksum;
    /// sum: sum, words; copy: len, 0).
    Done {
        /// First result.
        a: u64,
        /// Second result.
        b: u64,
    },
    /// Peer -> CPU: the device faulted.
    Fault {
        /// 0 out of range, 1 unmapped, 2 protection.
        kind: u8,
        /// The faulting address.
        addr: u64,
        /// The access was a write.
        write: bool,
    },
    /// Peer -> CPU: a walk reached its node limit.
    WalkLimit {
        /// Nodes visited.
        nodes: u64,
    },
    /// Peer -> CPU: the request failed.
    Error {
        /// One of [`code`].
        code: u32,
        /// What went wrong.
        message: String,
    },
    /// CPU -> peer: send the device counters.
    Stats,
    /// Peer -> CPU: the device counters.
    StatsReply {
        /// See [`crate::DeviceStats`], in field order.
        words: [u64; 9],
    },
    /// CPU -> peer: exit now (no answer).
    Shutdown,
    /// CPU -> peer, right after the hello: no window agreement; the CPU
    /// side decides every address. Answered with [`Msg::Ack`].
    Direct,
    /// CPU -> peer (direct mode), with one memfd: map its first `len` bytes
    /// at `[addr, addr + len)` in the peer, replacing earlier attachments
    /// that overlap the range. Answered with [`Msg::Ack`].
    Attach {
        /// Start (identical in both processes).
        addr: u64,
        /// Length.
        len: u64,
    },
    /// CPU -> peer (direct mode): install device pages for a range inside
    /// an attachment. Answered with [`Msg::MapAck`].
    MapRange {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
        /// 0 none, 1 read, 2 read-write.
        prot: u8,
    },
    /// CPU -> peer (direct mode): clear the device pages and TLB entries
    /// of a range and stop using it. Answered with [`Msg::UnmapAck`].
    Invalidate {
        /// Invalidation sequence number (strictly increasing).
        seq: u64,
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// CPU -> peer (direct mode): forget the device mapping of a range
    /// (after an acknowledged invalidation); an attachment that lies
    /// entirely inside it is unmapped. Answered with [`Msg::Ack`].
    UnmapRange {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// CPU -> peer (direct mode): change the device's access to a range.
    /// Answered with [`Msg::Ack`].
    Protect {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
        /// 0 none, 1 read, 2 read-write.
        prot: u8,
    },
    /// CPU -> peer (direct mode): back a device-only region with memory
    /// private to the peer. Answered with [`Msg::Ack`].
    MapRegion {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// CPU -> peer (direct mode): invalidate every range (device pages and
    /// TLB entries cleared), then forget every one as
    /// [`Msg::UnmapRange`] does; answered once, with [`Msg::UnmapAck`] of
    /// `seq`, after all of it. The peer checks every range before it acts
    /// on any: a bad one refuses the whole request.
    InvalidateUnmap {
        /// Invalidation sequence number (strictly increasing, shared with
        /// [`Msg::Invalidate`]).
        seq: u64,
        /// The ranges as `(addr, len)`, 1..=[`RANGES_PER_PACKET`] of them.
        ranges: Vec<(u64, u64)>,
    },
    /// CPU -> peer (direct mode): send the peer's own mappings (its
    /// `/proc/self/maps`). Answered with one or more [`Msg::MapsReply`].
    Maps,
    /// Peer -> CPU: a chunk of the peer's own mappings, `(start, end,
    /// flags)` as in [`Msg::Vmas`]; `last` on the final chunk.
    MapsReply {
        /// The final chunk.
        last: bool,
        /// The ranges.
        ranges: Vec<(u64, u64, u64)>,
    },
    /// CPU -> peer (direct mode): migrate a range of an attachment into
    /// the device's own memory. The peer invalidates the device pages of
    /// the range, copies its bytes into memory private to the peer (the
    /// CPU side no longer sees them) and maps the range again over that
    /// memory. The CPU side has write-protected the range first and
    /// punches it out of the memfd after the answer. Answered with
    /// [`Msg::Ack`].
    MigrateIn {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// CPU -> peer (direct mode): migrate a range held in the device's
    /// memory back: the peer invalidates its device pages, writes the
    /// bytes into the heap's memfd (unless `write_back` is false: a freed
    /// range's bytes are dropped), maps the memfd there again and maps the
    /// range again over it. Answered with [`Msg::Ack`].
    MigrateOut {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
        /// Write the bytes back (else drop them).
        write_back: bool,
    },
    /// CPU -> peer (direct mode): whether `[addr, addr + len)` is resident
    /// for this device. Not resident (another device holds its data): the
    /// peer invalidates its device pages there, and its fault handler
    /// reports a fault there ([`Msg::Fault`], unmapped) instead of mapping
    /// the memfd, until the range is resident again. Answered with
    /// [`Msg::Ack`].
    Resident {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
        /// Resident again (else not resident).
        resident: bool,
    },
}

/// A packet that is not a valid message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(s: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(s.into()))
}

impl Msg {
    /// The kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Msg::Hello { .. } => 1,
            Msg::HelloAck { .. } => 2,
            Msg::Negotiate { .. } => 3,
            Msg::Vmas { .. } => 4,
            Msg::Reserved { .. } => 5,
            Msg::Commit { .. } => 6,
            Msg::Abandon { .. } => 7,
            Msg::Ack => 8,
            Msg::Map { .. } => 9,
            Msg::MapAck { .. } => 10,
            Msg::Unmap { .. } => 11,
            Msg::UnmapAck { .. } => 12,
            Msg::Walk { .. } => 13,
            Msg::Sum { .. } => 14,
            Msg::Copy { .. } => 15,
            Msg::Done { .. } => 16,
            Msg::Fault { .. } => 17,
            Msg::WalkLimit { .. } => 18,
            Msg::Error { .. } => 19,
            Msg::Stats => 20,
            Msg::StatsReply { .. } => 21,
            Msg::Shutdown => 22,
            Msg::Direct => 23,
            Msg::Attach { .. } => 24,
            Msg::MapRange { .. } => 25,
            Msg::Invalidate { .. } => 26,
            Msg::UnmapRange { .. } => 27,
            Msg::Protect { .. } => 28,
            Msg::MapRegion { .. } => 29,
            Msg::InvalidateUnmap { .. } => 30,
            Msg::Maps => 31,
            Msg::MapsReply { .. } => 32,
            Msg::MigrateIn { .. } => 33,
            Msg::MigrateOut { .. } => 34,
            Msg::Resident { .. } => 35,
        }
    }

    /// A short name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "hello",
            Msg::HelloAck { .. } => "hello-ack",
            Msg::Negotiate { .. } => "negotiate",
            Msg::Vmas { .. } => "vmas",
            Msg::Reserved { .. } => "reserved",
            Msg::Commit { .. } => "commit",
            Msg::Abandon { .. } => "abandon",
            Msg::Ack => "ack",
            Msg::Map { .. } => "map",
            Msg::MapAck { .. } => "map-ack",
            Msg::Unmap { .. } => "unmap",
            Msg::UnmapAck { .. } => "unmap-ack",
            Msg::Walk { .. } => "walk",
            Msg::Sum { .. } => "sum",
            Msg::Copy { .. } => "copy",
            Msg::Done { .. } => "done",
            Msg::Fault { .. } => "fault",
            Msg::WalkLimit { .. } => "walk-limit",
            Msg::Error { .. } => "error",
            Msg::Stats => "stats",
            Msg::StatsReply { .. } => "stats-reply",
            Msg::Shutdown => "shutdown",
            Msg::Direct => "direct",
            Msg::Attach { .. } => "attach",
            Msg::MapRange { .. } => "map-range",
            Msg::Invalidate { .. } => "invalidate",
            Msg::UnmapRange { .. } => "unmap-range",
            Msg::Protect { .. } => "protect",
            Msg::MapRegion { .. } => "map-region",
            Msg::InvalidateUnmap { .. } => "invalidate-unmap",
            Msg::Maps => "maps",
            Msg::MapsReply { .. } => "maps-reply",
            Msg::MigrateIn { .. } => "migrate-in",
            Msg::MigrateOut { .. } => "migrate-out",
            Msg::Resident { .. } => "resident",
        }
    }

    /// The packet for this message with request id `id`.
    pub fn encode(&self, id: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(VERSION);
        out.push(self.kind());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&id.to_le_bytes());
        let mut w = |v: u64| out.extend_from_slice(&v.to_le_bytes());
        match self {
            Msg::Hello {
                va_bits,
                page_size,
                tlb_entries,
            } => {
                w(u64::from(*va_bits));
                w(*page_size);
                w(u64::from(*tlb_entries));
            }
            Msg::HelloAck { pid, floor, high } => {
                w(u64::from(*pid));
                w(*floor);
                w(*high);
            }
            Msg::Negotiate {
                attempt,
                len,
                align,
                low,
                high,
                topdown,
            } => {
                w(u64::from(*attempt));
                w(*len);
                w(*align);
                w(*low);
                w(*high);
                w(u64::from(*topdown));
            }
            Msg::Vmas {
                attempt,
                last,
                ranges,
            } => {
                w(u64::from(*attempt));
                w(u64::from(*last));
                w(ranges.len() as u64);
                for &(s, e, f) in ranges {
                    w(s);
                    w(e);
                    w(f);
                }
            }
            Msg::Reserved { attempt, outcome } => {
                w(u64::from(*attempt));
                // The tag, then the outcome's words.
                let words: &[u64] = match *outcome {
                    Reserved::Ok(a) => &[0, a],
                    Reserved::Busy(a) => &[1, a],
                    Reserved::NoSpace => &[2, 0],
                    Reserved::Failed(e) => &[3, e as u32 as u64],
                    Reserved::AddressSpaceLimit {
                        len,
                        vm_size,
                        limit,
                    } => &[4, len, vm_size, limit],
                    Reserved::MapCountLimit {
                        vmas,
                        max_map_count,
                    } => &[5, vmas, max_map_count],
                };
                for &x in words {
                    w(x);
                }
            }
            Msg::Commit { attempt, addr, len } => {
                w(u64::from(*attempt));
                w(*addr);
                w(*len);
            }
            Msg::Abandon { attempt } => w(u64::from(*attempt)),
            Msg::Ack | Msg::Stats | Msg::Shutdown | Msg::Direct | Msg::Maps => {}
            Msg::InvalidateUnmap { seq, ranges } => {
                w(*seq);
                w(ranges.len() as u64);
                for &(a, l) in ranges {
                    w(a);
                    w(l);
                }
            }
            Msg::MapsReply { last, ranges } => {
                w(u64::from(*last));
                w(ranges.len() as u64);
                for &(s, e, f) in ranges {
                    w(s);
                    w(e);
                    w(f);
                }
            }
            Msg::Attach { addr, len }
            | Msg::UnmapRange { addr, len }
            | Msg::MapRegion { addr, len }
            | Msg::MigrateIn { addr, len } => {
                w(*addr);
                w(*len);
            }
            Msg::MigrateOut {
                addr,
                len,
                write_back: flag,
            }
            | Msg::Resident {
                addr,
                len,
                resident: flag,
            } => {
                w(*addr);
                w(*len);
                w(u64::from(*flag));
            }
            Msg::MapRange { addr, len, prot } | Msg::Protect { addr, len, prot } => {
                w(*addr);
                w(*len);
                w(u64::from(*prot));
            }
            Msg::Invalidate { seq, addr, len } => {
                w(*seq);
                w(*addr);
                w(*len);
            }
            Msg::Map {
                addr,
                len,
                writable,
            } => {
                w(*addr);
                w(*len);
                w(u64::from(*writable));
            }
            Msg::MapAck { addr, id } => {
                w(*addr);
                w(*id);
            }
            Msg::Unmap { seq, addr, len } => {
                w(*seq);
                w(*addr);
                w(*len);
            }
            Msg::UnmapAck { seq } => w(*seq),
            Msg::Walk { head, max_nodes } => {
                w(*head);
                w(*max_nodes);
            }
            Msg::Sum { addr, len } => {
                w(*addr);
                w(*len);
            }
            Msg::Copy { dst, src, len } => {
                w(*dst);
                w(*src);
                w(*len);
            }
            Msg::Done { a, b } => {
                w(*a);
                w(*b);
            }
            Msg::Fault { kind, addr, write } => {
                w(u64::from(*kind));
                w(*addr);
                w(u64::from(*write));
            }
            Msg::WalkLimit { nodes } => w(*nodes),
            Msg::Error { code, message } => {
                w(u64::from(*code));
                let b = message.as_bytes();
                let b = &b[..b.len().min(4096)];
                w(b.len() as u64);
                out.extend_from_slice(b);
                out.resize(out.len().next_multiple_of(8), 0);
            }
            Msg::StatsReply { words } => {
                for &x in words {
                    w(x);
                }
            }
        }
        out
    }

    /// Decodes one packet into `(id, message)`.
    pub fn decode(p: &[u8]) -> Result<(u64, Msg), WireError> {
        if p.len() < HEADER {
            return bad(format!(
                "packet of {} bytes is shorter than a header",
                p.len()
            ));
        }
        let magic = u32::from_le_bytes(p[0..4].try_into().expect("4 bytes"));
        if magic != MAGIC {
            return bad(format!("bad magic {magic:#010x}"));
        }
        if p[4] != VERSION {
            return bad(format!("protocol version {} (want {VERSION})", p[4]));
        }
        // (The channel checks the version before decoding, to report a
        // peer of another version as such.)
        if p[6] != 0 || p[7] != 0 {
            return bad("reserved header bytes are not zero");
        }
        let kind = p[5];
        let id = u64::from_le_bytes(p[8..16].try_into().expect("8 bytes"));
        let body = &p[HEADER..];
        if !body.len().is_multiple_of(8) {
            return bad(format!("body of {} bytes is not whole words", body.len()));
        }
        let mut r = Reader { b: body, i: 0 };
        let msg = match kind {
            1 => Msg::Hello {
                va_bits: r.u32()?,
                page_size: r.u64()?,
                tlb_entries: r.u32()?,
            },
            2 => Msg::HelloAck {
                pid: r.u32()?,
                floor: r.u64()?,
                high: r.u64()?,
            },
            3 => Msg::Negotiate {
                attempt: r.u32()?,
                len: r.u64()?,
                align: r.u64()?,
                low: r.u64()?,
                high: r.u64()?,
                topdown: r.bool()?,
            },
            4 => {
                let attempt = r.u32()?;
                let last = r.bool()?;
                let n = r.u64()?;
                if n > VMAS_PER_PACKET as u64 || n * 24 != r.left() as u64 {
                    return bad(format!("vmas count {n} does not match the body"));
                }
                let mut ranges = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let (s, e, f) = (r.u64()?, r.u64()?, r.u64()?);
                    if s >= e || s % 4096 != 0 || e % 4096 != 0 || f > 1 {
                        return bad(format!("bad range [{s:#x}, {e:#x}) flags {f}"));
                    }
                    ranges.push((s, e, f));
                }
                Msg::Vmas {
                    attempt,
                    last,
                    ranges,
                }
            }
            5 => {
                let attempt = r.u32()?;
                let tag = r.u64()?;
                let outcome = match tag {
                    0 => Reserved::Ok(r.u64()?),
                    1 => Reserved::Busy(r.u64()?),
                    2 => match r.u64()? {
                        0 => Reserved::NoSpace,
                        v => return bad(format!("no-space outcome with value {v}")),
                    },
                    3 => {
                        let v = r.u64()?;
                        Reserved::Failed(
                            i32::try_from(v).map_err(|_| WireError(format!("errno {v}")))?,
                        )
                    }
                    4 => Reserved::AddressSpaceLimit {
                        len: r.u64()?,
                        vm_size: r.u64()?,
                        limit: r.u64()?,
                    },
                    5 => Reserved::MapCountLimit {
                        vmas: r.u64()?,
                        max_map_count: r.u64()?,
                    },
                    t => return bad(format!("reserve outcome {t}")),
                };
                Msg::Reserved { attempt, outcome }
            }
            6 => Msg::Commit {
                attempt: r.u32()?,
                addr: r.u64()?,
                len: r.u64()?,
            },
            7 => Msg::Abandon { attempt: r.u32()? },
            8 => Msg::Ack,
            9 => Msg::Map {
                addr: r.u64()?,
                len: r.u64()?,
                writable: r.bool()?,
            },
            10 => Msg::MapAck {
                addr: r.u64()?,
                id: r.u64()?,
            },
            11 => Msg::Unmap {
                seq: r.u64()?,
                addr: r.u64()?,
                len: r.u64()?,
            },
            12 => Msg::UnmapAck { seq: r.u64()? },
            13 => Msg::Walk {
                head: r.u64()?,
                max_nodes: r.u64()?,
            },
            14 => Msg::Sum {
                addr: r.u64()?,
                len: r.u64()?,
            },
            15 => Msg::Copy {
                dst: r.u64()?,
                src: r.u64()?,
                len: r.u64()?,
            },
            16 => Msg::Done {
                a: r.u64()?,
                b: r.u64()?,
            },
            17 => {
                let kind = r.u64()?;
                if kind > 2 {
                    return bad(format!("fault kind {kind}"));
                }
                Msg::Fault {
                    kind: kind as u8,
                    addr: r.u64()?,
                    write: r.bool()?,
                }
            }
            18 => Msg::WalkLimit { nodes: r.u64()? },
            19 => {
                let code = r.u32()?;
                let n = r.u64()?;
                if n > 4096 || n.next_multiple_of(8) != r.left() as u64 {
                    return bad(format!("error message length {n} does not match the body"));
                }
                let bytes = &r.b[r.i..r.i + n as usize];
                if r.b[r.i + n as usize..].iter().any(|&x| x != 0) {
                    return bad("error message padding is not zero");
                }
                r.i = r.b.len();
                let message = String::from_utf8(bytes.to_vec())
                    .map_err(|_| WireError("error message is not UTF-8".into()))?;
                Msg::Error { code, message }
            }
            20 => Msg::Stats,
            21 => {
                let mut words = [0u64; 9];
                for x in &mut words {
                    *x = r.u64()?;
                }
                Msg::StatsReply { words }
            }
            22 => Msg::Shutdown,
            23 => Msg::Direct,
            24 => Msg::Attach {
                addr: r.u64()?,
                len: r.u64()?,
            },
            25 => Msg::MapRange {
                addr: r.u64()?,
                len: r.u64()?,
                prot: r.prot()?,
            },
            26 => Msg::Invalidate {
                seq: r.u64()?,
                addr: r.u64()?,
                len: r.u64()?,
            },
            27 => Msg::UnmapRange {
                addr: r.u64()?,
                len: r.u64()?,
            },
            28 => Msg::Protect {
                addr: r.u64()?,
                len: r.u64()?,
                prot: r.prot()?,
            },
            29 => Msg::MapRegion {
                addr: r.u64()?,
                len: r.u64()?,
            },
            30 => {
                let seq = r.u64()?;
                let n = r.u64()?;
                if n == 0 || n > RANGES_PER_PACKET as u64 || n * 16 != r.left() as u64 {
                    return bad(format!("range count {n} does not match the body"));
                }
                let mut ranges = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    ranges.push((r.u64()?, r.u64()?));
                }
                Msg::InvalidateUnmap { seq, ranges }
            }
            31 => Msg::Maps,
            32 => {
                let last = r.bool()?;
                let n = r.u64()?;
                if n > VMAS_PER_PACKET as u64 || n * 24 != r.left() as u64 {
                    return bad(format!("maps count {n} does not match the body"));
                }
                let mut ranges = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let (s, e, f) = (r.u64()?, r.u64()?, r.u64()?);
                    if s >= e || s % 4096 != 0 || e % 4096 != 0 || f > 1 {
                        return bad(format!("bad range [{s:#x}, {e:#x}) flags {f}"));
                    }
                    ranges.push((s, e, f));
                }
                Msg::MapsReply { last, ranges }
            }
            33 => Msg::MigrateIn {
                addr: r.u64()?,
                len: r.u64()?,
            },
            34 => Msg::MigrateOut {
                addr: r.u64()?,
                len: r.u64()?,
                write_back: r.bool()?,
            },
            35 => Msg::Resident {
                addr: r.u64()?,
                len: r.u64()?,
                resident: r.bool()?,
            },
            k => return bad(format!("unknown message kind {k}")),
        };
        if r.left() != 0 {
            return bad(format!(
                "{} trailing bytes after a {} message",
                r.left(),
                msg.name()
            ));
        }
        Ok((id, msg))
    }
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.b.len() - self.i
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        if self.left() < 8 {
            return bad("message body too short");
        }
        let v = u64::from_le_bytes(self.b[self.i..self.i + 8].try_into().expect("8 bytes"));
        self.i += 8;
        Ok(v)
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let v = self.u64()?;
        u32::try_from(v).map_err(|_| WireError(format!("{v:#x} does not fit 32 bits")))
    }
    fn prot(&mut self) -> Result<u8, WireError> {
        match self.u64()? {
            v @ 0..=2 => Ok(v as u8),
            v => bad(format!("protection {v}")),
        }
    }
    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u64()? {
            0 => Ok(false),
            1 => Ok(true),
            v => bad(format!("{v} is not a boolean")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Msg> {
        vec![
            Msg::Hello {
                va_bits: 40,
                page_size: 4096,
                tlb_entries: 64,
            },
            Msg::HelloAck {
                pid: 7,
                floor: 0x10000,
                high: 1 << 40,
            },
            Msg::Negotiate {
                attempt: 1,
                len: 1 << 30,
                align: 1 << 21,
                low: 0x10000,
                high: 1 << 40,
                topdown: true,
            },
            Msg::Vmas {
                attempt: 2,
                last: true,
                ranges: vec![(0x1000, 0x3000, 0), (0x7000, 0x9000, 1)],
            },
            Msg::Reserved {
                attempt: 3,
                outcome: Reserved::Busy(0x5000),
            },
            Msg::Reserved {
                attempt: 3,
                outcome: Reserved::Failed(12),
            },
            Msg::Reserved {
                attempt: 1,
                outcome: Reserved::AddressSpaceLimit {
                    len: 1 << 34,
                    vm_size: 0x1234_5000,
                    limit: 1 << 32,
                },
            },
            Msg::Reserved {
                attempt: 2,
                outcome: Reserved::MapCountLimit {
                    vmas: 65_529,
                    max_map_count: 65_530,
                },
            },
            Msg::Commit {
                attempt: 1,
                addr: 0x4000,
                len: 0x1000,
            },
            Msg::Abandon { attempt: 1 },
            Msg::Ack,
            Msg::Map {
                addr: 0x4000,
                len: 0x2000,
                writable: false,
            },
            Msg::MapAck {
                addr: 0x4000,
                id: 3,
            },
            Msg::Unmap {
                seq: 9,
                addr: 0x4000,
                len: 0x2000,
            },
            Msg::UnmapAck { seq: 9 },
            Msg::Walk {
                head: 0x4000,
                max_nodes: u64::MAX,
            },
            Msg::Sum { addr: 8, len: 16 },
            Msg::Copy {
                dst: 1,
                src: 2,
                len: 3,
            },
            Msg::Done { a: 1, b: 2 },
            Msg::Fault {
                kind: 2,
                addr: 5,
                write: true,
            },
            Msg::WalkLimit { nodes: 4 },
            Msg::Error {
                code: code::BAD_RANGE,
                message: "no buffer at 0x4000".into(),
            },
            Msg::Stats,
            Msg::StatsReply { words: [1; 9] },
            Msg::Shutdown,
            Msg::Direct,
            Msg::Attach {
                addr: 0x10_0000,
                len: 0x20_0000,
            },
            Msg::MapRange {
                addr: 0x10_0000,
                len: 0x1000,
                prot: 2,
            },
            Msg::Invalidate {
                seq: 4,
                addr: 0x10_0000,
                len: 0x1000,
            },
            Msg::UnmapRange {
                addr: 0x10_0000,
                len: 0x1000,
            },
            Msg::Protect {
                addr: 0x10_0000,
                len: 0x1000,
                prot: 1,
            },
            Msg::MapRegion {
                addr: 0x40_0000,
                len: 0x2000,
            },
            Msg::InvalidateUnmap {
                seq: 5,
                ranges: vec![(0x10_0000, 0x1000), (0x20_0000, 0x3000)],
            },
            Msg::Maps,
            Msg::MapsReply {
                last: false,
                ranges: vec![(0x40_0000, 0x41_0000, 0), (0x7ff0_0000, 0x7ff1_0000, 1)],
            },
            Msg::MigrateIn {
                addr: 0x20_0000,
                len: 0x20_0000,
            },
            Msg::MigrateOut {
                addr: 0x20_0000,
                len: 0x1000,
                write_back: true,
            },
            Msg::Resident {
                addr: 0x20_0000,
                len: 0x2000,
                resident: false,
            },
        ]
    }

    #[test]
    fn round_trip() {
        for (i, m) in all().into_iter().enumerate() {
            let p = m.encode(i as u64);
            assert!(p.len() <= MAX_PACKET);
            assert_eq!(Msg::decode(&p), Ok((i as u64, m)));
        }
    }

    #[test]
    fn strict() {
        for m in all() {
            let p = m.encode(1);
            // Any truncation or extension by a word is an error.
            assert!(Msg::decode(&p[..p.len() - 1]).is_err());
            if p.len() > HEADER {
                assert!(Msg::decode(&p[..p.len() - 8]).is_err(), "{m:?}");
            }
            let mut q = p.clone();
            q.extend_from_slice(&[0; 8]);
            assert!(Msg::decode(&q).is_err(), "{m:?}");
        }
        let good = Msg::Ack.encode(0);
        for (i, v) in [(0, b'X'), (4, 9), (5, 0), (5, 200), (6, 1)] {
            let mut q = good.clone();
            q[i] = v;
            assert!(Msg::decode(&q).is_err());
        }
        assert!(Msg::decode(b"garbage").is_err());
        // A boolean that is 2, a Vmas count that lies.
        let mut q = Msg::Map {
            addr: 0,
            len: 0,
            writable: true,
        }
        .encode(0);
        q[HEADER + 16] = 2;
        assert!(Msg::decode(&q).is_err());
        let mut q = Msg::Vmas {
            attempt: 1,
            last: true,
            ranges: vec![(0x1000, 0x2000, 0)],
        }
        .encode(0);
        q[HEADER + 16] = 2;
        assert!(Msg::decode(&q).is_err());
        // A protection that is 3.
        let mut q = Msg::Protect {
            addr: 0,
            len: 0,
            prot: 2,
        }
        .encode(0);
        q[HEADER + 16] = 3;
        assert!(Msg::decode(&q).is_err());
        // A batch with no range, or more than a packet's worth.
        let empty = Msg::InvalidateUnmap {
            seq: 1,
            ranges: Vec::new(),
        }
        .encode(0);
        assert!(Msg::decode(&empty).is_err());
        let full = Msg::InvalidateUnmap {
            seq: 1,
            ranges: vec![(0x1000, 0x1000); RANGES_PER_PACKET],
        }
        .encode(0);
        assert!(full.len() <= MAX_PACKET);
        assert!(Msg::decode(&full).is_ok());
        let over = Msg::InvalidateUnmap {
            seq: 1,
            ranges: vec![(0x1000, 0x1000); RANGES_PER_PACKET + 1],
        }
        .encode(0);
        assert!(Msg::decode(&over).is_err());
        // A maps chunk with an unaligned range.
        let q = Msg::MapsReply {
            last: true,
            ranges: vec![(0x1000, 0x1800, 0)],
        }
        .encode(0);
        assert!(Msg::decode(&q).is_err());
    }
}
