//! `svmap demo`: the whole SVM story on the real address space of this
//! process and a device peer process, in a few seconds, with no GPU.
//!
//! 1. (a) inspect this process against a device with `va_bits` bits;
//! 2. (b) start the device peer and reserve a window free in both processes;
//! 3. (c) allocate SVM buffers at identical addresses in both;
//! 4. (d) build a pointer-linked list on the CPU side that the device walks
//!    through its MMU, and compare count and checksum;
//! 5. (e) free a buffer and show that the device's next access faults;
//! 6. (f) show that memory allocated before the device was set up (above
//!    `2^va_bits` in the top-down layout) is refused with a typed error;
//! 7. (g) draw both address spaces as an SVG ([`svmap_viz`]).
//!
//! [`inspect_svg`] draws an [`inspect::Report`] for `svmap inspect --svg`.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use svmap_svm::{DeviceConfig, Fault, SvmSpace};
use svmap_viz::{hex, human, Kind, Picture, Space};

use serde_json::{json, Value};
use svmap_linux::inspect::{self, Visibility};
use svmap_linux::maps::{self, MapsEntry, Target};
use svmap_linux::probe;
use svmap_linux::sys::PAGE;
use svmap_peer::{
    checksum_step, device_peer_command, Peer, PeerConfig, PeerError, SvmBuf, CHECKSUM_INIT,
    NODE_NEXT, NODE_SIZE, NODE_VALUE,
};

/// Nodes of the demo's linked list.
pub const LIST_NODES: u64 = 100_000;
/// The name of the demo's device in the SVM model.
pub const DEVICE: &str = "gpu0";
/// The size of the allocation made before the device is set up.
pub const EARLY_ALLOC: usize = 64 << 20;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoOptions {
    /// Device address bits (20..=56).
    pub va_bits: u32,
    /// SVM buffers (2..=256; the list is spread over all of them).
    pub buffers: u32,
    /// Where to write the picture (none: no picture).
    pub svg: Option<PathBuf>,
    /// Print JSON instead of text (used by the command line; the library
    /// returns the same [`DemoReport`] either way).
    pub json: bool,
}

impl Default for DemoOptions {
    /// 40 bits, 8 buffers, `./svmap-demo.svg`, text.
    fn default() -> Self {
        DemoOptions {
            va_bits: 40,
            buffers: 8,
            svg: Some(PathBuf::from("svmap-demo.svg")),
            json: false,
        }
    }
}

/// A step that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoError {
    /// The step (`"(b) start the device peer"`, ...).
    pub step: &'static str,
    /// The failure.
    pub message: String,
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "demo step {} failed: {}", self.step, self.message)
    }
}

impl std::error::Error for DemoError {}

/// The failure of `step`: the error's message, and, when the process runs
/// under an address-space limit, that limit (the usual cause of `ENOMEM`
/// under `ulimit -v`, in this process or in the peer, which inherits it).
fn fail<E: fmt::Display>(step: &'static str) -> impl FnOnce(E) -> DemoError {
    move |e| {
        let mut message = e.to_string();
        if !message.contains("RLIMIT_AS") {
            message.push_str(&address_space_note());
        }
        DemoError { step, message }
    }
}

/// Step (a): this process as the device sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectStep {
    /// VMAs of this process.
    pub vmas: usize,
    /// VMAs wholly or partly at or above the limit.
    pub vmas_above: usize,
    /// Mapped bytes at or above the limit.
    pub mapped_above_bytes: u64,
    /// Free bytes below the limit.
    pub free_below_bytes: u64,
    /// The largest free window below the limit.
    pub largest_free: (u64, u64),
    /// Time taken.
    pub time: Duration,
}

/// Step (b): the peer and the common window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStep {
    /// The peer's pid.
    pub pid: u32,
    /// The window reserved in both processes.
    pub window: (u64, u64),
    /// Agreement rounds (1 without races).
    pub tries: u32,
    /// Process start plus window agreement.
    pub time: Duration,
}

/// Step (c): the buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuffersStep {
    /// The buffers, in allocation order.
    pub buffers: Vec<SvmBuf>,
    /// Every buffer is mapped at the identical range in the peer (checked in
    /// `/proc/PEER/maps`), inside the window and below the limit.
    pub identical_in_peer: bool,
    /// Mean time per allocation (memfd, map here, pass, map there, PTEs).
    pub per_alloc: Duration,
}

/// Step (d): the linked list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListStep {
    /// Nodes built.
    pub nodes: u64,
    /// Checksum computed on the CPU while building.
    pub cpu_checksum: u64,
    /// Nodes the device visited.
    pub device_count: u64,
    /// The device's checksum.
    pub device_checksum: u64,
    /// Time to build on the CPU.
    pub build: Duration,
    /// Time of the device walk (including the round trip).
    pub walk: Duration,
    /// Device TLB hits during the walk.
    pub tlb_hits: u64,
    /// Device TLB misses during the walk.
    pub tlb_misses: u64,
    /// Device page-table walks during the walk.
    pub page_walks: u64,
    /// Device page faults during the walk.
    pub device_faults: u64,
}

impl ListStep {
    /// Count and checksum agree.
    pub fn matches(&self) -> bool {
        self.device_count == self.nodes && self.device_checksum == self.cpu_checksum
    }
}

/// Step (e): a freed buffer faults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreeStep {
    /// The freed buffer.
    pub buffer: SvmBuf,
    /// Time of the free (peer invalidation first, then the CPU side).
    pub free_time: Duration,
    /// The fault of the device's next access (the list walk reaching the
    /// freed buffer): `(kind, address)`, or `None` if it did not fault.
    pub fault: Option<(Fault, u64)>,
    /// Device invalidations counted by the peer.
    pub invalidations: u64,
}

/// Step (f): memory above the limit is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AboveStep {
    /// The range of the allocation made before the device was set up.
    pub range: (u64, u64),
    /// The refusal (the typed error's message), or `None` if the range lies
    /// below the limit and the device can use it.
    pub refused: Option<String>,
    /// VMAs of this process the SVM model reports above the limit.
    pub vmas_above: usize,
}

/// Everything the demo did, with its numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoReport {
    /// Device address bits.
    pub va_bits: u32,
    /// `2^va_bits`.
    pub limit: u64,
    /// This process.
    pub pid: u32,
    /// (a)
    pub inspect: InspectStep,
    /// (b)
    pub peer: PeerStep,
    /// (c)
    pub buffers: BuffersStep,
    /// (d)
    pub list: ListStep,
    /// (e)
    pub free: FreeStep,
    /// (f)
    pub above: AboveStep,
    /// (g) the picture's path and size in bytes.
    pub svg: Option<(PathBuf, usize)>,
    /// How the peer ended.
    pub peer_exit: String,
    /// The whole run.
    pub total: Duration,
}

/// Runs the demo with the `svmap device-peer` of this executable
/// ([`device_peer_command`]).
pub fn run(opts: &DemoOptions) -> Result<DemoReport, DemoError> {
    let cmd = device_peer_command().map_err(fail("(b) start the device peer"))?;
    run_with(opts, cmd)
}

/// Runs the demo with `peer` as the device peer command (tests pass their
/// own re-executed binary, as for [`Peer::spawn`]).
pub fn run_with(opts: &DemoOptions, peer: Command) -> Result<DemoReport, DemoError> {
    let t0 = Instant::now();
    // The demo reserves a 256 MiB window below 2^va_bits: at least 30 bits.
    if !(30..=56).contains(&opts.va_bits) {
        return Err(DemoError {
            step: "options",
            message: format!(
                "--va-bits {} is not in 30..=56 (the demo reserves a 256 MiB window)",
                opts.va_bits
            ),
        });
    }
    if !(2..=256).contains(&opts.buffers) {
        return Err(DemoError {
            step: "options",
            message: format!("--buffers {} is not in 2..=256", opts.buffers),
        });
    }
    let va_bits = opts.va_bits;
    let limit = 1u64 << va_bits;

    // (f, first half) A program allocates before any device is set up: in
    // the top-down layout a large allocation lands near mmap_base, far above
    // a 40-bit device's limit.
    // Fallible: under a small address-space limit (`ulimit -v`) this is a
    // failed step, not an abort.
    let mut early: Vec<u8> = Vec::new();
    early.try_reserve_exact(EARLY_ALLOC).map_err(|e| {
        let what = format!(
            "a {} Vec could not be allocated: {e}",
            human(EARLY_ALLOC as u64)
        );
        fail("(f) allocate memory before the device is set up")(what)
    })?;
    early.resize(EARLY_ALLOC, 0);
    let early_range = {
        let s = early.as_ptr() as u64;
        (
            s & !(PAGE - 1),
            (s + EARLY_ALLOC as u64).next_multiple_of(PAGE),
        )
    };

    // (a) Inspect.
    let step = "(a) inspect this process";
    let t = Instant::now();
    let rep = inspect::report(Target::SelfProcess, va_bits).map_err(fail(step))?;
    let inspect = InspectStep {
        vmas: rep.vmas.len(),
        vmas_above: rep
            .vmas
            .iter()
            .filter(|v| v.visibility != Visibility::Visible)
            .count(),
        mapped_above_bytes: rep.mapped_above_bytes,
        free_below_bytes: rep.free_bytes,
        largest_free: rep.largest_free.first().copied().unwrap_or((0, 0)),
        time: t.elapsed(),
    };

    // (b) The peer and the common window.
    let step = "(b) start the device peer";
    let nodes_per_buf = LIST_NODES.div_ceil(u64::from(opts.buffers));
    let buf_len = (nodes_per_buf * NODE_SIZE).next_multiple_of(64 << 10);
    let total = buf_len * u64::from(opts.buffers);
    let window_len = (256u64 << 20).max((4 * total).next_power_of_two());
    let t = Instant::now();
    let mut p = Peer::spawn(peer, &PeerConfig::new(va_bits, window_len)).map_err(fail(step))?;
    let peer_step = PeerStep {
        pid: p.pid(),
        window: p.window(),
        tries: p.tries(),
        time: t.elapsed(),
    };

    // (c) Buffers at identical addresses.
    let step = "(c) allocate SVM buffers";
    let t = Instant::now();
    let mut bufs = Vec::new();
    for _ in 0..opts.buffers {
        bufs.push(p.alloc(buf_len).map_err(fail(step))?);
    }
    let per_alloc = t.elapsed() / opts.buffers;
    let pv = maps::read_view(Target::Pid(p.pid())).map_err(fail(step))?;
    let (ws, we) = p.window();
    let identical_in_peer = bufs.iter().all(|b| {
        b.addr >= ws
            && b.end() <= we
            && b.end() <= limit
            && pv
                .entry_at(b.addr)
                .is_some_and(|e| e.start == b.addr && e.end == b.end() && e.perms.shared)
    });

    // (d) The list: node i in buffer i % k, so consecutive nodes are in
    // different buffers; `next` is a raw address valid on both sides.
    let step = "(d) build and walk the list";
    let k = bufs.len() as u64;
    let node = |i: u64| bufs[(i % k) as usize].addr + (i / k) * NODE_SIZE;
    let t = Instant::now();
    let mut h = CHECKSUM_INIT;
    let mut x = 0x5eed_u64;
    for i in 0..LIST_NODES {
        let next = if i + 1 < LIST_NODES { node(i + 1) } else { 0 };
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let value = x ^ (x >> 29);
        h = checksum_step(h, value);
        p.write_u64(node(i) + NODE_NEXT, next).map_err(fail(step))?;
        p.write_u64(node(i) + NODE_VALUE, value)
            .map_err(fail(step))?;
    }
    let build = t.elapsed();
    let before = p.device_stats().map_err(fail(step))?;
    let t = Instant::now();
    let w = p.walk_list(node(0), LIST_NODES + 1).map_err(fail(step))?;
    let walk = t.elapsed();
    let after = p.device_stats().map_err(fail(step))?;
    let list = ListStep {
        nodes: LIST_NODES,
        cpu_checksum: h,
        device_count: w.count,
        device_checksum: w.checksum,
        build,
        walk,
        tlb_hits: after.tlb_hits - before.tlb_hits,
        tlb_misses: after.tlb_misses - before.tlb_misses,
        page_walks: after.walks - before.walks,
        device_faults: after.faults - before.faults,
    };

    // (e) Free the buffer holding node 1: the device's next walk faults there.
    let step = "(e) free a buffer";
    let victim = bufs[1];
    let t = Instant::now();
    p.free(victim).map_err(fail(step))?;
    let free_time = t.elapsed();
    let fault = match p.walk_list(node(0), LIST_NODES + 1) {
        Err(PeerError::DeviceFault { fault, addr, .. }) => Some((fault, addr)),
        Ok(_) => None,
        Err(e) => return Err(fail(step)(e)),
    };
    let invalidations = p.device_stats().map_err(fail(step))?.invalidations;
    let free = FreeStep {
        buffer: victim,
        free_time,
        fault,
        invalidations,
    };

    // (f) Registering the early allocation for the device is refused.
    let step = "(f) register memory above the limit";
    let own = maps::read_view(Target::SelfProcess).map_err(fail(step))?;
    let mut svm: SvmSpace = SvmSpace::default();
    svm.add_device(DeviceConfig::new(DEVICE, va_bits))
        .map_err(fail(step))?;
    for e in &own.entries {
        // Mappings the model cannot hold (beyond its task size) are skipped;
        // the check below is on the real addresses either way.
        let _ = svm.cpu_map(e.start, e.end, e.growsdown);
    }
    let vmas_above = svm.vmas_above_limit(DEVICE).map_err(fail(step))?.len();
    let refused = check_device_addressable(&svm, early_range.0, early_range.1)
        .err()
        .map(|e| e.to_string());
    let above = AboveStep {
        range: early_range,
        refused,
        vmas_above,
    };

    // (g) The picture.
    let step = "(g) write the picture";
    let svg = match &opts.svg {
        None => None,
        Some(path) => {
            let pic = demo_picture(
                &own,
                &pv,
                va_bits,
                &peer_step,
                &bufs,
                victim,
                early_range,
                above.refused.is_some(),
            );
            let text = pic.to_svg();
            std::fs::write(path, &text).map_err(|e| DemoError {
                step,
                message: format!("{}: {e}", path.display()),
            })?;
            Some((path.clone(), text.len()))
        }
    };
    drop(early);
    let peer_exit = p.shutdown().to_string();
    Ok(DemoReport {
        va_bits,
        limit,
        pid: std::process::id(),
        inspect,
        peer: peer_step,
        buffers: BuffersStep {
            buffers: bufs,
            identical_in_peer,
            per_alloc,
        },
        list,
        free,
        above,
        svg,
        peer_exit,
        total: t0.elapsed(),
    })
}

/// A note naming the address-space limit and this process's size when an
/// `RLIMIT_AS` is set, to explain an allocation failure; empty otherwise.
fn address_space_note() -> String {
    match (
        svmap_linux::reserve::rlimit_as(),
        svmap_linux::reserve::vm_size(),
    ) {
        (Some(limit), Some(size)) => format!(
            " (this process and the device peer run under an address-space limit, \
             RLIMIT_AS or ulimit -v, of {}; this process maps {})",
            human(limit),
            human(size)
        ),
        _ => String::new(),
    }
}

/// Checks that CPU memory `[start, end)` can be handed to the demo's device
/// in `svm`: the typed [`svmap_svm::SvmError::AboveDeviceLimit`] names the
/// range and the limit if not.
pub fn check_device_addressable(
    svm: &SvmSpace,
    start: u64,
    end: u64,
) -> Result<(), svmap_svm::SvmError> {
    svm.check_addressable(DEVICE, start, end)
}

/// A label for a cluster of maps entries: up to three distinct names and
/// the VMA count.
fn cluster_label(es: &[&MapsEntry]) -> String {
    let mut names: Vec<String> = Vec::new();
    for e in es {
        let n = e.name_lossy();
        let n = n.rsplit('/').next().unwrap_or("").to_owned();
        let n = if n.is_empty() { "anon".to_owned() } else { n };
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let more = names.len().saturating_sub(2);
    names.truncate(2);
    let mut s = names.join(", ");
    if more > 0 {
        s.push_str(&format!(" +{more}"));
    }
    if es.len() > 1 {
        s.push_str(&format!(" ({} VMAs)", es.len()));
    }
    s
}

/// Adds `entries` (minus those overlapping `skip`) as clustered regions:
/// neighbours closer than 64 MiB with nothing of `skip` between them are
/// one region.
fn add_clusters(space: &mut Space, entries: &[MapsEntry], skip: &[(u64, u64)], kind: Kind) {
    const JOIN: u64 = 64 << 20;
    let overlaps = |s: u64, e: u64| skip.iter().any(|&(a, b)| a < e && s < b);
    let mut cur: Vec<&MapsEntry> = Vec::new();
    let flush = |space: &mut Space, cur: &mut Vec<&MapsEntry>| {
        if let (Some(f), Some(l)) = (cur.first(), cur.last()) {
            space.region(f.start, l.end, kind, cluster_label(cur));
        }
        cur.clear();
    };
    for e in entries {
        if overlaps(e.start, e.end) {
            flush(space, &mut cur);
            continue;
        }
        if let Some(l) = cur.last() {
            if e.start - l.end > JOIN || overlaps(l.end, e.start) {
                flush(space, &mut cur);
            }
        }
        cur.push(e);
    }
    flush(space, &mut cur);
}

#[allow(clippy::too_many_arguments)]
fn demo_picture(
    own: &maps::View,
    peer: &maps::View,
    va_bits: u32,
    ps: &PeerStep,
    bufs: &[SvmBuf],
    freed: SvmBuf,
    early: (u64, u64),
    refused: bool,
) -> Picture {
    let limit = 1u64 << va_bits;
    let top = 1u64 << probe::user_va_bits();
    let floor = probe::mmap_floor().unwrap_or(PAGE);
    let (ws, we) = ps.window;
    let skip = [(ws, we), early];
    let mut cpu = Space::new(format!("CPU: this process (pid {})", std::process::id()));
    cpu.limit(limit);
    add_clusters(&mut cpu, &own.entries, &skip, Kind::Mapping);
    cpu.region(
        early.0,
        early.1,
        if refused {
            Kind::AboveLimit
        } else {
            Kind::Mapping
        },
        if refused {
            "early Vec: refused for the device"
        } else {
            "early Vec"
        },
    );
    let mut dev = Space::new(format!("device: peer pid {}, {va_bits}-bit MMU", ps.pid));
    dev.limit(limit).window(floor, limit);
    if top > limit {
        dev.region(
            limit,
            top,
            Kind::Unreachable,
            format!("unreachable: >= 2^{va_bits}"),
        );
    }
    let below: Vec<MapsEntry> = peer
        .entries
        .iter()
        .filter(|e| e.start < limit)
        .cloned()
        .collect();
    add_clusters(&mut dev, &below, &skip, Kind::DeviceOnly);
    for sp in [&mut cpu, &mut dev] {
        sp.region(ws, we, Kind::Reservation, "SVM window (reserved in both)");
        for (i, b) in bufs.iter().enumerate() {
            if *b == freed {
                sp.region(b.addr, b.end(), Kind::Freed, format!("buffer {i}: freed"));
            } else {
                sp.region(
                    b.addr,
                    b.end(),
                    Kind::SvmBuffer,
                    format!("buffer {i} (id {})", b.id),
                );
            }
        }
    }
    Picture::new(format!(
        "svmap demo: CPU and a {va_bits}-bit device at identical addresses"
    ))
    .note(format!(
        "window [{}, {}) reserved in both processes; {} SVM buffers mapped at the same addresses",
        hex(ws),
        hex(we),
        bufs.len()
    ))
    .note(format!(
        "the device walked a {LIST_NODES}-node list through its MMU; buffer at {} freed: its next access faults",
        hex(freed.addr)
    ))
    .note(format!(
        "memory allocated before the device was set up lies above 2^{va_bits}: refused"
    ))
    .space(cpu)
    .space(dev)
    .range(0, top.max(limit))
}

/// The picture of `svmap inspect --svg`: one column with the report's VMAs
/// (visible ones as mappings, partly or wholly invisible ones as above the
/// limit), its largest free windows, the device window `[floor, limit)` and
/// the limit.
pub fn inspect_svg(report: &inspect::Report) -> String {
    let top = (1u64 << probe::user_va_bits()).max(report.limit);
    let mut sp = Space::new(format!("process {}", report.pid));
    sp.limit(report.limit).window(report.floor, report.limit);
    // Cluster neighbouring VMAs of the same visibility (as in the demo).
    let mut i = 0;
    let v = &report.vmas;
    while i < v.len() {
        let mut j = i + 1;
        while j < v.len()
            && v[j].visibility == v[i].visibility
            && v[j].start - v[j - 1].end <= 64 << 20
        {
            j += 1;
        }
        let kind = if v[i].visibility == Visibility::Visible {
            Kind::Mapping
        } else {
            Kind::AboveLimit
        };
        let mut names: Vec<String> = Vec::new();
        for x in &v[i..j] {
            let n = x.name.rsplit('/').next().unwrap_or("");
            let n = if n.is_empty() { "anon" } else { n };
            if !names.iter().any(|m| m == n) {
                names.push(n.to_owned());
            }
        }
        let more = names.len().saturating_sub(3);
        names.truncate(3);
        let mut label = names.join(", ");
        if more > 0 {
            label.push_str(&format!(" +{more}"));
        }
        if j - i > 1 {
            label.push_str(&format!(" ({} VMAs)", j - i));
        }
        sp.region(v[i].start, v[j - 1].end, kind, label);
        i = j;
    }
    for (n, &(s, e)) in report.largest_free.iter().enumerate() {
        sp.region(s, e, Kind::Free, format!("free window #{}", n + 1));
    }
    if top > report.limit {
        sp.region(
            report.limit,
            top,
            Kind::Unreachable,
            format!("unreachable: >= 2^{}", report.va_bits),
        );
    }
    Picture::new(format!(
        "svmap inspect: process {} as a {}-bit device sees it",
        report.pid, report.va_bits
    ))
    .note(format!(
        "{} VMAs; {} mapped above the limit; {} free below it in {} holes",
        report.vmas.len(),
        human(report.mapped_above_bytes),
        human(report.free_bytes),
        report.free_holes
    ))
    .space(sp)
    .range(0, top)
    .to_svg()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0} us", d.as_secs_f64() * 1e6)
}

impl DemoReport {
    /// Every step had the expected outcome: the list matched, the freed
    /// buffer faulted `unmapped` at its address, the early allocation was
    /// refused (when it lies above the limit) and the buffers are identical
    /// in the peer.
    pub fn ok(&self) -> bool {
        self.buffers.identical_in_peer
            && self.list.matches()
            && self.free.fault == Some((Fault::Unmapped, self.free.buffer.addr))
            && (self.above.refused.is_some() || self.above.range.1 <= self.limit)
    }

    /// The report as one JSON object (addresses as `"0x..."` strings,
    /// times in seconds).
    pub fn to_json(&self) -> Value {
        let h = |v: u64| Value::String(format!("{v:#x}"));
        let bufs: Vec<Value> = self
            .buffers
            .buffers
            .iter()
            .map(|b| json!({"addr": h(b.addr), "len": b.len, "id": b.id}))
            .collect();
        let (fault_kind, fault_addr) = match self.free.fault {
            Some((f, a)) => (Value::String(f.to_string()), h(a)),
            None => (Value::Null, Value::Null),
        };
        let i = &self.inspect;
        let l = &self.list;
        json!({
            "ok": self.ok(),
            "pid": self.pid,
            "va_bits": self.va_bits,
            "limit": h(self.limit),
            "total_s": self.total.as_secs_f64(),
            "inspect": {
                "vmas": i.vmas,
                "vmas_above": i.vmas_above,
                "mapped_above_bytes": i.mapped_above_bytes,
                "free_below_bytes": i.free_below_bytes,
                "largest_free": {"start": h(i.largest_free.0), "end": h(i.largest_free.1)},
                "time_s": i.time.as_secs_f64(),
            },
            "peer": {
                "pid": self.peer.pid,
                "window": {"start": h(self.peer.window.0), "end": h(self.peer.window.1)},
                "tries": self.peer.tries,
                "time_s": self.peer.time.as_secs_f64(),
            },
            "buffers": {
                "count": self.buffers.buffers.len(),
                "identical_in_peer": self.buffers.identical_in_peer,
                "per_alloc_s": self.buffers.per_alloc.as_secs_f64(),
                "list": bufs,
            },
            "list": {
                "nodes": l.nodes,
                "cpu_checksum": h(l.cpu_checksum),
                "device_count": l.device_count,
                "device_checksum": h(l.device_checksum),
                "matches": l.matches(),
                "build_s": l.build.as_secs_f64(),
                "walk_s": l.walk.as_secs_f64(),
                "tlb_hits": l.tlb_hits,
                "tlb_misses": l.tlb_misses,
                "page_walks": l.page_walks,
                "device_faults": l.device_faults,
            },
            "free": {
                "addr": h(self.free.buffer.addr),
                "len": self.free.buffer.len,
                "time_s": self.free.free_time.as_secs_f64(),
                "fault": fault_kind,
                "fault_addr": fault_addr,
                "invalidations": self.free.invalidations,
            },
            "above": {
                "start": h(self.above.range.0),
                "end": h(self.above.range.1),
                "refused": self.above.refused,
                "vmas_above": self.above.vmas_above,
            },
            "svg": self.svg.as_ref().map(|(p, _)| p.display().to_string()),
            "peer_exit": self.peer_exit,
        })
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.va_bits;
        let i = &self.inspect;
        writeln!(
            f,
            "svmap demo: a {b}-bit device and this process (pid {}) at identical addresses",
            self.pid
        )?;
        writeln!(
            f,
            "(a) inspect: {} VMAs, {} of them above 2^{b} ({} mapped above the limit); \
             largest free window below it [{}, {}) = {} ({})",
            i.vmas,
            i.vmas_above,
            human(i.mapped_above_bytes),
            hex(i.largest_free.0),
            hex(i.largest_free.1),
            human(i.largest_free.1 - i.largest_free.0),
            ms(i.time)
        )?;
        let p = &self.peer;
        writeln!(
            f,
            "(b) device peer pid {} started; window [{}, {}) ({}) reserved in both processes \
             in {} round(s), {}",
            p.pid,
            hex(p.window.0),
            hex(p.window.1),
            human(p.window.1 - p.window.0),
            p.tries,
            ms(p.time)
        )?;
        let bs = &self.buffers;
        let first = bs.buffers.first().map_or(0, |x| x.addr);
        let last = bs.buffers.last().map_or(0, |x| x.end());
        writeln!(
            f,
            "(c) {} SVM buffers of {} at [{}, {}), {} at the identical addresses in the peer; {}/buffer",
            bs.buffers.len(),
            human(bs.buffers.first().map_or(0, |x| x.len)),
            hex(first),
            hex(last),
            if bs.identical_in_peer {
                "all mapped"
            } else {
                "NOT all mapped"
            },
            us(bs.per_alloc)
        )?;
        let l = &self.list;
        writeln!(
            f,
            "(d) list of {} nodes built by the CPU in {}; the device walked {} nodes in {} \
             (TLB {} hits / {} misses, {} page-table walks, {} faults): checksum {:#018x} {}",
            l.nodes,
            ms(l.build),
            l.device_count,
            ms(l.walk),
            l.tlb_hits,
            l.tlb_misses,
            l.page_walks,
            l.device_faults,
            l.device_checksum,
            if l.matches() {
                "= CPU's: match"
            } else {
                "!= CPU's: MISMATCH"
            }
        )?;
        let fr = &self.free;
        match fr.fault {
            Some((k, a)) => writeln!(
                f,
                "(e) freed buffer [{}, {}) in {} (peer invalidated first); the device's next walk \
                 faulted: {k} at {}",
                hex(fr.buffer.addr),
                hex(fr.buffer.end()),
                us(fr.free_time),
                hex(a)
            )?,
            None => writeln!(
                f,
                "(e) freed buffer [{}, {}); the device's next walk did NOT fault",
                hex(fr.buffer.addr),
                hex(fr.buffer.end())
            )?,
        }
        let a = &self.above;
        match &a.refused {
            Some(msg) => writeln!(
                f,
                "(f) a {} Vec allocated before the device was set up: refused: {msg}",
                human(a.range.1 - a.range.0)
            )?,
            None => writeln!(
                f,
                "(f) a {} Vec allocated before the device was set up lies at [{}, {}), below 2^{b}: accepted",
                human(a.range.1 - a.range.0),
                hex(a.range.0),
                hex(a.range.1)
            )?,
        }
        match &self.svg {
            Some((path, n)) => writeln!(
                f,
                "(g) picture of both address spaces: {} ({n} bytes)",
                path.display()
            )?,
            None => writeln!(f, "(g) no picture written")?,
        }
        write!(
            f,
            "{} in {}; peer {}",
            if self.ok() {
                "all steps as expected"
            } else {
                "SOME STEPS FAILED"
            },
            ms(self.total),
            self.peer_exit
        )
    }
}
