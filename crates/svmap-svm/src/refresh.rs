//! Keeping the engine's CPU space in step with what the process really
//! maps, outside the ranges svmap owns ([`Engine::refresh_cpu`]).
//!
//! The engine's CPU space is a model: it was seeded with the process's
//! mappings once, and mappings made or removed since then by other code
//! (a library's `mmap`, a thread's stack, a `munmap`) are unknown to it. A
//! refresh takes the current list of mappings (on Linux,
//! `/proc/self/maps`) and brings the model's *foreign* part (everything
//! svmap does not own) in line with it: new mappings are entered, vanished
//! ones removed. The ranges svmap owns (window pieces, SVM ranges, the CPU
//! side of device-only regions) are never changed by a refresh; a mapping
//! of the list that reaches into one of them, and an owned range the list
//! no longer covers, are reported as [`RefreshConflict`]s.

use std::fmt;

use svmap_core::linux::PAGE_SIZE;

use crate::backend::{CpuBackend, DeviceBackend};
use crate::engine::{Engine, EngineError};
use crate::mirror::PtFormat;

/// One current CPU mapping: `[start, end)`, and whether it grows down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuMapping {
    /// First byte (page aligned).
    pub start: u64,
    /// One past the last byte (page aligned, `> start`).
    pub end: u64,
    /// `VM_GROWSDOWN` (a stack).
    pub growsdown: bool,
}

/// Something a refresh found but did not act on: the ranges svmap owns
/// are never changed by a refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshConflict {
    /// The mapping `[start, end)` of the list reaches into the owned range
    /// `[owned_start, owned_end)` and beyond it: something else may have
    /// been mapped over or next to svmap's memory (`MAP_FIXED`). The part
    /// outside owned ranges is entered as foreign.
    Overlaps {
        /// Start of the mapping.
        start: u64,
        /// End of the mapping (exclusive).
        end: u64,
        /// Start of the owned range it meets.
        owned_start: u64,
        /// End of the owned range it meets (exclusive).
        owned_end: u64,
    },
    /// The owned range `[start, end)` is not mapped any more: something
    /// unmapped svmap's memory behind its back.
    OwnedGone {
        /// Start of the missing part.
        start: u64,
        /// End of the missing part (exclusive).
        end: u64,
    },
}

impl fmt::Display for RefreshConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RefreshConflict::Overlaps {
                start,
                end,
                owned_start,
                owned_end,
            } => write!(
                f,
                "the mapping [{start:#x}, {end:#x}) reaches into svmap's range [{owned_start:#x}, {owned_end:#x})"
            ),
            RefreshConflict::OwnedGone { start, end } => {
                write!(f, "svmap's range [{start:#x}, {end:#x}) is no longer mapped")
            }
        }
    }
}

/// What a refresh changed in the CPU space, and what it refused to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Foreign ranges entered (new since the model last saw the process).
    pub entered: Vec<(u64, u64)>,
    /// Foreign ranges removed (gone from the process).
    pub removed: Vec<(u64, u64)>,
    /// Conflicts with the ranges svmap owns (left unchanged).
    pub conflicts: Vec<RefreshConflict>,
}

impl RefreshReport {
    /// The report, or [`RefreshError::Conflicts`] with its conflicts if
    /// there are any (the changes outside owned ranges were made either
    /// way).
    pub fn into_result(self) -> Result<RefreshReport, RefreshError> {
        if self.conflicts.is_empty() {
            Ok(self)
        } else {
            Err(RefreshError::Conflicts(self.conflicts))
        }
    }
}

/// Why a refresh failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshError {
    /// A mapping of the list is empty, inverted or not page aligned
    /// (nothing changed).
    BadMapping {
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// Two mappings of the list overlap (nothing changed).
    Overlapping {
        /// The first mapping.
        first: (u64, u64),
        /// The second mapping.
        second: (u64, u64),
    },
    /// The engine refused a change (a bug if it ever happens: the changes
    /// lie outside everything svmap owns).
    Engine(EngineError),
    /// The refresh found conflicts with svmap's ranges
    /// ([`RefreshReport::into_result`]).
    Conflicts(Vec<RefreshConflict>),
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefreshError::BadMapping { start, end } => write!(
                f,
                "mapping [{start:#x}, {end:#x}) is empty, inverted or not page aligned"
            ),
            RefreshError::Overlapping { first, second } => write!(
                f,
                "mappings [{:#x}, {:#x}) and [{:#x}, {:#x}) overlap",
                first.0, first.1, second.0, second.1
            ),
            RefreshError::Engine(e) => write!(f, "the engine refused a refresh change: {e}"),
            RefreshError::Conflicts(c) => {
                write!(f, "{} conflict(s) with svmap's ranges", c.len())?;
                for x in c.iter().take(4) {
                    write!(f, "; {x}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for RefreshError {}

/// `a` minus `b`; both sorted, disjoint.
fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(s, e) in a {
        let mut cur = s;
        while j < b.len() && b[j].1 <= cur {
            j += 1;
        }
        let mut k = j;
        while cur < e && k < b.len() && b[k].0 < e {
            if b[k].0 > cur {
                out.push((cur, b[k].0));
            }
            cur = cur.max(b[k].1);
            k += 1;
        }
        if cur < e {
            out.push((cur, e));
        }
    }
    out
}

/// Sorts `v` and merges overlapping and touching ranges.
fn normalize(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

impl<C: CpuBackend, D: DeviceBackend, F: PtFormat> Engine<C, D, F> {
    /// The ranges svmap owns in the CPU space below `task_size`, sorted
    /// and merged: window pieces, SVM pieces, the CPU side of device-only
    /// regions.
    pub fn owned_cpu_ranges(&self) -> Vec<(u64, u64)> {
        let ts = self.mm().config().task_size;
        let mut v: Vec<(u64, u64)> = self
            .windows()
            .into_iter()
            .flat_map(|w| w.reserved)
            .collect();
        v.extend(self.svm_pieces_in(0, u64::MAX).map(|(s, e, _)| (s, e)));
        // Device-only regions with a CPU side (a reservation); ranges a
        // device holds by its own means have none and are not svmap's on
        // the CPU.
        for d in self.devices() {
            v.extend(
                d.cpu_regions()
                    .filter(|&(s, _, _)| s < ts && self.reservation_at(s).is_some())
                    .map(|(s, e, _)| (s, e.min(ts))),
            );
        }
        normalize(v)
    }

    /// Brings the CPU space in line with `mappings`, the process's current
    /// mappings (in any order; the parts at or above `task_size` are left
    /// out), outside the ranges svmap owns: foreign mappings the space does
    /// not hold are entered, foreign ones it holds that the list no longer
    /// has are removed (a changed `growsdown` is a removal and an entry).
    /// Owned ranges are never changed; conflicts with them are listed in
    /// the report. No backend is called (foreign ranges are only
    /// observed). A bad or overlapping list changes nothing.
    pub fn refresh_cpu(&mut self, mappings: &[CpuMapping]) -> Result<RefreshReport, RefreshError> {
        let ts = self.mm().config().task_size;
        let mut list: Vec<CpuMapping> = Vec::with_capacity(mappings.len());
        for m in mappings {
            if m.end <= m.start
                || !m.start.is_multiple_of(PAGE_SIZE)
                || !m.end.is_multiple_of(PAGE_SIZE)
            {
                return Err(RefreshError::BadMapping {
                    start: m.start,
                    end: m.end,
                });
            }
            if m.start < ts {
                list.push(CpuMapping {
                    end: m.end.min(ts),
                    ..*m
                });
            }
        }
        list.sort_unstable_by_key(|m| m.start);
        for w in list.windows(2) {
            if w[1].start < w[0].end {
                return Err(RefreshError::Overlapping {
                    first: (w[0].start, w[0].end),
                    second: (w[1].start, w[1].end),
                });
            }
        }
        let owned = self.owned_cpu_ranges();
        let mut report = RefreshReport::default();
        // Conflicts: mappings that reach out of an owned range, and owned
        // ranges the list does not cover.
        let mut j = 0;
        for m in &list {
            while j < owned.len() && owned[j].1 <= m.start {
                j += 1;
            }
            let mut k = j;
            while k < owned.len() && owned[k].0 < m.end {
                let (os, oe) = owned[k];
                if m.start < os || oe < m.end {
                    report.conflicts.push(RefreshConflict::Overlaps {
                        start: m.start,
                        end: m.end,
                        owned_start: os,
                        owned_end: oe,
                    });
                }
                k += 1;
            }
        }
        let all: Vec<(u64, u64)> = normalize(list.iter().map(|m| (m.start, m.end)).collect());
        for (start, end) in subtract(&owned, &all) {
            report
                .conflicts
                .push(RefreshConflict::OwnedGone { start, end });
        }
        // The foreign parts, old and new, by growsdown.
        let split = |v: Vec<(u64, u64, bool)>, g: bool| -> Vec<(u64, u64)> {
            let sel: Vec<(u64, u64)> = v
                .into_iter()
                .filter(|&(_, _, x)| x == g)
                .map(|(s, e, _)| (s, e))
                .collect();
            subtract(&normalize(sel), &owned)
        };
        let new: Vec<(u64, u64, bool)> =
            list.iter().map(|m| (m.start, m.end, m.growsdown)).collect();
        let old: Vec<(u64, u64, bool)> = self
            .mm()
            .space()
            .iter()
            .filter(|v| v.start < ts)
            .map(|v| {
                (
                    v.start,
                    v.end.min(ts),
                    v.flags.contains(svmap_core::VmaFlags::GROWSDOWN),
                )
            })
            .collect();
        let mut entered: Vec<(u64, u64, bool)> = Vec::new();
        for g in [false, true] {
            let (n, o) = (split(new.clone(), g), split(old.clone(), g));
            for (s, e) in subtract(&o, &n) {
                report.removed.push((s, e));
            }
            entered.extend(subtract(&n, &o).into_iter().map(|(s, e)| (s, e, g)));
        }
        report.removed.sort_unstable();
        entered.sort_unstable();
        for &(s, e) in &report.removed {
            self.cpu_unmap(s, e - s).map_err(RefreshError::Engine)?;
        }
        for &(s, e, g) in &entered {
            self.cpu_map(s, e, g).map_err(RefreshError::Engine)?;
        }
        report.entered = entered.into_iter().map(|(s, e, _)| (s, e)).collect();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CpuPolicy, DeviceConfig};

    fn m(start: u64, end: u64) -> CpuMapping {
        CpuMapping {
            start,
            end,
            growsdown: false,
        }
    }

    /// The model's VMAs below task_size as ranges, merged.
    fn vmas(e: &Engine) -> Vec<(u64, u64)> {
        normalize(e.mm().space().iter().map(|v| (v.start, v.end)).collect())
    }

    #[test]
    fn subtract_and_normalize() {
        assert_eq!(
            subtract(&[(0, 10), (20, 30)], &[(2, 4), (8, 22), (25, 26)]),
            [(0, 2), (4, 8), (22, 25), (26, 30)]
        );
        assert_eq!(subtract(&[(0, 10)], &[]), [(0, 10)]);
        assert_eq!(subtract(&[(0, 10)], &[(0, 10)]), []);
        assert_eq!(
            normalize(vec![(5, 6), (0, 2), (2, 3), (1, 4)]),
            [(0, 4), (5, 6)]
        );
        // Against a bitmap, over every pair of small range lists.
        let sets: Vec<Vec<(u64, u64)>> = vec![
            vec![],
            vec![(0, 8)],
            vec![(1, 3), (5, 7)],
            vec![(0, 1), (2, 4), (6, 8)],
            vec![(3, 5)],
        ];
        let bits = |v: &[(u64, u64)]| -> u8 {
            v.iter()
                .flat_map(|&(s, e)| s..e)
                .fold(0u8, |b, i| b | 1 << i)
        };
        for a in &sets {
            for b in &sets {
                let d = subtract(a, b);
                assert_eq!(bits(&d), bits(a) & !bits(b), "{a:?} - {b:?}");
                assert!(d.iter().all(|&(s, e)| s < e));
            }
        }
    }

    #[test]
    fn foreign_mappings_are_entered_and_removed() {
        let mut e = Engine::default();
        let p = PAGE_SIZE;
        e.cpu_map(0x100 * p, 0x110 * p, false).unwrap();
        e.cpu_map(0x200 * p, 0x210 * p, false).unwrap();
        // [0x200, 0x210) vanished, [0x300, 0x308) is new, a stack grew.
        let list = [
            m(0x100 * p, 0x110 * p),
            m(0x300 * p, 0x308 * p),
            CpuMapping {
                start: 0x400 * p,
                end: 0x420 * p,
                growsdown: true,
            },
        ];
        let r = e.refresh_cpu(&list).unwrap();
        assert_eq!(r.removed, [(0x200 * p, 0x210 * p)]);
        assert_eq!(r.entered, [(0x300 * p, 0x308 * p), (0x400 * p, 0x420 * p)]);
        assert!(r.conflicts.is_empty());
        assert_eq!(
            vmas(&e),
            [
                (0x100 * p, 0x110 * p),
                (0x300 * p, 0x308 * p),
                (0x400 * p, 0x420 * p)
            ]
        );
        let stack = e.mm().space().vma_at(0x400 * p).unwrap();
        assert!(stack.flags.contains(svmap_core::VmaFlags::GROWSDOWN));
        // The same list again changes nothing.
        let r = e.refresh_cpu(&list).unwrap();
        assert_eq!(r, RefreshReport::default());
        // The stack grows by 4 pages: only the new part is entered.
        let mut grown = list;
        grown[2].start = 0x3fc * p;
        let r = e.refresh_cpu(&grown).unwrap();
        assert_eq!(r.entered, [(0x3fc * p, 0x400 * p)]);
        assert!(r.removed.is_empty());
    }

    #[test]
    fn a_range_held_inside_another_devices_region_is_not_owned() {
        let mut e = Engine::default();
        let p = PAGE_SIZE;
        e.add_device(DeviceConfig::new("a", 40)).unwrap();
        e.add_device(DeviceConfig::new("b", 40)).unwrap();
        let r0 = 0x10_0000_0000;
        e.device_map("b", r0, r0 + 0x10 * p, CpuPolicy::Fault)
            .unwrap();
        // Held by "a" from inside "b"'s region to past its end: only the
        // region is svmap's on the CPU.
        e.device_hold("a", r0 + 8 * p, r0 + 0x18 * p).unwrap();
        assert_eq!(e.owned_cpu_ranges(), [(r0, r0 + 0x10 * p)]);
    }

    #[test]
    fn owned_ranges_are_never_changed_and_conflicts_are_listed() {
        let mut e = Engine::default();
        let p = PAGE_SIZE;
        e.add_device(DeviceConfig::new("gpu", 40)).unwrap();
        let a = e.svm_alloc(0x10 * p, None, &["gpu"], false).unwrap();
        let a_end = a + 0x10 * p;
        let r0 = a_end + 0x100 * p;
        e.device_map("gpu", r0, r0 + 0x10 * p, CpuPolicy::Fault)
            .unwrap();
        // A range the device holds by its own means has no CPU side: it is
        // not svmap's on the CPU.
        let held = r0 + 0x200 * p;
        e.device_hold("gpu", held, held + 0x10 * p).unwrap();
        let owned = e.owned_cpu_ranges();
        assert_eq!(owned, [(a, a_end), (r0, r0 + 0x10 * p)]);
        // A list without the SVM range, with a mapping that reaches from
        // outside into the region, and a foreign mapping elsewhere.
        let list = [
            m(r0 - 4 * p, r0 + 0x10 * p),
            m(0x7000_0000_0000, 0x7000_0001_0000),
        ];
        let r = e.refresh_cpu(&list).unwrap();
        assert_eq!(
            r.conflicts,
            [
                RefreshConflict::Overlaps {
                    start: r0 - 4 * p,
                    end: r0 + 0x10 * p,
                    owned_start: r0,
                    owned_end: r0 + 0x10 * p
                },
                RefreshConflict::OwnedGone {
                    start: a,
                    end: a_end
                }
            ]
        );
        // The part outside is foreign now; svmap's ranges are untouched.
        assert_eq!(
            r.entered,
            [(r0 - 4 * p, r0), (0x7000_0000_0000, 0x7000_0001_0000)]
        );
        assert!(r.removed.is_empty());
        assert_eq!(e.owned_cpu_ranges(), owned);
        assert!(e.alloc_at(a).is_some());
        assert_eq!(e.reservation_at(r0), Some(CpuPolicy::Fault));
        let err = r.clone().into_result().unwrap_err();
        assert!(matches!(err, RefreshError::Conflicts(ref c) if c.len() == 2));
        assert!(err.to_string().contains("2 conflict(s)"), "{err}");
        // With the owned ranges listed too, only the reach-in is left; a
        // CPU mapping where the device holds a range is foreign, entered.
        let list = [
            m(a, a_end),
            m(r0 - 4 * p, r0 + 0x10 * p),
            m(held, held + 0x10 * p),
            m(0x7000_0000_0000, 0x7000_0001_0000),
        ];
        let r = e.refresh_cpu(&list).unwrap();
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.entered, [(held, held + 0x10 * p)]);
        assert!(r.removed.is_empty());
    }

    #[test]
    fn bad_lists_change_nothing() {
        let mut e = Engine::default();
        let p = PAGE_SIZE;
        e.cpu_map(0x100 * p, 0x110 * p, false).unwrap();
        let before = vmas(&e);
        for (list, want) in [
            (
                vec![m(0x10 * p, 0x10 * p)],
                RefreshError::BadMapping {
                    start: 0x10 * p,
                    end: 0x10 * p,
                },
            ),
            (
                vec![m(0x10 * p + 1, 0x20 * p)],
                RefreshError::BadMapping {
                    start: 0x10 * p + 1,
                    end: 0x20 * p,
                },
            ),
            (
                vec![m(0x30 * p, 0x40 * p), m(0x10 * p, 0x31 * p)],
                RefreshError::Overlapping {
                    first: (0x10 * p, 0x31 * p),
                    second: (0x30 * p, 0x40 * p),
                },
            ),
        ] {
            assert_eq!(e.refresh_cpu(&list).unwrap_err(), want);
            assert_eq!(vmas(&e), before);
        }
        // Mappings above task_size are left out (the model cannot hold
        // them); one that straddles it is clipped.
        let ts = e.mm().config().task_size;
        let r = e
            .refresh_cpu(&[
                m(0x100 * p, 0x110 * p),
                m(ts - p, ts + p),
                m(ts + p, ts + 2 * p),
            ])
            .unwrap();
        assert_eq!(r.entered, [(ts - p, ts)]);
    }
}
