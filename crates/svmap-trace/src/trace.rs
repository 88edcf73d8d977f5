//! The trace format (`docs/trace-format.md`): one JSON object per line, parsed into an
//! [`Entry`] (the operation and its optional `expect`).
//!
//! Parsing checks the whole *form* of a line, for every operation (the
//! address-space ones and the SVM ones): a line that parses is one that an
//! executor may run. What depends on state (a device name that was never
//! defined) is checked by the replay driver.
//!
//! Numbers (addresses and lengths) are a JSON string holding either a
//! decimal number (`"4096"`: ASCII digits only, no sign) or a hexadecimal
//! one with a lower-case `0x` prefix (`"0x1000"`; the hex digits may be of
//! either case, `"0X1000"` is rejected), or a plain JSON integer no larger
//! than 2^53. Anything that does not fit in 64 bits is a bad line.
//!
//! The line is read with a small borrowing JSON visitor (no `Value` tree,
//! no per-key allocation); duplicate keys are found with a hash set.
//!
//! # Bounds
//!
//! A line holds at most [`MAX_LINE_LEN`] bytes (without its newline); the
//! work of parsing one is linear in its length. A message about a bad
//! line quotes at most [`MAX_QUOTED`] bytes of any string it names.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use svmap_core::linux::{Errno, Fixed, Layout, MmConfig, MmapRequest, PAGE_SIZE};
use svmap_core::{UnmappedAreaInfo, VmaFlags};
use svmap_svm::MAX_DEVICE_PAGE_SIZE;

/// A bad line: what is wrong with it (without the `line N: ` prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine(pub String);

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Res<T> = Result<T, BadLine>;

fn bad<T>(msg: impl Into<String>) -> Res<T> {
    Err(BadLine(msg.into()))
}

/// The largest plain JSON integer a trace may hold for a number.
const MAX_JSON_INT: u64 = 1 << 53;

/// The longest line a trace may hold: 65,536 bytes, not counting the
/// newline that ends it. A longer line is a bad line.
pub const MAX_LINE_LEN: usize = 1 << 16;

/// The most bytes of a string value (a key, an op name, a device name, an
/// errno name...) that a bad-line message quotes; a longer one is cut
/// there and its length given.
pub const MAX_QUOTED: usize = 64;

/// One operation line: the operation and, if given, the result it expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The operation.
    pub op: Op,
    /// The `expect` field, only on operations that can have a result.
    pub expect: Option<Outcome>,
}

/// The kind of an operation: its `op` name and its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// `reset`
    Reset,
    /// `map`
    Map,
    /// `unmap`
    Unmap,
    /// `find`
    Find,
    /// `mmap`
    Mmap,
    /// `device`
    Device,
    /// `device_map`
    DeviceMap,
    /// `svm_alloc`
    SvmAlloc,
    /// `svm_free`
    SvmFree,
    /// `protect`
    Protect,
    /// `device_access`
    DeviceAccess,
}

impl OpKind {
    const ALL: [OpKind; 11] = [
        OpKind::Reset,
        OpKind::Map,
        OpKind::Unmap,
        OpKind::Find,
        OpKind::Mmap,
        OpKind::Device,
        OpKind::DeviceMap,
        OpKind::SvmAlloc,
        OpKind::SvmFree,
        OpKind::Protect,
        OpKind::DeviceAccess,
    ];

    /// The `op` string.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Reset => "reset",
            OpKind::Map => "map",
            OpKind::Unmap => "unmap",
            OpKind::Find => "find",
            OpKind::Mmap => "mmap",
            OpKind::Device => "device",
            OpKind::DeviceMap => "device_map",
            OpKind::SvmAlloc => "svm_alloc",
            OpKind::SvmFree => "svm_free",
            OpKind::Protect => "protect",
            OpKind::DeviceAccess => "device_access",
        }
    }

    fn from_name(s: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the operation can ever have a result (and so an `expect`).
    /// `map`, `device` and `device_map` have one only when they fail.
    pub fn has_result(self) -> bool {
        !matches!(self, OpKind::Reset | OpKind::Unmap)
    }

    /// The fields the operation accepts besides `op` and `expect`.
    fn fields(self) -> &'static [&'static str] {
        match self {
            OpKind::Reset => &[
                "task_size",
                "mmap_min_addr",
                "stack_guard_gap",
                "layout",
                "mmap_base",
                "page_size",
                "thp_align",
            ],
            OpKind::Map => &["start", "end", "flags"],
            OpKind::Unmap => &["start", "length"],
            OpKind::Find => &[
                "length",
                "low_limit",
                "high_limit",
                "align_mask",
                "align_offset",
                "start_gap",
                "topdown",
            ],
            OpKind::Mmap => &["length", "hint", "fixed", "growsdown", "map32bit"],
            OpKind::Device => &["name", "va_bits", "base", "page_size", "mirror"],
            OpKind::DeviceMap => &["device", "start", "end", "cpu"],
            OpKind::SvmAlloc => &["length", "align", "devices", "topdown"],
            OpKind::SvmFree => &["addr"],
            OpKind::Protect => &["start", "length", "prot"],
            OpKind::DeviceAccess => &["device", "addr", "write"],
        }
    }
}

/// A parsed operation. CPU address-space operations carry the core
/// library's own request types; the SVM ones are grouped in [`SvmOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Start an empty address space with these parameters.
    Reset(MmConfig),
    /// Insert the VMA `[start, end)` (both page aligned, `end > start`).
    Map {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// `growsdown` / `growsup`.
        flags: VmaFlags,
    },
    /// Remove whatever is mapped in `[start, start + length)` (page aligned,
    /// `length > 0`; may run past 2^64, which is clamped).
    Unmap {
        /// First byte.
        start: u64,
        /// Length in bytes.
        length: u64,
    },
    /// The kernel's `vm_unmapped_area()`.
    Find(UnmappedAreaInfo),
    /// An anonymous private `mmap()`.
    Mmap(MmapRequest),
    /// An operation of the SVM layer.
    Svm(SvmOp),
}

impl Op {
    /// The kind (and `op` name) of this operation.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Reset(_) => OpKind::Reset,
            Op::Map { .. } => OpKind::Map,
            Op::Unmap { .. } => OpKind::Unmap,
            Op::Find(_) => OpKind::Find,
            Op::Mmap(_) => OpKind::Mmap,
            Op::Svm(s) => s.kind(),
        }
    }

    /// The device names the operation refers to (each must have been
    /// defined by a `device` operation since the last `reset`). The name
    /// that a `device` operation defines is not a reference.
    pub fn device_refs(&self) -> &[String] {
        match self {
            Op::Svm(SvmOp::DeviceMap { device, .. } | SvmOp::DeviceAccess { device, .. }) => {
                std::slice::from_ref(device)
            }
            Op::Svm(SvmOp::SvmAlloc { devices, .. }) => devices,
            _ => &[],
        }
    }
}

/// What a CPU access does in a device-only region (`device_map`'s `cpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuAccess {
    /// `"fault"`: the access faults.
    Fault,
    /// `"dummy_page"`: the access reads a dummy page.
    DummyPage,
}

/// Which CPU mappings a device sees (`device`'s `mirror`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mirror {
    /// `"buffers"`: only the SVM ranges mapped to it.
    Buffers,
    /// `"system"`: every CPU mapping (except device-only reservations).
    System,
}

/// A page protection (`protect`'s `prot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// `"none"`
    None,
    /// `"r"`
    Read,
    /// `"rw"`
    ReadWrite,
}

/// The operations of the SVM layer, parsed and validated in form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SvmOp {
    /// Define a device address space.
    Device {
        /// Its name.
        name: String,
        /// Address bits, 12..=64.
        va_bits: u32,
        /// Lowest address for placement.
        base: u64,
        /// Page size: a power of two from 0x1000 to
        /// [`svmap_svm::MAX_DEVICE_PAGE_SIZE`], at most `2^va_bits`.
        page_size: u64,
        /// What it mirrors.
        mirror: Mirror,
    },
    /// A device-only region of a device.
    DeviceMap {
        /// The device (defined earlier).
        device: String,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// What a CPU access there does.
        cpu: CpuAccess,
    },
    /// Allocate an SVM range.
    SvmAlloc {
        /// Length in bytes.
        length: u64,
        /// Alignment (a power of two), if given.
        align: Option<u64>,
        /// The devices that see the range (defined earlier; may be empty).
        devices: Vec<String>,
        /// Highest fit (true) or lowest fit.
        topdown: bool,
    },
    /// Free an SVM range.
    SvmFree {
        /// The start `svm_alloc` returned.
        addr: u64,
    },
    /// `mprotect` on the CPU, propagated to the devices.
    Protect {
        /// First byte (page aligned).
        start: u64,
        /// Length (page aligned, > 0).
        length: u64,
        /// The new protection.
        prot: Prot,
    },
    /// A device touches one byte.
    DeviceAccess {
        /// The device (defined earlier).
        device: String,
        /// The address.
        addr: u64,
        /// A write (true) or a read.
        write: bool,
    },
}

impl SvmOp {
    /// The kind (and `op` name) of this operation.
    pub fn kind(&self) -> OpKind {
        match self {
            SvmOp::Device { .. } => OpKind::Device,
            SvmOp::DeviceMap { .. } => OpKind::DeviceMap,
            SvmOp::SvmAlloc { .. } => OpKind::SvmAlloc,
            SvmOp::SvmFree { .. } => OpKind::SvmFree,
            SvmOp::Protect { .. } => OpKind::Protect,
            SvmOp::DeviceAccess { .. } => OpKind::DeviceAccess,
        }
    }
}

/// A device fault (`device_access`'s `fault` result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `"unmapped"`
    Unmapped,
    /// `"protection"`
    Protection,
    /// `"out_of_range"`
    OutOfRange,
}

impl Fault {
    /// The trace name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Unmapped => "unmapped",
            Fault::Protection => "protection",
            Fault::OutOfRange => "out_of_range",
        }
    }
}

/// The result of an operation, or what an `expect` field expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `"addr": "0x..."`
    Addr(u64),
    /// `"err": "ENOMEM"`
    Err(Errno),
    /// `"ok": true`
    Ok,
    /// `"fault": "unmapped"`
    Fault(Fault),
}

impl fmt::Display for Outcome {
    /// The JSON member of the output line: `"addr": "0x1000"`. Addresses are
    /// minimal lower-case hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Addr(a) => write!(f, "\"addr\": \"{a:#x}\""),
            Outcome::Err(e) => write!(f, "\"err\": \"{e}\""),
            Outcome::Ok => f.write_str("\"ok\": true"),
            Outcome::Fault(k) => write!(f, "\"fault\": \"{}\"", k.name()),
        }
    }
}

/// Parses one non-blank, non-comment line (a trailing newline is ignored).
/// A line longer than [`MAX_LINE_LEN`] bytes is bad.
pub fn parse_line(line: &str) -> Res<Entry> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return Err(too_long());
    }
    let line = line.trim_end_matches(['\n', '\r']);
    let json: Json<'_> = serde_json::from_str(line).map_err(json_error)?;
    let Json::Object(members) = json else {
        return bad(format!(
            "a line must be a JSON object, not {}",
            json.type_name()
        ));
    };
    let obj = Obj {
        members: &members,
        what: "",
    };
    obj.check_duplicates()?;
    let kind = match obj.get("op") {
        None => return bad("missing field \"op\""),
        Some(Json::Str(s)) => match OpKind::from_name(s) {
            Some(k) => k,
            None => return bad(format!("unknown op {}", quote(s))),
        },
        Some(v) => {
            return bad(format!(
                "field \"op\" must be a string, not {}",
                v.type_name()
            ))
        }
    };
    let obj = Obj {
        members: &members,
        what: kind.name(),
    };
    for (key, _) in obj.members {
        if key != "op" && key != "expect" && !kind.fields().contains(&key.as_ref()) {
            return bad(format!(
                "unknown field {} for op \"{}\" (its fields: {})",
                quote(key),
                kind.name(),
                kind.fields().join(", ")
            ));
        }
    }
    let expect = match obj.get("expect") {
        None => None,
        Some(_) if !kind.has_result() => {
            return bad(format!(
                "op \"{}\" never has a result, so it cannot carry \"expect\"",
                kind.name()
            ))
        }
        Some(v) => Some(parse_expect(v)?),
    };
    let op = match kind {
        OpKind::Reset => parse_reset(&obj)?,
        OpKind::Map => {
            let start = obj.page_aligned("start")?;
            let end = obj.page_aligned("end")?;
            if end <= start {
                return bad(format!(
                    "map: \"end\" {end:#x} must be above \"start\" {start:#x}"
                ));
            }
            let flags = obj.enum_or(
                "flags",
                &[
                    ("growsdown", VmaFlags::GROWSDOWN),
                    ("growsup", VmaFlags::GROWSUP),
                ],
                VmaFlags::NONE,
            )?;
            Op::Map { start, end, flags }
        }
        OpKind::Unmap => {
            let (start, length) = obj.page_range()?;
            Op::Unmap { start, length }
        }
        OpKind::Find => Op::Find(UnmappedAreaInfo {
            topdown: obj.bool_or("topdown", false)?,
            length: obj.num("length")?,
            low_limit: obj.num("low_limit")?,
            high_limit: obj.num("high_limit")?,
            align_mask: obj.num_or("align_mask", 0)?,
            align_offset: obj.num_or("align_offset", 0)?,
            start_gap: obj.num_or("start_gap", 0)?,
        }),
        OpKind::Mmap => Op::Mmap(MmapRequest {
            length: obj.num("length")?,
            hint: obj.num_or("hint", 0)?,
            fixed: obj.enum_or(
                "fixed",
                &[
                    ("no", Fixed::No),
                    ("fixed", Fixed::Fixed),
                    ("noreplace", Fixed::NoReplace),
                ],
                Fixed::No,
            )?,
            growsdown: obj.bool_or("growsdown", false)?,
            map32bit: obj.bool_or("map32bit", false)?,
        }),
        OpKind::Device => Op::Svm(parse_device(&obj)?),
        OpKind::DeviceMap => Op::Svm(SvmOp::DeviceMap {
            device: obj.string("device")?.to_owned(),
            start: obj.num("start")?,
            end: obj.num("end")?,
            cpu: obj.enum_or(
                "cpu",
                &[
                    ("fault", CpuAccess::Fault),
                    ("dummy_page", CpuAccess::DummyPage),
                ],
                CpuAccess::Fault,
            )?,
        }),
        OpKind::SvmAlloc => {
            let align = match obj.get("align") {
                None => None,
                Some(_) => {
                    let a = obj.num("align")?;
                    if !a.is_power_of_two() {
                        return bad(format!("\"align\" {a:#x} is not a power of two"));
                    }
                    Some(a)
                }
            };
            Op::Svm(SvmOp::SvmAlloc {
                length: obj.num("length")?,
                align,
                devices: obj.string_list_or_empty("devices")?,
                topdown: obj.bool_or("topdown", true)?,
            })
        }
        OpKind::SvmFree => Op::Svm(SvmOp::SvmFree {
            addr: obj.num("addr")?,
        }),
        OpKind::Protect => {
            let (start, length) = obj.page_range()?;
            let prot = obj.enum_req(
                "prot",
                &[
                    ("none", Prot::None),
                    ("r", Prot::Read),
                    ("rw", Prot::ReadWrite),
                ],
            )?;
            Op::Svm(SvmOp::Protect {
                start,
                length,
                prot,
            })
        }
        OpKind::DeviceAccess => Op::Svm(SvmOp::DeviceAccess {
            device: obj.string("device")?.to_owned(),
            addr: obj.num("addr")?,
            write: obj.bool_req("write")?,
        }),
    };
    Ok(Entry { op, expect })
}

fn parse_reset(obj: &Obj<'_, '_>) -> Res<Op> {
    let d = MmConfig::default();
    let page_size = obj.num_or("page_size", PAGE_SIZE)?;
    if page_size != PAGE_SIZE {
        return bad(format!(
            "\"reset\" accepts only \"page_size\" {PAGE_SIZE:#x}, not {page_size:#x}"
        ));
    }
    Ok(Op::Reset(MmConfig {
        task_size: obj.num_or("task_size", d.task_size)?,
        mmap_min_addr: obj.num_or("mmap_min_addr", d.mmap_min_addr)?,
        stack_guard_gap: obj.num_or("stack_guard_gap", d.stack_guard_gap)?,
        layout: obj.enum_or(
            "layout",
            &[("topdown", Layout::TopDown), ("legacy", Layout::Legacy)],
            d.layout,
        )?,
        mmap_base: obj.num_or("mmap_base", d.mmap_base)?,
        thp_align: obj.bool_or("thp_align", d.thp_align)?,
    }))
}

fn parse_device(obj: &Obj<'_, '_>) -> Res<SvmOp> {
    let name = obj.string("name")?.to_owned();
    let va_bits = match obj.get("va_bits") {
        None => return bad("op \"device\" needs field \"va_bits\""),
        Some(Json::Int(n)) if (12..=64).contains(n) => *n as u32,
        Some(Json::Int(n)) => return bad(format!("\"va_bits\" {n} is outside 12..=64")),
        Some(Json::Neg(n)) => return bad(format!("\"va_bits\" {n} is outside 12..=64")),
        Some(Json::Float(x)) => return bad(format!("\"va_bits\" {x:?} is not an integer")),
        Some(v) => {
            return bad(format!(
                "field \"va_bits\" must be a plain JSON integer, not {}",
                v.type_name()
            ))
        }
    };
    let page_size = obj.num_or("page_size", PAGE_SIZE)?;
    if !page_size.is_power_of_two() || !(PAGE_SIZE..=MAX_DEVICE_PAGE_SIZE).contains(&page_size) {
        return bad(format!(
            "device \"page_size\" {page_size:#x} must be a power of two from {PAGE_SIZE:#x} to {MAX_DEVICE_PAGE_SIZE:#x}"
        ));
    }
    if u128::from(page_size) > 1u128 << va_bits {
        return bad(format!(
            "device \"page_size\" {page_size:#x} is larger than the whole address space (\"va_bits\" {va_bits})"
        ));
    }
    Ok(SvmOp::Device {
        name,
        va_bits,
        base: obj.num_or("base", 0)?,
        page_size,
        mirror: obj.enum_or(
            "mirror",
            &[("buffers", Mirror::Buffers), ("system", Mirror::System)],
            Mirror::Buffers,
        )?,
    })
}

fn parse_expect(v: &Json<'_>) -> Res<Outcome> {
    let Json::Object(members) = v else {
        return bad(format!(
            "field \"expect\" must be an object, not {}",
            v.type_name()
        ));
    };
    let obj = Obj {
        members,
        what: "expect",
    };
    obj.check_duplicates()?;
    let [(key, value)] = members.as_slice() else {
        return bad(format!(
            "\"expect\" must hold exactly one of \"addr\", \"err\", \"ok\", \"fault\" (it has {} fields)",
            members.len()
        ));
    };
    match key.as_ref() {
        "addr" => Ok(Outcome::Addr(obj.num("addr")?)),
        "err" => match value {
            Json::Str(s) => match errno_from_name(s) {
                Some(e) => Ok(Outcome::Err(e)),
                None => bad(format!(
                    "\"expect\": \"err\" {} is not an errno name like \"ENOMEM\"",
                    quote(s)
                )),
            },
            v => bad(format!(
                "\"expect\": \"err\" must be a string, not {}",
                v.type_name()
            )),
        },
        "ok" => match value {
            Json::Bool(true) => Ok(Outcome::Ok),
            v => bad(format!(
                "\"expect\": \"ok\" can only be true, not {}",
                v.describe()
            )),
        },
        "fault" => Ok(Outcome::Fault(obj.enum_req(
            "fault",
            &[
                ("unmapped", Fault::Unmapped),
                ("protection", Fault::Protection),
                ("out_of_range", Fault::OutOfRange),
            ],
        )?)),
        other => bad(format!(
            "unknown field {} in \"expect\" (one of \"addr\", \"err\", \"ok\", \"fault\")",
            quote(other)
        )),
    }
}

/// The errno `s` names, exactly as results print it: a name such as
/// `ENOMEM`, or `E` and the decimal number (no sign, no leading zero) of
/// an errno that has no name. Anything else (`"E+12"`, `"E012"`, `"E12"`
/// for the errno that is `ENOMEM`) is `None`.
fn errno_from_name(s: &str) -> Option<Errno> {
    Errno::from_name(s).filter(|e| e.name().to_string() == s)
}

/// The bad line of a line longer than [`MAX_LINE_LEN`].
pub(crate) fn too_long() -> BadLine {
    BadLine(format!(
        "the line is longer than {MAX_LINE_LEN} bytes, the longest a trace line may be"
    ))
}

/// `s` as a JSON string literal, for messages: at most [`MAX_QUOTED`]
/// bytes of it (cut at a character boundary), then `...` and its length.
pub(crate) fn quote(s: &str) -> String {
    let json = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
    if s.len() <= MAX_QUOTED {
        return json(s);
    }
    let mut cut = MAX_QUOTED;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} bytes)", json(&s[..cut]), s.len())
}

/// The message of a JSON syntax error, with the position as a column (the
/// trace line number is added by the caller).
fn json_error(e: serde_json::Error) -> BadLine {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = msg.strip_suffix(&suffix).unwrap_or(&msg);
    if e.is_eof() {
        BadLine(format!("invalid JSON: {msg} (the line ends early)"))
    } else {
        BadLine(format!("invalid JSON at column {}: {msg}", e.column()))
    }
}

/// Parses a number string: decimal digits, or `0x` and hex digits.
fn parse_num_str(s: &str) -> Option<Result<u64, ()>> {
    let (digits, radix) = match s.strip_prefix("0x") {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    let mut overflow = false;
    for c in digits.chars() {
        let d = c.to_digit(radix)?;
        match v
            .checked_mul(radix as u64)
            .and_then(|x| x.checked_add(d as u64))
        {
            Some(x) => v = x,
            None => overflow = true,
        }
    }
    Some(if overflow { Err(()) } else { Ok(v) })
}

/// The members of a JSON object, looked up by key. `what` names the op (or
/// `expect`) in messages.
struct Obj<'o, 'a> {
    members: &'o [(Cow<'a, str>, Json<'a>)],
    what: &'static str,
}

impl<'o, 'a> Obj<'o, 'a> {
    fn get(&self, key: &str) -> Option<&'o Json<'a>> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Rejects a key that appears twice: expected O(n) for n keys.
    fn check_duplicates(&self) -> Res<()> {
        if self.members.len() < 2 {
            return Ok(());
        }
        let mut seen: HashSet<&str> = HashSet::with_capacity(self.members.len());
        for (k, _) in self.members {
            if !seen.insert(k) {
                return bad(format!("field {} appears twice", quote(k)));
            }
        }
        Ok(())
    }

    fn required(&self, key: &str) -> Res<&'o Json<'a>> {
        match self.get(key) {
            Some(v) => Ok(v),
            None => bad(format!("op \"{}\" needs field \"{key}\"", self.what)),
        }
    }

    /// A required number.
    fn num(&self, key: &str) -> Res<u64> {
        match self.required(key)? {
            Json::Int(n) if *n <= MAX_JSON_INT => Ok(*n),
            Json::Int(n) => bad(format!(
                "field \"{key}\": the JSON integer {n} is above 2^53; write it as a string"
            )),
            Json::Neg(n) => bad(format!("field \"{key}\": {n} is negative")),
            Json::Float(x) => bad(format!(
                "field \"{key}\": the JSON number {x:?} is not an integer in 0..=2^53"
            )),
            Json::Str(s) => match parse_num_str(s) {
                Some(Ok(n)) => Ok(n),
                Some(Err(())) => bad(format!(
                    "field \"{key}\": {} does not fit in 64 bits",
                    quote(s)
                )),
                None => bad(format!(
                    "field \"{key}\": {} is not a number (decimal, or hex with 0x)",
                    quote(s)
                )),
            },
            v => bad(format!(
                "field \"{key}\" must be a number (a string \"0x1000\" or \"4096\", or a JSON integer), not {}",
                v.type_name()
            )),
        }
    }

    fn num_or(&self, key: &str, default: u64) -> Res<u64> {
        match self.get(key) {
            None => Ok(default),
            Some(_) => self.num(key),
        }
    }

    fn page_aligned(&self, key: &str) -> Res<u64> {
        let v = self.num(key)?;
        if v % PAGE_SIZE != 0 {
            return bad(format!(
                "{}: \"{key}\" {v:#x} is not page aligned ({PAGE_SIZE:#x})",
                self.what
            ));
        }
        Ok(v)
    }

    /// `start` and `length` of `unmap` and `protect`: an aligned start and
    /// a non-zero aligned length.
    fn page_range(&self) -> Res<(u64, u64)> {
        let start = self.page_aligned("start")?;
        let length = self.page_aligned("length")?;
        if length == 0 {
            return bad(format!("{}: \"length\" is 0", self.what));
        }
        Ok((start, length))
    }

    fn bool_req(&self, key: &str) -> Res<bool> {
        match self.required(key)? {
            Json::Bool(b) => Ok(*b),
            v => bad(format!(
                "field \"{key}\" must be true or false, not {}",
                v.type_name()
            )),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Res<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(_) => self.bool_req(key),
        }
    }

    fn string(&self, key: &str) -> Res<&'o str> {
        match self.required(key)? {
            Json::Str(s) => Ok(s),
            v => bad(format!(
                "field \"{key}\" must be a string, not {}",
                v.type_name()
            )),
        }
    }

    fn enum_req<T: Copy>(&self, key: &str, values: &[(&str, T)]) -> Res<T> {
        let s = match self.required(key)? {
            Json::Str(s) => s,
            v => {
                return bad(format!(
                    "field \"{key}\" must be a string, not {}",
                    v.type_name()
                ))
            }
        };
        match values.iter().find(|(name, _)| name == s) {
            Some((_, v)) => Ok(*v),
            None => {
                let names: Vec<String> = values.iter().map(|(n, _)| quote(n)).collect();
                bad(format!(
                    "field \"{key}\" must be one of {}, not {}",
                    names.join(", "),
                    quote(s)
                ))
            }
        }
    }

    fn enum_or<T: Copy>(&self, key: &str, values: &[(&str, T)], default: T) -> Res<T> {
        match self.get(key) {
            None => Ok(default),
            Some(_) => self.enum_req(key, values),
        }
    }

    fn string_list_or_empty(&self, key: &str) -> Res<Vec<String>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Json::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Json::Str(s) => Ok(s.clone().into_owned()),
                    v => bad(format!(
                        "field \"{key}\" must be a list of strings, but holds {}",
                        v.type_name()
                    )),
                })
                .collect(),
            Some(v) => bad(format!(
                "field \"{key}\" must be a list of strings, not {}",
                v.type_name()
            )),
        }
    }
}

/// A JSON value that borrows its strings from the line where it can.
/// Numbers keep what the checks need: non-negative integers exactly,
/// negative integers and everything else (fractions, exponents, integers
/// beyond 64 bits) as given by `serde_json`.
#[derive(Debug)]
enum Json<'a> {
    Null,
    Bool(bool),
    Int(u64),
    Neg(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl Json<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Int(_) | Json::Neg(_) | Json::Float(_) => "a number",
            Json::Str(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// The value for a message: the literal for scalars, the type otherwise.
    fn describe(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => b.to_string(),
            Json::Int(n) => n.to_string(),
            Json::Neg(n) => n.to_string(),
            Json::Float(x) => x.to_string(),
            Json::Str(s) => quote(s),
            v => v.type_name().into(),
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Json::Int(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v < 0 {
            Json::Neg(v)
        } else {
            Json::Int(v as u64)
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Json::Float(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(8);
        while let Some(key) = map.next_key::<Json<'de>>()? {
            let Json::Str(key) = key else {
                return Err(de::Error::custom("object keys must be strings"));
            };
            members.push((key, map.next_value()?));
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_num_str("0x1000"), Some(Ok(0x1000)));
        assert_eq!(parse_num_str("0xAbC"), Some(Ok(0xabc)));
        assert_eq!(parse_num_str("4096"), Some(Ok(4096)));
        assert_eq!(parse_num_str("0"), Some(Ok(0)));
        assert_eq!(parse_num_str("0xffffffffffffffff"), Some(Ok(u64::MAX)));
        assert_eq!(parse_num_str("0x00000000000000000001"), Some(Ok(1)));
        assert_eq!(parse_num_str("0x10000000000000000"), Some(Err(())));
        assert_eq!(parse_num_str("18446744073709551616"), Some(Err(())));
        for s in [
            "", "0x", "0X10", "+1", "-1", " 1", "1 ", "0x+1", "1e3", "0b1",
        ] {
            assert_eq!(parse_num_str(s), None, "{s:?}");
        }
    }

    #[test]
    fn line_forms() {
        let e =
            parse_line(r#"{"op": "map", "start": 4096, "end": "0x2000", "flags": "growsdown"}"#)
                .unwrap();
        assert_eq!(
            e.op,
            Op::Map {
                start: 0x1000,
                end: 0x2000,
                flags: VmaFlags::GROWSDOWN
            }
        );
        let e = parse_line(r#"{"op": "find", "length": "1", "low_limit": "0", "high_limit": "0x10", "expect": {"err": "ENOMEM"}}"#).unwrap();
        assert_eq!(e.expect, Some(Outcome::Err(Errno::ENOMEM)));
        assert_eq!(
            parse_line(r#"{"op": "reset"}"#).unwrap().op,
            Op::Reset(MmConfig::default())
        );
        // Escaped keys and values are owned, not borrowed, and still work.
        let e =
            parse_line(r#"{"op": "m\u0061p", "st\u0061rt": "0x1000", "end": "0x2000"}"#).unwrap();
        assert_eq!(e.op.kind(), OpKind::Map);
    }
}
