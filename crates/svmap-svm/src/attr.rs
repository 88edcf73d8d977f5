//! Attributes of SVM ranges: where the data of a range should live and how
//! each device may reach it (`docs/attributes.md`).
//!
//! An [`AttrMap`] holds the attributes of parts of SVM ranges, page by page
//! in effect: [`AttrMap::set`] over part of a stored range splits it so
//! that only that part changes, and [`AttrMap::get`] over a range answers
//! the intersection of what its pages hold ([`RangeAttrs::meet`]). Pages
//! nobody set hold [`RangeAttrs::default`]. The map is pure bookkeeping;
//! [`crate::Engine::set_attr`] checks that the range is SVM memory the
//! space knows and drops the attributes of a range when it is freed.
//!
//! The raw form ([`Attr::from_raw`], [`RangeAttrs::query`]) is the C ABI's:
//! a list of `(type, value)` pairs.

use core::fmt;

use crate::interval::IntervalMap;
use crate::space::MAX_DEVICES;

/// The smallest migration granularity exponent: `2^0` pages = 4 KiB.
pub const GRANULARITY_MIN: u8 = 0;
/// The largest migration granularity exponent: `2^9` pages = 2 MiB.
pub const GRANULARITY_MAX: u8 = 9;
/// The default migration granularity exponent (2 MiB).
pub const GRANULARITY_DEFAULT: u8 = GRANULARITY_MAX;
/// The page size attributes are kept at.
pub const ATTR_PAGE: u64 = 0x1000;

/// Raw attribute types (the C ABI's `SVMAP_ATTR_*`).
pub mod raw {
    /// Preferred location; value: a location code.
    pub const PREFERRED_LOCATION: u32 = 1;
    /// Prefetch location; value: a location code.
    pub const PREFETCH_LOCATION: u32 = 2;
    /// Access of one device; value: `device << 32 | access`.
    pub const ACCESS: u32 = 3;
    /// Flags to set; value: flag bits.
    pub const SET_FLAGS: u32 = 4;
    /// Flags to clear; value: flag bits.
    pub const CLEAR_FLAGS: u32 = 5;
    /// Migration granularity; value: the exponent `k` of `2^k` pages.
    pub const GRANULARITY: u32 = 6;
    /// Location code of system memory.
    pub const LOCATION_SYSTEM: u64 = 0;
    /// Location code "undefined" (no preference, or locations that differ).
    pub const LOCATION_UNDEFINED: u64 = 0xffff_ffff;
    /// Access code: the device may not touch the range.
    pub const ACCESS_NONE: u64 = 0;
    /// Access code: the device reaches the data where it is.
    pub const ACCESS_IN_PLACE: u64 = 1;
    /// Access code: the device's accesses may migrate the data.
    pub const ACCESS_MAY_MIGRATE: u64 = 2;
}

/// A place where the data of a page can live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// System memory, mapped by the CPU.
    System,
    /// The memory of the device with this index (definition order).
    Device(u32),
}

impl Location {
    /// The raw location code of `loc` (`None` = undefined).
    pub fn to_raw(loc: Option<Location>) -> u64 {
        match loc {
            None => raw::LOCATION_UNDEFINED,
            Some(Location::System) => raw::LOCATION_SYSTEM,
            Some(Location::Device(d)) => u64::from(d) + 1,
        }
    }

    /// Decodes a raw location code; device codes are checked later against
    /// the devices of the space.
    fn from_raw(ty: u32, value: u64) -> Result<Option<Location>, AttrError> {
        match value {
            raw::LOCATION_UNDEFINED => Ok(None),
            raw::LOCATION_SYSTEM => Ok(Some(Location::System)),
            v if v <= MAX_DEVICES as u64 => Ok(Some(Location::Device((v - 1) as u32))),
            _ => Err(AttrError::BadValue { ty, value }),
        }
    }
}

/// How one device may reach a range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Access {
    /// Not at all: an access faults.
    None,
    /// Where the data is; a device access never moves it.
    InPlace,
    /// Device accesses may migrate the data to the device (when the
    /// preferred location is that device). The default.
    #[default]
    MayMigrate,
}

impl Access {
    fn from_raw(ty: u32, value: u64, code: u64) -> Result<Access, AttrError> {
        match code {
            raw::ACCESS_NONE => Ok(Access::None),
            raw::ACCESS_IN_PLACE => Ok(Access::InPlace),
            raw::ACCESS_MAY_MIGRATE => Ok(Access::MayMigrate),
            _ => Err(AttrError::BadValue { ty, value }),
        }
    }

    fn to_raw(self) -> u64 {
        match self {
            Access::None => raw::ACCESS_NONE,
            Access::InPlace => raw::ACCESS_IN_PLACE,
            Access::MayMigrate => raw::ACCESS_MAY_MIGRATE,
        }
    }
}

/// Flags of a range (a set of bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(u32);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// Devices may only read the range.
    pub const DEVICE_READ_ONLY: Flags = Flags(1);
    /// Mostly read: devices may hold read-only copies, and a write
    /// anywhere drops every other copy first.
    pub const READ_MOSTLY: Flags = Flags(2);
    /// Devices keep the range mapped wherever the data is (no fault on
    /// first touch).
    pub const ALWAYS_MAPPED: Flags = Flags(4);
    /// Every known flag.
    pub const ALL: Flags = Flags(7);

    /// The flags of `bits`, or `None` if a bit is unknown.
    pub fn from_bits(bits: u32) -> Option<Flags> {
        (bits & !Flags::ALL.0 == 0).then_some(Flags(bits))
    }

    /// The bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set here.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, o: Flags) -> Flags {
        Flags(self.0 | o.0)
    }
}

/// One attribute change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attr {
    /// Where the data should live (`None`: no preference).
    PreferredLocation(Option<Location>),
    /// Where the data should be moved now (`None`: nowhere).
    PrefetchLocation(Option<Location>),
    /// How device `device` may reach the range.
    Access {
        /// Device index.
        device: u32,
        /// Its access.
        access: Access,
    },
    /// Sets these flags.
    SetFlags(Flags),
    /// Clears these flags.
    ClearFlags(Flags),
    /// Migration granularity: `2^k` pages, `k` in
    /// [`GRANULARITY_MIN`]..=[`GRANULARITY_MAX`].
    Granularity(u8),
}

impl Attr {
    /// Decodes a raw `(type, value)` pair. Unknown types and values out of
    /// range are errors; device indices are checked by
    /// [`crate::Engine::set_attr`] against the space.
    pub fn from_raw(ty: u32, value: u64) -> Result<Attr, AttrError> {
        let bad = AttrError::BadValue { ty, value };
        match ty {
            raw::PREFERRED_LOCATION => Ok(Attr::PreferredLocation(Location::from_raw(ty, value)?)),
            raw::PREFETCH_LOCATION => Ok(Attr::PrefetchLocation(Location::from_raw(ty, value)?)),
            raw::ACCESS => {
                let device = (value >> 32) as u32;
                let access = Access::from_raw(ty, value, value & 0xffff_ffff)?;
                Ok(Attr::Access { device, access })
            }
            raw::SET_FLAGS | raw::CLEAR_FLAGS => {
                let f = u32::try_from(value)
                    .ok()
                    .and_then(Flags::from_bits)
                    .ok_or(bad)?;
                Ok(if ty == raw::SET_FLAGS {
                    Attr::SetFlags(f)
                } else {
                    Attr::ClearFlags(f)
                })
            }
            raw::GRANULARITY => match u8::try_from(value) {
                Ok(k) if (GRANULARITY_MIN..=GRANULARITY_MAX).contains(&k) => {
                    Ok(Attr::Granularity(k))
                }
                _ => Err(bad),
            },
            _ => Err(AttrError::UnknownType { ty }),
        }
    }

    /// The raw `(type, value)` pair of this change.
    pub fn to_raw(self) -> (u32, u64) {
        match self {
            Attr::PreferredLocation(l) => (raw::PREFERRED_LOCATION, Location::to_raw(l)),
            Attr::PrefetchLocation(l) => (raw::PREFETCH_LOCATION, Location::to_raw(l)),
            Attr::Access { device, access } => {
                (raw::ACCESS, u64::from(device) << 32 | access.to_raw())
            }
            Attr::SetFlags(f) => (raw::SET_FLAGS, u64::from(f.0)),
            Attr::ClearFlags(f) => (raw::CLEAR_FLAGS, u64::from(f.0)),
            Attr::Granularity(k) => (raw::GRANULARITY, u64::from(k)),
        }
    }

    /// Checks the value against the space's `devices` (a device index must
    /// name one; a granularity must be in range).
    pub fn check(&self, devices: usize) -> Result<(), AttrError> {
        let dev_ok = |d: u32| {
            if (d as usize) < devices {
                Ok(())
            } else {
                Err(AttrError::UnknownDevice { device: d })
            }
        };
        match *self {
            Attr::PreferredLocation(Some(Location::Device(d)))
            | Attr::PrefetchLocation(Some(Location::Device(d)))
            | Attr::Access { device: d, .. } => dev_ok(d),
            Attr::Granularity(k) if !(GRANULARITY_MIN..=GRANULARITY_MAX).contains(&k) => {
                let (ty, value) = self.to_raw();
                Err(AttrError::BadValue { ty, value })
            }
            _ => Ok(()),
        }
    }
}

/// The attributes of a range (of every page of it, or, from
/// [`AttrMap::get`], what all its pages have in common).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RangeAttrs {
    /// Preferred location; `None`: no preference, or (from a get) pages
    /// that differ.
    pub preferred: Option<Location>,
    /// Prefetch location; `None` as for `preferred`.
    pub prefetch: Option<Location>,
    /// Access of each device by index (entries past the space's devices
    /// hold the default).
    pub access: [Access; MAX_DEVICES],
    /// Flags (from a get: set on every page).
    pub flags: Flags,
    /// Migration granularity exponent (from a get: the smallest).
    pub granularity: u8,
}

impl Default for RangeAttrs {
    fn default() -> Self {
        RangeAttrs {
            preferred: None,
            prefetch: None,
            access: [Access::default(); MAX_DEVICES],
            flags: Flags::NONE,
            granularity: GRANULARITY_DEFAULT,
        }
    }
}

impl RangeAttrs {
    /// Applies one change.
    pub fn apply(&mut self, a: &Attr) {
        match *a {
            Attr::PreferredLocation(l) => self.preferred = l,
            Attr::PrefetchLocation(l) => self.prefetch = l,
            Attr::Access { device, access } => {
                if let Some(x) = self.access.get_mut(device as usize) {
                    *x = access;
                }
            }
            Attr::SetFlags(f) => self.flags.0 |= f.0,
            Attr::ClearFlags(f) => self.flags.0 &= !f.0,
            Attr::Granularity(k) => self.granularity = k,
        }
    }

    /// What `self` and `o` have in common: a location that differs is
    /// undefined (`None`), an access that differs is [`Access::None`],
    /// flags are those set in both, the granularity is the smaller.
    pub fn meet(&self, o: &RangeAttrs) -> RangeAttrs {
        let loc = |a: Option<Location>, b: Option<Location>| if a == b { a } else { None };
        let mut access = self.access;
        for (x, y) in access.iter_mut().zip(o.access.iter()) {
            if x != y {
                *x = Access::None;
            }
        }
        RangeAttrs {
            preferred: loc(self.preferred, o.preferred),
            prefetch: loc(self.prefetch, o.prefetch),
            access,
            flags: Flags(self.flags.0 & o.flags.0),
            granularity: self.granularity.min(o.granularity),
        }
    }

    /// These attributes once device `d` is removed: its access entry goes
    /// and the entries above it move down one index (the last one holds
    /// the default); a location naming `d` becomes undefined; a location
    /// naming a device above `d` names it by its new index.
    pub fn without_device(&self, d: usize) -> RangeAttrs {
        let loc = |l: Option<Location>| match l {
            Some(Location::Device(x)) if x as usize == d => None,
            Some(Location::Device(x)) if x as usize > d => Some(Location::Device(x - 1)),
            other => other,
        };
        let mut access = self.access;
        if d < MAX_DEVICES {
            access.copy_within(d + 1.., d);
            access[MAX_DEVICES - 1] = Access::default();
        }
        RangeAttrs {
            preferred: loc(self.preferred),
            prefetch: loc(self.prefetch),
            access,
            ..*self
        }
    }

    /// Migration granularity in bytes.
    pub fn granule_bytes(&self) -> u64 {
        ATTR_PAGE << self.granularity
    }

    /// The raw value of attribute type `ty` ([`raw`]). For
    /// [`raw::ACCESS`], `value` names the device in its upper 32 bits and
    /// the answer keeps them. [`raw::SET_FLAGS`] answers the flags set;
    /// [`raw::CLEAR_FLAGS`] the known flags not set.
    pub fn query(&self, ty: u32, value: u64, devices: usize) -> Result<u64, AttrError> {
        match ty {
            raw::PREFERRED_LOCATION => Ok(Location::to_raw(self.preferred)),
            raw::PREFETCH_LOCATION => Ok(Location::to_raw(self.prefetch)),
            raw::ACCESS => {
                let d = (value >> 32) as u32;
                if d as usize >= devices {
                    return Err(AttrError::UnknownDevice { device: d });
                }
                Ok(u64::from(d) << 32 | self.access[d as usize].to_raw())
            }
            raw::SET_FLAGS => Ok(u64::from(self.flags.0)),
            raw::CLEAR_FLAGS => Ok(u64::from(Flags::ALL.0 & !self.flags.0)),
            raw::GRANULARITY => Ok(u64::from(self.granularity)),
            _ => Err(AttrError::UnknownType { ty }),
        }
    }
}

/// Why an attribute call failed. Nothing changed when one is returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrError {
    /// The attribute type is not one of [`raw`]'s.
    UnknownType {
        /// The type given.
        ty: u32,
    },
    /// The value is out of range for its type.
    BadValue {
        /// The type.
        ty: u32,
        /// The value given.
        value: u64,
    },
    /// The device index names no device of the space.
    UnknownDevice {
        /// The index given.
        device: u32,
    },
    /// The range is empty, wraps, or is not aligned to 4 KiB.
    BadRange {
        /// Start.
        start: u64,
        /// Length.
        len: u64,
    },
    /// Part of the range is not SVM memory the space knows.
    NotSvm {
        /// The first address that is not.
        addr: u64,
    },
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrError::UnknownType { ty } => write!(f, "unknown attribute type {ty}"),
            AttrError::BadValue { ty, value } => {
                write!(
                    f,
                    "value {value:#x} is out of range for attribute type {ty}"
                )
            }
            AttrError::UnknownDevice { device } => write!(f, "no device with index {device}"),
            AttrError::BadRange { start, len } => write!(
                f,
                "range at {start:#x} of length {len:#x} is empty, wraps or is not 4 KiB aligned"
            ),
            AttrError::NotSvm { addr } => write!(f, "{addr:#x} is not in an SVM range"),
        }
    }
}

impl std::error::Error for AttrError {}

/// Checks `[start, start + len)`: non-empty, 4 KiB aligned, no wrap.
/// Returns the end.
pub fn check_range(start: u64, len: u64) -> Result<u64, AttrError> {
    let bad = AttrError::BadRange { start, len };
    let end = start.checked_add(len).ok_or(bad.clone())?;
    if len == 0 || !start.is_multiple_of(ATTR_PAGE) || !len.is_multiple_of(ATTR_PAGE) {
        return Err(bad);
    }
    Ok(end)
}

/// Attributes by range: pages not covered hold [`RangeAttrs::default`].
/// Neighbouring ranges with equal attributes are merged.
#[derive(Clone, Debug, Default)]
pub struct AttrMap {
    m: IntervalMap<RangeAttrs>,
}

impl AttrMap {
    /// An empty map (every page default).
    pub fn new() -> Self {
        AttrMap::default()
    }

    /// Number of stored ranges.
    pub fn len(&self) -> usize {
        self.m.len()
    }

    /// True if nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// The stored ranges in order (gaps between them are default).
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &RangeAttrs)> + '_ {
        self.m.iter()
    }

    /// The attributes of the page at `addr`.
    pub fn at(&self, addr: u64) -> RangeAttrs {
        self.m.get(addr).map(|(_, _, a)| *a).unwrap_or_default()
    }

    /// The pieces of `[start, end)` with their attributes, in order,
    /// gaps as default.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<(u64, u64, RangeAttrs)> {
        let mut out = Vec::new();
        let mut at = start;
        for (s, e, a) in self.m.range(start, end) {
            let (s, e) = (s.max(start), e.min(end));
            if at < s {
                out.push((at, s, RangeAttrs::default()));
            }
            out.push((s, e, *a));
            at = e;
        }
        if at < end {
            out.push((at, end, RangeAttrs::default()));
        }
        out
    }

    /// Applies `changes` (in order) to every page of `[start, end)`; the
    /// rest keeps its attributes. The caller checked the range and values.
    pub fn set(&mut self, start: u64, end: u64, changes: &[Attr]) {
        if start >= end {
            return;
        }
        let pieces = self.pieces(start, end);
        self.m.remove_range(start, end);
        let mut last: Option<(u64, u64, RangeAttrs)> = None;
        for (s, e, mut a) in pieces {
            for c in changes {
                a.apply(c);
            }
            match &mut last {
                Some((_, le, la)) if *le == s && *la == a => *le = e,
                _ => {
                    if let Some((ls, le, la)) = last.take() {
                        self.m.insert(ls, le, la);
                    }
                    last = Some((s, e, a));
                }
            }
        }
        if let Some((ls, le, la)) = last {
            self.m.insert(ls, le, la);
        }
        self.merge_at(start);
        self.merge_at(end);
    }

    /// Joins the ranges on both sides of `at` if they touch there and are
    /// equal.
    fn merge_at(&mut self, at: u64) {
        let left = at
            .checked_sub(1)
            .and_then(|a| self.m.get(a))
            .filter(|&(_, e, _)| e == at)
            .map(|(s, e, v)| (s, e, *v));
        let right = self.m.get(at).map(|(s, e, v)| (s, e, *v));
        if let (Some((ls, _, lv)), Some((rs, re, rv))) = (left, right) {
            if rs == at && lv == rv {
                self.m.remove_range(ls, re);
                self.m.insert(ls, re, lv);
            }
        }
    }

    /// What every page of `[start, end)` has in common
    /// ([`RangeAttrs::meet`]); the default for an empty range.
    pub fn get(&self, start: u64, end: u64) -> RangeAttrs {
        let mut it = self.pieces(start, end).into_iter().map(|(_, _, a)| a);
        let first = it.next().unwrap_or_default();
        it.fold(first, |acc, a| acc.meet(&a))
    }

    /// Drops the attributes of `[start, end)` (it reads default again).
    #[inline]
    pub fn remove(&mut self, start: u64, end: u64) {
        // Most spaces never set an attribute: no call then.
        if !self.m.is_empty() {
            self.m.remove_range_each(start, end, |_, _, _| {});
        }
    }

    /// Device `d` is removed: every stored range's attributes become
    /// [`RangeAttrs::without_device`]'s (the devices above `d` move down
    /// one index, as they do in the space). Ranges that become default are
    /// dropped and equal neighbours merged.
    pub fn remove_device(&mut self, d: usize) {
        let old = std::mem::take(&mut self.m);
        let mut last: Option<(u64, u64, RangeAttrs)> = None;
        for (s, e, a) in old.iter() {
            let a = a.without_device(d);
            match &mut last {
                Some((_, le, la)) if *le == s && *la == a => *le = e,
                _ => {
                    if let Some((ls, le, la)) = last.take() {
                        if la != RangeAttrs::default() {
                            self.m.insert(ls, le, la);
                        }
                    }
                    last = Some((s, e, a));
                }
            }
        }
        if let Some((ls, le, la)) = last {
            if la != RangeAttrs::default() {
                self.m.insert(ls, le, la);
            }
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.m = IntervalMap::new();
    }
}
