//! Records the running kernel's answers to anonymous `mmap` as a trace (`docs/trace-format.md`).
//!
//! The recorder runs in a fresh process whose layout is fixed at `execve`:
//! [`spawn_recorder`] sets `personality(ADDR_NO_RANDOMIZE)` (plus `ADDR_COMPAT_LAYOUT` for
//! [`Layout::Legacy`]) and `RLIMIT_STACK`, checks that both took effect, and re-executes
//! `/proc/self/exe` with [`CHILD_ENV`] set. In that child, [`record`] checks the same things
//! again and then writes:
//!
//! 1. a `reset` line with the parameters of this process (`mmap_base` computed from the stack
//!    rlimit as `mm/mmap.c`/`arch/x86/mm/mmap.c` do, the `mmap_min_addr` floor probed with a
//!    hint of 0x1000), and a `map` line for every VMA of `/proc/self/smaps`;
//! 2. for each of `ops` seeded random anonymous `PROT_NONE | MAP_NORESERVE` `mmap` calls: a
//!    snapshot of `/proc/self/smaps` taken right before the call with no heap allocation in
//!    between, the difference between that snapshot and the trace's own model as `unmap` and
//!    `map` lines, and the `mmap` line with `expect` set to what the kernel answered.
//!
//! The model is what `svmap replay` holds at that point: the previous snapshot plus the VMAs
//! the trace's `mmap` lines inserted since. The kernel merges and splits VMAs in ways the model
//! does not; the difference lines bring the model back to the snapshot before each call.
//!
//! `munmap` calls and `MAP_FIXED` only ever touch memory this recorder mapped itself (the
//! `owned` set below); everything else (the heap, the stack, the libraries, `malloc`'s
//! mappings) is only ever the target of `MAP_FIXED_NOREPLACE` and of hints, which never
//! replace anything.

use crate::smaps::{SmapsError, SmapsSnapshot, SmapsVma};
use crate::sys::{self, ADDR_COMPAT_LAYOUT, ADDR_NO_RANDOMIZE, MAP_32BIT, RLIM_INFINITY};
use core::fmt;
use rustix::io::Errno as RawErrno;
use rustix::mm::MapFlags;
use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::process::{Command, ExitStatus};

/// The page size this recorder supports.
pub const PAGE: u64 = 0x1000;
const PMD: u64 = 0x20_0000;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
/// `DEFAULT_MAP_WINDOW`: the top of the 47-bit user space (4-level paging).
pub const DEFAULT_MAP_WINDOW: u64 = (1 << 47) - PAGE;
/// `TASK_SIZE` of a 64-bit task with 4-level paging.
pub const TASK_SIZE: u64 = DEFAULT_MAP_WINDOW;
/// The kernel's default `stack_guard_gap` (256 pages).
pub const STACK_GUARD_GAP: u64 = 256 * PAGE;

/// Environment variable that marks the re-executed recorder process.
pub const CHILD_ENV: &str = "SVMAP_KERNEL_TRACE_CHILD";

/// Free space the fill phases leave below the main stack.
const STACK_MARGIN: u64 = 256 * MIB;
/// Free space the fill phases leave above the program break.
const BRK_MARGIN: u64 = 64 * MIB;
/// How much of the main stack is touched before recording, so that it never grows later.
const STACK_PREFAULT: usize = 1 << 20;
/// Above this many VMAs, extra `munmap`s are issued (smaps snapshots cost time per VMA).
const VMA_SOFT_LIMIT: usize = 64;
/// Room reserved in every VMA vector; far above what [`VMA_SOFT_LIMIT`] lets happen, so
/// that no vector grows while the address space is full.
const VEC_CAPACITY: usize = 1 << 16;
/// Initial smaps buffer: about 1.1 KiB of text per VMA.
const SMAPS_CAPACITY: usize = 8 << 20;
/// A fill phase starts every this many ops ...
const FULL_PERIOD: u64 = 600;
/// ... at this offset into the period ...
const FULL_OFFSET: u64 = 300;
/// ... and lasts this many ops.
const FULL_OPS: u64 = 60;

/// The process layouts the recorder can run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Top-down with an 8 MiB stack rlimit: `mmap_base` 0x7ffff7fff000.
    Stack8M,
    /// Top-down with a 1 GiB stack rlimit: `mmap_base` 0x7fffbfeff000.
    Stack1G,
    /// Top-down with an unlimited stack rlimit: `mmap_base` 0x155555556000.
    StackUnlimited,
    /// `ADDR_COMPAT_LAYOUT` (bottom-up from 0x2aaaaaaab000), 8 MiB stack rlimit.
    Legacy,
}

impl Layout {
    /// All layouts, in the order of their names in the usage text.
    pub const ALL: [Layout; 4] = [
        Layout::Stack8M,
        Layout::Stack1G,
        Layout::StackUnlimited,
        Layout::Legacy,
    ];

    /// The command-line name: `8m`, `1g`, `unlimited` or `legacy`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Stack8M => "8m",
            Layout::Stack1G => "1g",
            Layout::StackUnlimited => "unlimited",
            Layout::Legacy => "legacy",
        }
    }

    /// The layout with this command-line name.
    pub fn from_name(name: &str) -> Option<Layout> {
        Layout::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The `RLIMIT_STACK` soft limit of the recorder process (`u64::MAX` is `RLIM_INFINITY`).
    pub fn stack_rlimit(self) -> u64 {
        match self {
            Layout::Stack8M | Layout::Legacy => 8 * MIB,
            Layout::Stack1G => GIB,
            Layout::StackUnlimited => RLIM_INFINITY,
        }
    }

    /// Whether the process is bottom-up (`ADDR_COMPAT_LAYOUT`).
    pub fn is_legacy(self) -> bool {
        self == Layout::Legacy
    }

    /// The personality bits this layout needs set.
    fn personality_bits(self) -> u64 {
        let mut bits = ADDR_NO_RANDOMIZE;
        if self.is_legacy() {
            bits |= ADDR_COMPAT_LAYOUT;
        }
        bits
    }
}

/// `mm->mmap_base` of a top-down x86-64 process without randomisation
/// (`arch/x86/mm/mmap.c: mmap_base()` with `rnd = 0`, `task_size = DEFAULT_MAP_WINDOW`).
pub fn mmap_base(rlimit_stack_cur: u64) -> u64 {
    let mut gap = rlimit_stack_cur;
    let pad = STACK_GUARD_GAP; // + stack_maxrandom_size(), 0 without PF_RANDOMIZE
    if gap.wrapping_add(pad) > gap {
        gap += pad;
    }
    let gap_min = 128 * MIB;
    let gap_max = (DEFAULT_MAP_WINDOW / 6) * 5;
    let gap = gap.clamp(gap_min, gap_max);
    page_up(DEFAULT_MAP_WINDOW - gap)
}

/// What went wrong while setting up or running the recorder.
#[derive(Debug)]
pub enum Error {
    /// `personality()` failed.
    Personality {
        /// The persona that was asked for.
        requested: u64,
        /// The errno.
        source: io::Error,
    },
    /// The personality read back with `personality(0xffffffff)` lacks bits that are needed,
    /// or has `ADDR_COMPAT_LAYOUT` where a top-down layout is needed.
    PersonalityNotApplied {
        /// The persona that was asked for.
        requested: u64,
        /// The persona read back.
        actual: u64,
    },
    /// `setrlimit(RLIMIT_STACK)` failed.
    StackRlimit {
        /// The soft limit that was asked for.
        requested: u64,
        /// The errno.
        source: io::Error,
    },
    /// The stack rlimit read back differs from the one asked for.
    StackRlimitNotApplied {
        /// The soft limit that was asked for.
        requested: u64,
        /// The soft limit read back.
        actual: u64,
    },
    /// `vm.legacy_va_layout` is set, so no process can get a top-down layout.
    LegacyVaLayoutSysctl,
    /// Re-executing `/proc/self/exe` failed.
    Spawn(io::Error),
    /// Reading `/proc/self/smaps` failed.
    Smaps(io::Error),
    /// `/proc/self/smaps` did not parse.
    SmapsParse(SmapsError),
    /// `/proc/self/smaps` has no `[stack]` VMA.
    NoStack,
    /// Writing the trace failed.
    Output(io::Error),
    /// A probe `mmap` at start-up failed.
    Probe {
        /// What the probe was for.
        what: &'static str,
        /// The errno.
        source: io::Error,
    },
    /// A non-fixed hint of 0x1000 did not land at a plausible `mmap_min_addr` floor.
    FloorProbe {
        /// Where it landed.
        addr: u64,
    },
    /// A hint above 47 bits was honoured: this kernel uses 5-level paging, which the trace
    /// format does not describe.
    FiveLevelPaging {
        /// Where it landed.
        addr: u64,
    },
    /// `mmap` answered an errno the trace format has no name for.
    UnexpectedErrno {
        /// Index of the `mmap` op (0-based).
        op: u64,
        /// The errno.
        errno: i32,
    },
    /// `munmap` of memory this recorder mapped failed.
    Munmap {
        /// Start of the range.
        start: u64,
        /// Length of the range.
        length: u64,
        /// The errno.
        source: io::Error,
    },
    /// The kernel placed a mapping over a VMA of the snapshot taken right before the call:
    /// the snapshot did not show the state the kernel saw.
    Inconsistent {
        /// Index of the `mmap` op (0-based).
        op: u64,
        /// Start of the new mapping.
        start: u64,
        /// End of the new mapping.
        end: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Personality { requested, source } => write!(
                f,
                "personality({requested:#x}) failed: {source}; the kernel refuses the \
                 non-randomised layout the recorder needs"
            ),
            Error::PersonalityNotApplied { requested, actual } => write!(
                f,
                "personality({requested:#x}) did not take effect: personality(0xffffffff) \
                 reads {actual:#x}"
            ),
            Error::StackRlimit { requested, source } => {
                write!(
                    f,
                    "setrlimit(RLIMIT_STACK, {requested:#x}) failed: {source}"
                )
            }
            Error::StackRlimitNotApplied { requested, actual } => write!(
                f,
                "RLIMIT_STACK is {actual:#x} in the recorder, not the {requested:#x} asked for"
            ),
            Error::LegacyVaLayoutSysctl => write!(
                f,
                "vm.legacy_va_layout is set: every process is bottom-up, so a top-down layout \
                 cannot be recorded"
            ),
            Error::Spawn(e) => write!(f, "cannot re-execute /proc/self/exe: {e}"),
            Error::Smaps(e) => write!(f, "cannot read /proc/self/smaps: {e}"),
            Error::SmapsParse(e) => write!(f, "{e}"),
            Error::NoStack => write!(f, "/proc/self/smaps has no [stack] VMA"),
            Error::Output(e) => write!(f, "cannot write the trace: {e}"),
            Error::Probe { what, source } => write!(f, "probe mmap for {what} failed: {source}"),
            Error::FloorProbe { addr } => write!(
                f,
                "a non-fixed mmap hint of 0x1000 landed at {addr:#x}, not at the mmap_min_addr \
                 floor"
            ),
            Error::FiveLevelPaging { addr } => write!(
                f,
                "a hint above 47 bits was honoured ({addr:#x}): 5-level paging is not \
                 described by the trace format"
            ),
            Error::UnexpectedErrno { op, errno } => write!(
                f,
                "mmap op {op} failed with {}, which the trace format has no name for",
                io::Error::from_raw_os_error(*errno)
            ),
            Error::Munmap {
                start,
                length,
                source,
            } => write!(f, "munmap({start:#x}, {length:#x}) failed: {source}"),
            Error::Inconsistent { op, start, end } => write!(
                f,
                "mmap op {op} placed [{start:#x}, {end:#x}) over a VMA of the smaps snapshot \
                 taken right before it"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Whether this process is the re-executed recorder (it has [`CHILD_ENV`] set).
pub fn is_recorder_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Sets this process's personality and stack rlimit for `layout`, checks both, and runs
/// `/proc/self/exe` with `args` and [`CHILD_ENV`] set; returns its exit status.
///
/// Personality and rlimits are inherited across `fork` and `execve`, and the layout is chosen
/// at `execve`, so the child starts with the layout asked for. The calling process only waits.
pub fn spawn_recorder(layout: Layout, args: &[OsString]) -> Result<ExitStatus, Error> {
    let current = read_personality()?;
    let requested = (current & !ADDR_COMPAT_LAYOUT) | layout.personality_bits();
    set_personality(requested)?;
    check_personality(layout, requested)?;
    set_stack_rlimit(layout.stack_rlimit())?;
    check_stack_rlimit(layout.stack_rlimit())?;
    Command::new("/proc/self/exe")
        .args(args)
        .env(CHILD_ENV, layout.name())
        .status()
        .map_err(Error::Spawn)
}

fn read_personality() -> Result<u64, Error> {
    sys::personality(0xffff_ffff).map_err(|source| Error::Personality {
        requested: 0xffff_ffff,
        source,
    })
}

fn set_personality(persona: u64) -> Result<(), Error> {
    sys::personality(persona).map_err(|source| Error::Personality {
        requested: persona,
        source,
    })?;
    Ok(())
}

fn check_personality(layout: Layout, requested: u64) -> Result<(), Error> {
    let actual = read_personality()?;
    let need = layout.personality_bits();
    let wrong_compat = !layout.is_legacy() && actual & ADDR_COMPAT_LAYOUT != 0;
    if actual & need != need || wrong_compat {
        return Err(Error::PersonalityNotApplied { requested, actual });
    }
    Ok(())
}

fn set_stack_rlimit(cur: u64) -> Result<(), Error> {
    sys::set_stack_rlimit(cur).map_err(|source| Error::StackRlimit {
        requested: cur,
        source,
    })
}

fn check_stack_rlimit(requested: u64) -> Result<(), Error> {
    let actual = sys::stack_rlimit();
    if actual != requested {
        return Err(Error::StackRlimitNotApplied { requested, actual });
    }
    Ok(())
}

/// What to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The layout of this process (checked, not set: see [`spawn_recorder`]).
    pub layout: Layout,
    /// Seed of the operation sequence.
    pub seed: u64,
    /// Number of `mmap` operations to record.
    pub ops: u64,
}

/// Counts of one kind of `mmap` request, or of all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests.
    pub ops: u64,
    /// Answered with an address.
    pub addr: u64,
    /// Answered `ENOMEM`.
    pub enomem: u64,
    /// Answered `EINVAL`.
    pub einval: u64,
    /// Answered `EEXIST`.
    pub eexist: u64,
}

impl Counts {
    fn add(&mut self, result: Result<u64, Errno>) {
        self.ops += 1;
        match result {
            Ok(_) => self.addr += 1,
            Err(Errno::Nomem) => self.enomem += 1,
            Err(Errno::Inval) => self.einval += 1,
            Err(Errno::Exist) => self.eexist += 1,
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ops: {} addr, {} ENOMEM, {} EINVAL, {} EEXIST",
            self.ops, self.addr, self.enomem, self.einval, self.eexist
        )
    }
}

/// What a recording did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// All `mmap` ops.
    pub total: Counts,
    /// Per request kind (kind name, counts), for the kinds that occurred.
    pub kinds: Vec<(&'static str, Counts)>,
    /// Requests placed above `mmap_base` by the top-down search's bottom-up fallback (no hint
    /// honoured, no `MAP_32BIT`, no `MAP_FIXED*`; top-down layouts only).
    pub fallbacks: u64,
    /// `mmap` ops issued while the address space was filled.
    pub full_ops: u64,
    /// Fill phases.
    pub fill_phases: u64,
    /// `munmap` calls of the recorder's own memory (not trace lines).
    pub munmaps: u64,
    /// `map` and `unmap` lines written to bring the model to each snapshot.
    pub diff_lines: u64,
    /// Most VMAs seen in one snapshot.
    pub max_vmas: usize,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel-trace: mmap {}", self.total)?;
        writeln!(
            f,
            "  {} top-down fallbacks, {} ops in {} fill phases, {} munmaps, {} map/unmap \
             lines, at most {} VMAs",
            self.fallbacks,
            self.full_ops,
            self.fill_phases,
            self.munmaps,
            self.diff_lines,
            self.max_vmas
        )?;
        for (name, counts) in &self.kinds {
            writeln!(f, "  {name:<22} {counts}")?;
        }
        Ok(())
    }
}

/// Records `config.ops` `mmap` calls of this process as a trace on `out`.
///
/// Call this only in a process started by [`spawn_recorder`] (see [`is_recorder_child`]): it
/// checks the personality and the stack rlimit first and fails if they are not what
/// `config.layout` needs.
pub fn record<W: Write>(config: &Config, out: W) -> Result<Stats, Error> {
    check_personality(config.layout, config.layout.personality_bits())?;
    check_stack_rlimit(config.layout.stack_rlimit())?;
    if !config.layout.is_legacy() && read_sysctl("/proc/sys/vm/legacy_va_layout").unwrap_or(0) != 0
    {
        return Err(Error::LegacyVaLayoutSysctl);
    }
    prefault_stack();
    let mut rec = Recorder::new(config, out)?;
    rec.run(config.ops)?;
    rec.out.flush().map_err(Error::Output)?;
    Ok(rec.stats())
}

/// Touches [`STACK_PREFAULT`] bytes of stack so that the `[stack]` VMA never grows while
/// recording (a growth between a snapshot and an `mmap` would make the snapshot stale).
#[inline(never)]
fn prefault_stack() {
    let mut buf = [0u8; STACK_PREFAULT];
    std::hint::black_box(&mut buf);
}

fn read_sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

const fn page_up(x: u64) -> u64 {
    x.wrapping_add(PAGE - 1) & !(PAGE - 1)
}

const fn page_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

/// `splitmix64`: small, seedable, good enough to drive a test mix.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        match (hi - lo).checked_add(1) {
            Some(n) => lo + self.below(n),
            None => self.next_u64(),
        }
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    /// Log-uniform in `lo..=hi` (`lo >= 1`): a uniform bit length, then uniform within it.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(1 <= lo && lo <= hi);
        let lo_bit = 63 - u64::from(lo.leading_zeros());
        let hi_bit = 63 - u64::from(hi.leading_zeros());
        let bit = self.between(lo_bit, hi_bit);
        let top = if bit == 63 {
            u64::MAX
        } else {
            (1u64 << (bit + 1)) - 1
        };
        self.between(1 << bit, top).clamp(lo, hi)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A length of `pages` pages, sometimes cut short by 1..PAGE-1 bytes.
    fn maybe_unaligned(&mut self, len: u64) -> u64 {
        if len >= PAGE && self.percent(20) {
            len - self.between(1, PAGE - 1)
        } else {
            len
        }
    }
}

/// One VMA of the model: `[start, end)`, with `VM_GROWSDOWN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Vma {
    start: u64,
    end: u64,
    growsdown: bool,
}

/// Removes `[start, end)` from a sorted, disjoint list of VMAs, splitting where needed:
/// what `unmap` does in replay.
fn vmas_unmap(vmas: &mut Vec<Vma>, start: u64, end: u64) {
    let mut i = vmas.partition_point(|v| v.end <= start);
    while i < vmas.len() && vmas[i].start < end {
        let v = vmas[i];
        if v.start < start && v.end > end {
            vmas[i].end = start;
            vmas.insert(i + 1, Vma { start: end, ..v });
            return;
        }
        if v.start < start {
            vmas[i].end = start;
            i += 1;
        } else if v.end > end {
            vmas[i].start = end;
            return;
        } else {
            vmas.remove(i);
        }
    }
}

/// Inserts `vma` into a sorted, disjoint list; `false` (and no change) if it overlaps.
fn vmas_insert(vmas: &mut Vec<Vma>, vma: Vma) -> bool {
    let i = vmas.partition_point(|v| v.end <= vma.start);
    if i < vmas.len() && vmas[i].start < vma.end {
        return false;
    }
    vmas.insert(i, vma);
    true
}

/// A set of addresses as sorted, disjoint, non-adjacent `[start, end)` ranges.
struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    fn insert(&mut self, start: u64, end: u64) {
        let i = self.0.partition_point(|r| r.1 < start);
        let mut j = i;
        let (mut s, mut e) = (start, end);
        while j < self.0.len() && self.0[j].0 <= end {
            s = s.min(self.0[j].0);
            e = e.max(self.0[j].1);
            j += 1;
        }
        self.0.splice(i..j, [(s, e)]);
    }

    fn remove(&mut self, start: u64, end: u64) {
        let mut i = self.0.partition_point(|r| r.1 <= start);
        while i < self.0.len() && self.0[i].0 < end {
            let (s, e) = self.0[i];
            if s < start && e > end {
                self.0[i].1 = start;
                self.0.insert(i + 1, (end, e));
                return;
            }
            if s < start {
                self.0[i].1 = start;
                i += 1;
            } else if e > end {
                self.0[i].0 = end;
                return;
            } else {
                self.0.remove(i);
            }
        }
    }

    /// Whether every address of `[start, end)` is in the set.
    fn covers(&self, start: u64, end: u64) -> bool {
        let i = self.0.partition_point(|r| r.1 <= start);
        start >= end || (i < self.0.len() && self.0[i].0 <= start && end <= self.0[i].1)
    }
}

/// `MAP_FIXED` flavour of a request, as the trace spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FixedKind {
    No,
    Fixed,
    NoReplace,
}

impl FixedKind {
    fn name(self) -> &'static str {
        match self {
            FixedKind::No => "no",
            FixedKind::Fixed => "fixed",
            FixedKind::NoReplace => "noreplace",
        }
    }
}

/// The errnos the trace format names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Errno {
    Nomem,
    Inval,
    Exist,
}

impl Errno {
    fn name(self) -> &'static str {
        match self {
            Errno::Nomem => "ENOMEM",
            Errno::Inval => "EINVAL",
            Errno::Exist => "EEXIST",
        }
    }
}

macro_rules! kinds {
    ($($kind:ident => $name:literal,)*) => {
        /// What a request is meant to exercise (`as usize` indexes `Kind::ALL`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Kind { $($kind,)* }
        impl Kind {
            const ALL: &'static [Kind] = &[$(Kind::$kind,)*];
            fn name(self) -> &'static str {
                match self { $(Kind::$kind => $name,)* }
            }
        }
    };
}

kinds! {
    Plain => "plain",
    Map32 => "map32bit",
    ZeroLen => "zero-length",
    HintFree => "hint-free",
    HintTight => "hint-tight",
    HintTaken => "hint-taken",
    HintGuard => "hint-in-guard-gap",
    HintGuardFit => "hint-under-guard-gap",
    HintUnaligned => "hint-unaligned",
    HintTiny => "hint-tiny",
    HintBelowFloor => "hint-below-floor",
    HintAbove47 => "hint-above-47bit",
    HintCross47 => "hint-crossing-47bit",
    HintTop => "hint-top",
    NoReplaceFree => "noreplace-free",
    NoReplaceTight => "noreplace-tight",
    NoReplaceTaken => "noreplace-taken",
    NoReplaceOwn => "noreplace-own-exact",
    NoReplaceUnderGrowsdown => "noreplace-under-gd",
    NoReplaceLow => "noreplace-below-floor",
    NoReplaceUnaligned => "noreplace-unaligned",
    NoReplaceAboveTask => "noreplace-above-task",
    FixedOwn => "fixed-own",
    FixedOwnExact => "fixed-own-exact",
    FixedSpan => "fixed-own-and-free",
    FixedUnaligned => "fixed-unaligned",
    FixedDemoted => "fixed-demoted",
}

/// One `mmap` request.
#[derive(Clone, Copy, Debug)]
struct Request {
    length: u64,
    hint: u64,
    fixed: FixedKind,
    growsdown: bool,
    map32bit: bool,
    kind: Kind,
}

impl Request {
    fn new(kind: Kind, length: u64, hint: u64, fixed: FixedKind) -> Request {
        Request {
            length,
            hint,
            fixed,
            growsdown: false,
            map32bit: false,
            kind,
        }
    }

    fn flags(&self) -> MapFlags {
        let mut flags = map_flags();
        flags |= match self.fixed {
            FixedKind::No => MapFlags::empty(),
            FixedKind::Fixed => MapFlags::FIXED,
            FixedKind::NoReplace => MapFlags::FIXED_NOREPLACE,
        };
        if self.growsdown {
            flags |= MapFlags::GROWSDOWN;
        }
        if self.map32bit {
            flags |= MAP_32BIT;
        }
        flags
    }
}

/// `mmap(hint, length, PROT_NONE, flags, -1, 0)`, as an address or an errno.
///
/// `MAP_FIXED` only for ranges this recorder mapped itself (the `owned` set) or free ones.
fn raw_mmap(hint: u64, length: u64, flags: MapFlags) -> Result<u64, io::Error> {
    sys::mmap_none(hint, length, flags)
}

/// `munmap(start, length)`, only ever of ranges this recorder mapped itself.
fn raw_munmap(start: u64, length: u64) -> Result<(), Error> {
    sys::munmap(start, length).map_err(|source| Error::Munmap {
        start,
        length,
        source,
    })
}

/// The program break (`sbrk(0)`).
fn program_break() -> u64 {
    sys::program_break()
}

fn map_flags() -> MapFlags {
    // MAP_ANONYMOUS is implied by `sys::mmap_none`.
    MapFlags::PRIVATE | MapFlags::NORESERVE
}

/// The mmap_min_addr floor: where a non-fixed hint of 0x1000 lands (`round_hint_to_min`
/// raises it to the kernel-internal `mmap_min_addr`, and nothing is mapped that low).
fn probe_floor() -> Result<u64, Error> {
    let addr = raw_mmap(0x1000, PAGE, map_flags()).map_err(|source| Error::Probe {
        what: "the mmap_min_addr floor",
        source,
    })?;
    raw_munmap(addr, PAGE)?;
    if addr >= 1 << 32 {
        return Err(Error::FloorProbe { addr });
    }
    Ok(addr)
}

/// Fails on a kernel that honours a hint above 47 bits (5-level paging).
fn probe_four_level() -> Result<(), Error> {
    let addr = raw_mmap(1 << 47, PAGE, map_flags()).map_err(|source| Error::Probe {
        what: "the paging depth",
        source,
    })?;
    raw_munmap(addr, PAGE)?;
    if addr >= 1 << 47 {
        return Err(Error::FiveLevelPaging { addr });
    }
    Ok(())
}

/// The lowest address where `MAP_FIXED_NOREPLACE` may map: 0 for a caller with
/// `CAP_SYS_RAWIO`, else the `vm.mmap_min_addr` sysctl, else the floor.
fn probe_low_fixed(floor: u64) -> Result<u64, Error> {
    let dac = page_up(read_sysctl("/proc/sys/vm/mmap_min_addr").unwrap_or(floor));
    for candidate in [0, dac] {
        if candidate >= floor {
            break;
        }
        let flags = map_flags() | MapFlags::FIXED_NOREPLACE;
        if let Ok(addr) = raw_mmap(candidate, PAGE, flags) {
            raw_munmap(addr, PAGE)?;
            if addr == candidate {
                return Ok(candidate);
            }
        }
    }
    Ok(floor)
}

/// JSON text of a hex number: `"0x..."`.
struct Hex(u64);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{:#x}\"", self.0)
    }
}

struct Recorder<W: Write> {
    layout: Layout,
    rng: Rng,
    out: BufWriter<W>,
    smaps: SmapsSnapshot,
    /// The VMAs of the last snapshot.
    snap: Vec<Vma>,
    /// What replay holds: the last snapshot plus what the trace's `mmap` lines inserted.
    model: Vec<Vma>,
    /// Every address this recorder mapped and has not unmapped.
    owned: RangeSet,
    /// The ranges mapped by the current fill phase.
    fillers: Vec<(u64, u64)>,
    /// Scratch list of ranges (fill holes, parts of fillers to unmap).
    scratch: Vec<(u64, u64)>,
    /// `[stack]` start in the last snapshot.
    stack_start: u64,
    floor: u64,
    low_fixed: u64,
    mmap_base: u64,
    full: bool,
    total: Counts,
    kinds: Vec<Counts>,
    fallbacks: u64,
    full_ops: u64,
    fill_phases: u64,
    munmaps: u64,
    diff_lines: u64,
    max_vmas: usize,
}

impl<W: Write> Recorder<W> {
    /// Probes the kernel, allocates everything the loop needs, and writes the `reset` and the
    /// initial `map` lines.
    fn new(config: &Config, out: W) -> Result<Self, Error> {
        let floor = probe_floor()?;
        probe_four_level()?;
        let low_fixed = probe_low_fixed(floor)?;
        let mut rec = Recorder {
            layout: config.layout,
            rng: Rng(config.seed),
            out: BufWriter::with_capacity(1 << 20, out),
            smaps: SmapsSnapshot::with_capacity(SMAPS_CAPACITY),
            snap: Vec::with_capacity(VEC_CAPACITY),
            model: Vec::with_capacity(VEC_CAPACITY),
            owned: RangeSet(Vec::with_capacity(VEC_CAPACITY)),
            fillers: Vec::with_capacity(VEC_CAPACITY),
            scratch: Vec::with_capacity(VEC_CAPACITY),
            stack_start: 0,
            floor,
            low_fixed,
            mmap_base: mmap_base(config.layout.stack_rlimit()),
            full: false,
            total: Counts::default(),
            kinds: vec![Counts::default(); Kind::ALL.len()],
            fallbacks: 0,
            full_ops: 0,
            fill_phases: 0,
            munmaps: 0,
            diff_lines: 0,
            max_vmas: 0,
        };
        rec.write_header(config).map_err(Error::Output)?;
        rec.out.flush().map_err(Error::Output)?;
        rec.read_snapshot()?;
        rec.model.clone_from(&rec.snap);
        for v in &rec.model {
            write_map(&mut rec.out, v).map_err(Error::Output)?;
        }
        Ok(rec)
    }

    fn write_header(&mut self, config: &Config) -> io::Result<()> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists();
        let out = &mut self.out;
        writeln!(
            out,
            "# svmap kernel-trace --layout {} --seed {} --ops {}",
            config.layout.name(),
            config.seed,
            config.ops
        )?;
        writeln!(
            out,
            "# Linux {} x86-64; personality ADDR_NO_RANDOMIZE{}; RLIMIT_STACK {}; probed \
             mmap_min_addr floor {:#x}; lowest address for MAP_FIXED {:#x}",
            release.trim(),
            if self.layout.is_legacy() {
                " | ADDR_COMPAT_LAYOUT"
            } else {
                ""
            },
            match self.layout.stack_rlimit() {
                RLIM_INFINITY => "unlimited".to_string(),
                r => format!("{r:#x}"),
            },
            self.floor,
            self.low_fixed
        )?;
        writeln!(
            out,
            "# Every mmap is anonymous, private, PROT_NONE | MAP_NORESERVE. Before each one, \
             map/unmap lines bring the model to /proc/self/smaps as it was right before the call."
        )?;
        write!(
            out,
            "{{\"op\": \"reset\", \"task_size\": {}, \"mmap_min_addr\": {}, \
             \"stack_guard_gap\": {}, \"layout\": \"{}\"",
            Hex(TASK_SIZE),
            Hex(self.floor),
            Hex(STACK_GUARD_GAP),
            if self.layout.is_legacy() {
                "legacy"
            } else {
                "topdown"
            }
        )?;
        if !self.layout.is_legacy() {
            write!(out, ", \"mmap_base\": {}", Hex(self.mmap_base))?;
        }
        writeln!(
            out,
            ", \"page_size\": {}, \"thp_align\": {thp}}}",
            Hex(PAGE)
        )
    }

    /// Reads `/proc/self/smaps` into `self.smaps` and `self.snap` (skipping what lies at or
    /// above `TASK_SIZE`, i.e. `[vsyscall]`), and notes the `[stack]` start.
    fn read_snapshot(&mut self) -> Result<(), Error> {
        self.smaps.read_self().map_err(Error::Smaps)?;
        self.parse_snapshot()
    }

    fn parse_snapshot(&mut self) -> Result<(), Error> {
        self.snap.clear();
        let mut stack = None;
        for vma in self.smaps.vmas() {
            let SmapsVma {
                start,
                end,
                growsdown,
                name,
            } = vma.map_err(Error::SmapsParse)?;
            if end > TASK_SIZE {
                continue;
            }
            if name == b"[stack]" {
                stack = Some(start);
            }
            self.snap.push(Vma {
                start,
                end,
                growsdown,
            });
        }
        self.stack_start = stack.ok_or(Error::NoStack)?;
        self.max_vmas = self.max_vmas.max(self.snap.len());
        Ok(())
    }

    fn run(&mut self, ops: u64) -> Result<(), Error> {
        for op in 0..ops {
            let phase = op % FULL_PERIOD;
            if phase == FULL_OFFSET {
                self.fill()?;
            } else if phase == FULL_OFFSET + FULL_OPS && self.full {
                self.unfill()?;
            }
            if self.rng.percent(if self.full { 10 } else { 30 }) {
                self.random_munmap(false)?;
            }
            for _ in 0..4 {
                if self.model.len() <= VMA_SOFT_LIMIT {
                    break;
                }
                self.random_munmap(true)?;
            }
            let req = self.choose_request();
            self.record_mmap(op, req)?;
        }
        if self.full {
            self.unfill()?;
        }
        Ok(())
    }

    /// Snapshot, `mmap`, then the trace lines and the bookkeeping.
    fn record_mmap(&mut self, op: u64, mut req: Request) -> Result<(), Error> {
        // From the snapshot to the mmap call: no heap allocation (read_self allocates only
        // before its last read).
        self.smaps.read_self().map_err(Error::Smaps)?;
        if req.fixed == FixedKind::Fixed && !self.fixed_target_is_ours(&req) {
            req.fixed = FixedKind::NoReplace;
            req.kind = Kind::FixedDemoted;
        }
        let answer = raw_mmap(req.hint, req.length, req.flags());
        // From here on anything goes.
        let result = match answer {
            Ok(addr) => Ok(addr),
            Err(e) => match e.raw_os_error().map(RawErrno::from_raw_os_error) {
                Some(RawErrno::NOMEM) => Err(Errno::Nomem),
                Some(RawErrno::INVAL) => Err(Errno::Inval),
                Some(RawErrno::EXIST) => Err(Errno::Exist),
                other => {
                    return Err(Error::UnexpectedErrno {
                        op,
                        errno: other.map_or(0, RawErrno::raw_os_error),
                    })
                }
            },
        };
        self.parse_snapshot()?;
        self.write_diff().map_err(Error::Output)?;
        self.write_mmap(op, &req, result).map_err(Error::Output)?;

        self.total.add(result);
        self.kinds[req.kind as usize].add(result);
        if self.full {
            self.full_ops += 1;
        }
        let Ok(addr) = result else {
            if req.fixed == FixedKind::Fixed && result == Err(Errno::Nomem) {
                // A failed MAP_FIXED may have unmapped the old pages before
                // failing (mmap_region unmaps first): the range may now be a
                // hole that malloc can take. Stop calling it ours, so that no
                // later munmap or MAP_FIXED can reach someone else's memory
                // there (at worst a PROT_NONE mapping of ours stays, unused).
                let start = page_down(req.hint);
                let end = start.saturating_add(page_up(req.length));
                self.owned.remove(start, end);
            }
            return Ok(());
        };
        let end = addr + page_up(req.length);
        if !self.layout.is_legacy()
            && req.fixed == FixedKind::No
            && !req.map32bit
            && addr != page_down(req.hint)
            && addr >= self.mmap_base
        {
            self.fallbacks += 1;
        }
        if req.fixed == FixedKind::Fixed {
            vmas_unmap(&mut self.model, addr, end);
        }
        let vma = Vma {
            start: addr,
            end,
            growsdown: req.growsdown,
        };
        if !vmas_insert(&mut self.model, vma) {
            return Err(Error::Inconsistent {
                op,
                start: addr,
                end,
            });
        }
        self.owned.insert(addr, end);
        Ok(())
    }

    /// Whether every VMA of the current snapshot that a `MAP_FIXED` request would replace is
    /// this recorder's own memory. Allocation-free: it runs between snapshot and call.
    fn fixed_target_is_ours(&self, req: &Request) -> bool {
        let start = page_down(req.hint);
        // `page_up` wraps to 0 for lengths above 2^64 - PAGE: such a request
        // would cover nothing here, so refuse it rather than rely on the
        // kernel's own PAGE_ALIGN wrap check.
        let Some(len) = req.length.checked_add(PAGE - 1).map(page_down) else {
            return false;
        };
        let Some(end) = req.hint.checked_add(len) else {
            return false;
        };
        for vma in self.smaps.vmas() {
            let Ok(vma) = vma else {
                return false;
            };
            if vma.end <= start || vma.start >= end {
                continue;
            }
            if !self.owned.covers(vma.start.max(start), vma.end.min(end)) {
                return false;
            }
        }
        true
    }

    /// `unmap` lines for model VMAs not in the snapshot, then `map` lines for snapshot VMAs not
    /// in the model; afterwards the model is the snapshot.
    fn write_diff(&mut self) -> io::Result<()> {
        let mut j = 0;
        for m in &self.model {
            while j < self.snap.len() && self.snap[j].start < m.start {
                j += 1;
            }
            if self.snap.get(j) != Some(m) {
                writeln!(
                    self.out,
                    "{{\"op\": \"unmap\", \"start\": {}, \"length\": {}}}",
                    Hex(m.start),
                    Hex(m.end - m.start)
                )?;
                self.diff_lines += 1;
            }
        }
        let mut i = 0;
        for s in &self.snap {
            while i < self.model.len() && self.model[i].start < s.start {
                i += 1;
            }
            if self.model.get(i) != Some(s) {
                write_map(&mut self.out, s)?;
                self.diff_lines += 1;
            }
        }
        self.model.clone_from(&self.snap);
        Ok(())
    }

    fn write_mmap(&mut self, op: u64, req: &Request, result: Result<u64, Errno>) -> io::Result<()> {
        writeln!(self.out, "# {op} {}", req.kind.name())?;
        write!(
            self.out,
            "{{\"op\": \"mmap\", \"length\": {}, \"hint\": {}, \"fixed\": \"{}\", \
             \"growsdown\": {}, \"map32bit\": {}, \"expect\": ",
            Hex(req.length),
            Hex(req.hint),
            req.fixed.name(),
            req.growsdown,
            req.map32bit
        )?;
        match result {
            Ok(addr) => writeln!(self.out, "{{\"addr\": {}}}}}", Hex(addr)),
            Err(e) => writeln!(self.out, "{{\"err\": \"{}\"}}}}", e.name()),
        }
    }

    /// Unmaps a random part (or, with `whole`, all) of one of the recorder's own ranges.
    fn random_munmap(&mut self, whole: bool) -> Result<(), Error> {
        if self.owned.0.is_empty() {
            return Ok(());
        }
        let (a, b) = self.owned.0[self.rng.below(self.owned.0.len() as u64) as usize];
        let pages = (b - a) / PAGE;
        let (start, len) = if whole || self.rng.percent(40) {
            (a, b - a)
        } else {
            let first = self.rng.below(pages);
            let n = self.rng.log_uniform(1, pages - first);
            (a + first * PAGE, n * PAGE)
        };
        raw_munmap(start, len)?;
        self.owned.remove(start, start + len);
        self.munmaps += 1;
        Ok(())
    }

    /// Fills every free hole of `[floor, TASK_SIZE)` with `MAP_FIXED_NOREPLACE` `PROT_NONE`
    /// mappings, except two margins that the process itself needs:
    ///
    /// ```text
    ///  floor                brk   brk+64M          stack-256M  [stack]  TASK_SIZE
    ///    |##fill##|program|heap|    free    |##fill##|   free    |stack|
    /// ```
    ///
    /// Every buffer the loop uses is allocated already, so the recorder needs no new memory
    /// while the space is full.
    fn fill(&mut self) -> Result<(), Error> {
        self.read_snapshot()?;
        let brk = page_up(program_break());
        let mut margins = [
            (brk, brk.saturating_add(BRK_MARGIN)),
            (self.stack_start.saturating_sub(STACK_MARGIN), TASK_SIZE),
        ];
        margins.sort_unstable();
        self.scratch.clear();
        for (mut s, e) in free_gaps(&self.snap, self.floor) {
            for (ms, me) in margins {
                if ms < e && me > s {
                    if s < ms {
                        self.scratch.push((s, ms));
                    }
                    s = s.max(me);
                }
            }
            if s < e {
                self.scratch.push((s, e));
            }
        }
        for k in 0..self.scratch.len() {
            let (s, e) = self.scratch[k];
            let flags = map_flags() | MapFlags::FIXED_NOREPLACE;
            if let Ok(addr) = raw_mmap(s, e - s, flags) {
                if addr != s {
                    // A kernel before 4.17 took MAP_FIXED_NOREPLACE as a hint:
                    // the mapping is ours but elsewhere. Undo it instead of
                    // recording [s, e), which is not ours to unmap later.
                    raw_munmap(addr, e - s)?;
                    continue;
                }
                self.fillers.push((s, e));
                self.owned.insert(s, e);
            }
        }
        self.full = true;
        self.fill_phases += 1;
        writeln!(
            self.out,
            "# fill phase {}: {} holes filled",
            self.fill_phases,
            self.fillers.len()
        )
        .map_err(Error::Output)
    }

    /// Unmaps what is left of the fill phase's mappings (only the parts still owned).
    fn unfill(&mut self) -> Result<(), Error> {
        self.scratch.clear();
        for &(fs, fe) in &self.fillers {
            let mut i = self.owned.0.partition_point(|r| r.1 <= fs);
            while i < self.owned.0.len() && self.owned.0[i].0 < fe {
                let (s, e) = self.owned.0[i];
                self.scratch.push((s.max(fs), e.min(fe)));
                i += 1;
            }
        }
        for k in 0..self.scratch.len() {
            let (s, e) = self.scratch[k];
            raw_munmap(s, e - s)?;
            self.owned.remove(s, e);
        }
        self.fillers.clear();
        self.full = false;
        writeln!(self.out, "# fill phase {} ends", self.fill_phases).map_err(Error::Output)
    }

    fn stats(&self) -> Stats {
        Stats {
            total: self.total,
            kinds: Kind::ALL
                .iter()
                .zip(&self.kinds)
                .filter(|(_, c)| c.ops > 0)
                .map(|(k, c)| (k.name(), *c))
                .collect(),
            fallbacks: self.fallbacks,
            full_ops: self.full_ops,
            fill_phases: self.fill_phases,
            munmaps: self.munmaps,
            diff_lines: self.diff_lines,
            max_vmas: self.max_vmas,
        }
    }

    // ---- Choosing requests -------------------------------------------------------------

    fn choose_request(&mut self) -> Request {
        let mut req = match self.rng.below(100) {
            0..=2 => self.zero_length(),
            3..=27 => self.plain(),
            28..=34 => self.map32(),
            35..=62 => self.hinted(),
            63..=79 => self.noreplace(),
            _ => self.fixed_own(),
        };
        if req.kind != Kind::Map32 && self.rng.percent(10) {
            req.growsdown = true;
        }
        req
    }

    /// A length from the general mix: page multiples, PMD multiples and one page either side
    /// (the THP path), unaligned lengths, huge `PROT_NONE` sizes up to 256 TiB, and values
    /// around `TASK_SIZE` and 2^64 (the mix that "How it is checked" in
    /// `docs/linux-semantics.md` describes).
    fn length(&mut self) -> u64 {
        let rng = &mut self.rng;
        if self.full && rng.percent(45) {
            return page_up(rng.log_uniform(MIB, 4 * GIB));
        }
        match rng.below(100) {
            0..=39 => rng.log_uniform(1, 64) * PAGE,
            40..=59 => {
                // Exact multiples take the THP path; one page off does not.
                let base = rng.log_uniform(1, 64) * PMD;
                match rng.below(4) {
                    0 | 1 => base,
                    2 => base - PAGE,
                    _ => base + PAGE,
                }
            }
            60..=69 => {
                let len = rng.log_uniform(1, 4 * MIB);
                if len & (PAGE - 1) == 0 {
                    len + rng.between(1, PAGE - 1)
                } else {
                    len
                }
            }
            70..=84 => page_up(rng.log_uniform(64 * PAGE, 256 * MIB)),
            85..=96 => {
                if rng.percent(25) {
                    1 << rng.between(30, 48)
                } else {
                    page_up(rng.log_uniform(GIB, 256 * TIB))
                }
            }
            _ => rng.pick(&[
                TASK_SIZE,
                TASK_SIZE - PAGE,
                TASK_SIZE + 1,
                1 << 47,
                1 << 48,
                1 << 63,
                u64::MAX,
                u64::MAX - PAGE + 1,
                u64::MAX - PAGE,
            ]),
        }
    }

    fn zero_length(&mut self) -> Request {
        let hint = if self.rng.percent(50) {
            0
        } else {
            self.free_address(PAGE).0
        };
        let fixed = self
            .rng
            .pick(&[FixedKind::No, FixedKind::NoReplace, FixedKind::Fixed]);
        let mut req = Request::new(Kind::ZeroLen, 0, hint, fixed);
        req.map32bit = self.rng.percent(10);
        req
    }

    fn plain(&mut self) -> Request {
        let len = self.length();
        Request::new(Kind::Plain, len, 0, FixedKind::No)
    }

    fn map32(&mut self) -> Request {
        let rng = &mut self.rng;
        let len = match rng.below(100) {
            0..=64 => rng.log_uniform(1, 64) * PAGE,
            65..=84 => {
                let shift = rng.pick(&[0, PAGE, PAGE.wrapping_neg()]);
                (rng.log_uniform(1, 8) * PMD).wrapping_add(shift)
            }
            85..=94 => page_up(rng.log_uniform(64 * PAGE, 256 * MIB)),
            _ => rng.log_uniform(GIB, 4 * GIB),
        };
        let hint = match rng.below(100) {
            0..=69 => 0,
            70..=84 => page_down(rng.between(GIB, 2 * GIB)),
            85..=92 => page_down(rng.between(self.floor, GIB)),
            _ => rng.log_uniform(2 * GIB, TASK_SIZE),
        };
        let mut req = Request::new(Kind::Map32, len, hint, FixedKind::No);
        req.map32bit = true;
        req
    }

    fn hinted(&mut self) -> Request {
        let kinds = [
            Kind::HintFree,
            Kind::HintFree,
            Kind::HintTight,
            Kind::HintTaken,
            Kind::HintGuard,
            Kind::HintGuardFit,
            Kind::HintUnaligned,
            Kind::HintTiny,
            Kind::HintBelowFloor,
            Kind::HintAbove47,
            Kind::HintCross47,
            Kind::HintTop,
        ];
        let kind = self.rng.pick(&kinds);
        let mut len = self.length();
        let hint = match kind {
            Kind::HintFree => self.free_address(len).0,
            Kind::HintTight => {
                let (s, e) = self.free_address(len).1;
                if s < e && e - s <= 64 * GIB {
                    len = e - s;
                }
                if self.rng.percent(50) {
                    s
                } else {
                    e.saturating_sub(len)
                }
            }
            Kind::HintTaken => self.taken_address(),
            Kind::HintGuard | Kind::HintGuardFit => {
                len = self.rng.log_uniform(1, 64) * PAGE;
                match self.random_growsdown(false) {
                    Some(s) if kind == Kind::HintGuard => {
                        let inside = self.rng.between(1, STACK_GUARD_GAP / PAGE) * PAGE;
                        (s.saturating_sub(STACK_GUARD_GAP) + inside).saturating_sub(len)
                    }
                    Some(s) => {
                        let shift = self.rng.pick(&[0, PAGE, PAGE.wrapping_neg()]);
                        s.saturating_sub(STACK_GUARD_GAP + len).wrapping_add(shift)
                    }
                    None => self.free_address(len).0,
                }
            }
            Kind::HintUnaligned => self.free_address(len).0 + self.rng.between(1, PAGE - 1),
            Kind::HintTiny => self.rng.between(1, 0x1fff),
            Kind::HintBelowFloor => {
                let h = self.rng.between(0x2000, self.floor.max(0x2001) - 1);
                if self.rng.percent(50) {
                    page_down(h)
                } else {
                    h
                }
            }
            Kind::HintAbove47 => match self.rng.below(4) {
                0 => 1 << 47,
                1 => DEFAULT_MAP_WINDOW + self.rng.between(1, 64) * PAGE,
                2 => page_down(u64::MAX),
                _ => self.rng.log_uniform(1 << 47, u64::MAX),
            },
            Kind::HintCross47 => {
                len = len.clamp(2 * PAGE, 1 << 46);
                DEFAULT_MAP_WINDOW - page_down(len / 2)
            }
            _ => {
                // HintTop: the top of user space (the stack), or right under the stack.
                if self.rng.percent(50) {
                    page_down(TASK_SIZE.saturating_sub(len))
                } else {
                    self.stack_start.saturating_sub(page_up(len))
                }
            }
        };
        let mut req = Request::new(kind, len, hint, FixedKind::No);
        req.map32bit = self.rng.percent(5);
        req
    }

    fn noreplace(&mut self) -> Request {
        let kinds = [
            Kind::NoReplaceFree,
            Kind::NoReplaceFree,
            Kind::NoReplaceTight,
            Kind::NoReplaceTaken,
            Kind::NoReplaceOwn,
            Kind::NoReplaceUnderGrowsdown,
            Kind::NoReplaceLow,
            Kind::NoReplaceUnaligned,
            Kind::NoReplaceAboveTask,
        ];
        let mut kind = self.rng.pick(&kinds);
        let mut len = 0;
        let mut addr = 0;
        match kind {
            Kind::NoReplaceFree | Kind::NoReplaceTight | Kind::NoReplaceUnaligned => {
                len = self.length();
                let (a, (s, e)) = self.free_address(len);
                addr = a;
                if kind == Kind::NoReplaceTight && e - s <= 64 * GIB {
                    (addr, len) = (s, e - s);
                } else if addr.saturating_add(len) > e {
                    len = self.rng.maybe_unaligned(page_down((e - addr).max(PAGE)));
                }
                if kind == Kind::NoReplaceUnaligned {
                    addr += self.rng.between(1, PAGE - 1);
                }
                if self.in_margins(addr, addr.saturating_add(len)) {
                    kind = Kind::NoReplaceTaken;
                }
            }
            Kind::NoReplaceOwn => match self.random_owned() {
                Some((s, e)) => (addr, len) = (s, e - s),
                None => kind = Kind::NoReplaceTaken,
            },
            Kind::NoReplaceUnderGrowsdown => match self.random_growsdown(true) {
                Some(s) => {
                    len = self.rng.log_uniform(1, 16) * PAGE;
                    addr = s.saturating_sub(len) + self.rng.pick(&[0, 0, 0, PAGE]);
                }
                None => kind = Kind::NoReplaceTaken,
            },
            Kind::NoReplaceLow => {
                addr = page_down(self.rng.between(self.low_fixed, self.floor.max(1) - 1));
                let pages = self.rng.log_uniform(1, 32);
                len = self.rng.maybe_unaligned(pages * PAGE);
            }
            Kind::NoReplaceAboveTask => {
                (addr, len) = self.rng.pick(&[
                    (TASK_SIZE, PAGE),
                    (TASK_SIZE - PAGE, 2 * PAGE),
                    (1 << 47, PAGE),
                    (1 << 48, 64 * PAGE),
                    (page_down(u64::MAX), PAGE),
                    (page_down(u64::MAX) - PAGE, 4 * PAGE),
                ]);
            }
            _ => {}
        }
        if kind == Kind::NoReplaceTaken {
            addr = self.taken_address();
            let pages = self.rng.log_uniform(1, 16);
            len = self.rng.maybe_unaligned(pages * PAGE);
        }
        Request::new(kind, len, addr, FixedKind::NoReplace)
    }

    fn fixed_own(&mut self) -> Request {
        let Some((a, b)) = self.random_owned() else {
            return self.plain();
        };
        let pages = (b - a) / PAGE;
        let kind = self.rng.pick(&[
            Kind::FixedOwn,
            Kind::FixedOwn,
            Kind::FixedOwnExact,
            Kind::FixedSpan,
            Kind::FixedUnaligned,
        ]);
        let (addr, len) = match kind {
            Kind::FixedOwnExact => (a, b - a),
            Kind::FixedUnaligned => (a + self.rng.between(1, PAGE - 1), PAGE),
            Kind::FixedSpan => {
                let first = pages - self.rng.between(1, pages.min(16));
                let beyond = self.rng.log_uniform(1, 64) * PAGE;
                (a + first * PAGE, b - a - first * PAGE + beyond)
            }
            _ => {
                let first = self.rng.below(pages);
                let n = self.rng.log_uniform(1, pages - first);
                (a + first * PAGE, self.rng.maybe_unaligned(n * PAGE))
            }
        };
        Request::new(kind, len, addr, FixedKind::Fixed)
    }

    /// Whether `[start, end)` touches the space fill phases leave free for the process.
    fn in_margins(&self, start: u64, end: u64) -> bool {
        let brk = page_up(program_break());
        let stack_lo = self.stack_start.saturating_sub(STACK_MARGIN);
        (start < brk.saturating_add(BRK_MARGIN) && end > brk) || end > stack_lo
    }

    /// A random page in a random free gap of the model above the floor, placed so that
    /// `len` fits when it can; also returns the gap.
    fn free_address(&mut self, len: u64) -> (u64, (u64, u64)) {
        let count = free_gaps(&self.model, self.floor).count() as u64;
        let pick = self.rng.below(count) as usize;
        let Some((s, e)) = free_gaps(&self.model, self.floor).nth(pick) else {
            return (self.floor, (self.floor, self.floor));
        };
        let room = page_up(len).min(e - s);
        let slots = (e - s - room) / PAGE + 1;
        (s + self.rng.below(slots) * PAGE, (s, e))
    }

    /// An address inside a random VMA of the model.
    fn taken_address(&mut self) -> u64 {
        if self.model.is_empty() {
            return self.floor;
        }
        let v = self.model[self.rng.below(self.model.len() as u64) as usize];
        v.start + self.rng.below((v.end - v.start) / PAGE) * PAGE
    }

    /// The start of a random grows-down VMA of the model (only the recorder's own ones with
    /// `own`).
    fn random_growsdown(&mut self, own: bool) -> Option<u64> {
        let ok = |v: &&Vma| v.growsdown && (!own || self.owned.covers(v.start, v.end));
        let count = self.model.iter().filter(ok).count() as u64;
        let pick = self.rng.below(count) as usize;
        self.model.iter().filter(ok).nth(pick).map(|v| v.start)
    }

    fn random_owned(&mut self) -> Option<(u64, u64)> {
        if self.owned.0.is_empty() {
            return None;
        }
        Some(self.owned.0[self.rng.below(self.owned.0.len() as u64) as usize])
    }
}

/// The free gaps `[start, end)` of a sorted VMA list within `[floor, TASK_SIZE)`.
fn free_gaps(vmas: &[Vma], floor: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut prev = floor;
    vmas.iter()
        .map(|v| (v.start, v.end))
        .chain([(TASK_SIZE, TASK_SIZE)])
        .filter_map(move |(start, end)| {
            let gap = (prev, start.min(TASK_SIZE));
            prev = prev.max(end);
            (gap.0 < gap.1).then_some(gap)
        })
}

fn write_map<W: Write>(out: &mut W, v: &Vma) -> io::Result<()> {
    writeln!(
        out,
        "{{\"op\": \"map\", \"start\": {}, \"end\": {}{}}}",
        Hex(v.start),
        Hex(v.end),
        if v.growsdown {
            ", \"flags\": \"growsdown\""
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmap_base_matches_the_kernel() {
        assert_eq!(mmap_base(8 * MIB), 0x7fff_f7ff_f000);
        assert_eq!(mmap_base(GIB), 0x7fff_bfef_f000);
        assert_eq!(mmap_base(RLIM_INFINITY), 0x1555_5555_6000);
        assert_eq!(mmap_base(0), 0x7fff_f7ff_f000);
    }

    #[test]
    fn kinds_index_their_table() {
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{}", kind.name());
        }
    }

    #[test]
    fn layout_names_round_trip() {
        for l in Layout::ALL {
            assert_eq!(Layout::from_name(l.name()), Some(l));
        }
        assert_eq!(Layout::from_name("2m"), None);
    }

    fn vma(start: u64, end: u64) -> Vma {
        Vma {
            start,
            end,
            growsdown: false,
        }
    }

    #[test]
    fn vmas_unmap_splits_and_trims() {
        let mut v = vec![
            vma(0x1000, 0x5000),
            vma(0x6000, 0x8000),
            vma(0x9000, 0xa000),
        ];
        vmas_unmap(&mut v, 0x2000, 0x3000);
        assert_eq!(
            v,
            [
                vma(0x1000, 0x2000),
                vma(0x3000, 0x5000),
                vma(0x6000, 0x8000),
                vma(0x9000, 0xa000)
            ]
        );
        vmas_unmap(&mut v, 0x4000, 0x9800);
        assert_eq!(
            v,
            [
                vma(0x1000, 0x2000),
                vma(0x3000, 0x4000),
                vma(0x9800, 0xa000)
            ]
        );
        assert!(!vmas_insert(&mut v, vma(0x1800, 0x3000)));
        assert!(vmas_insert(&mut v, vma(0x2000, 0x3000)));
        assert_eq!(v.len(), 4);
    }

    #[test]
    fn range_set_merges_and_splits() {
        let mut r = RangeSet(Vec::new());
        r.insert(0x1000, 0x2000);
        r.insert(0x3000, 0x4000);
        r.insert(0x2000, 0x3000);
        assert_eq!(r.0, [(0x1000, 0x4000)]);
        assert!(r.covers(0x1000, 0x4000));
        r.remove(0x2000, 0x2800);
        assert_eq!(r.0, [(0x1000, 0x2000), (0x2800, 0x4000)]);
        assert!(!r.covers(0x1000, 0x3000));
        assert!(r.covers(0x3000, 0x3000));
        r.insert(0x0, 0x5000);
        assert_eq!(r.0, [(0x0, 0x5000)]);
        r.remove(0x0, 0x5000);
        assert!(r.0.is_empty());
    }

    #[test]
    fn rng_ranges() {
        let mut rng = Rng(7);
        for _ in 0..1000 {
            let x = rng.log_uniform(3, 100);
            assert!((3..=100).contains(&x));
            let y = rng.between(5, 9);
            assert!((5..=9).contains(&y));
            assert!(rng.log_uniform(1 << 47, u64::MAX) >= 1 << 47);
        }
        assert_ne!(rng.between(0, u64::MAX), rng.between(0, u64::MAX));
    }
}
