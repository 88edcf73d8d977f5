//! `svmap demo`: the SVM runtime on the real address space of this process
//! and two device processes of different widths, in well under a second,
//! with no GPU.
//!
//! The runtime is [`svmap_svm::Engine`] with [`LinuxCpu`] (this process)
//! and one [`PeerDevice`] per device (an `svmap device-peer` process
//! hosting a device MMU model):
//!
//! 1. (a) inspect this process against the first device's limit;
//! 2. (b) seed the engine with this process's mappings and start the two
//!    device processes (40 and 44 bits by default);
//! 3. (c) allocate SVM buffers for both devices; the CPU writes them and
//!    both device processes read the same bytes at the same addresses;
//! 4. (d) build a pointer-linked list on the CPU that both devices walk
//!    through their MMUs, and compare count and checksum;
//! 5. (e) one device-only region per CPU policy: a forked child touching
//!    the fault region dies with `SIGSEGV`; the CPU reads zeros from the
//!    dummy-page region while its device keeps its own data there;
//! 6. (f) free a buffer: both devices invalidate it first, and their next
//!    access faults;
//! 7. (g) show that memory allocated before the devices were set up
//!    (above `2^va_bits` in the top-down layout) is refused with a typed
//!    error;
//! 8. (h) draw the three address spaces as an SVG ([`svmap_viz`]).
//!
//! [`inspect_svg`] draws an [`inspect::Report`] for `svmap inspect --svg`.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use svmap_svm::{CpuPolicy, DeviceConfig, Engine, EngineError, Fault, SvmSpace};
use svmap_viz::{hex, human, Kind, Picture, Space};

use serde_json::{json, Value};
use svmap_core::linux::MmConfig;
use svmap_linux::inspect::{self, Visibility};
use svmap_linux::maps::{self, MapsEntry, Target};
use svmap_linux::probe;
use svmap_linux::sys::PAGE;
use svmap_peer::{
    checksum_step, device_peer_command, PeerConfig, PeerError, CHECKSUM_INIT, NODE_NEXT, NODE_SIZE,
    NODE_VALUE,
};
use svmap_runtime::{seed_from_self, touch_in_child, LinuxCpu, PeerDevice, Touch};

/// Nodes of the demo's linked list.
pub const LIST_NODES: u64 = 100_000;
/// The name of the first device (`--va-bits`); the memory allocated
/// before the devices were set up is checked against it.
pub const DEVICE: &str = "gpu0";
/// The name of the second device (`--second-va-bits`).
pub const SECOND_DEVICE: &str = "gpu1";
/// The size of the allocation made before the devices are set up.
pub const EARLY_ALLOC: usize = 64 << 20;
/// The size of each device-only region.
pub const REGION_LEN: u64 = 64 << 10;
/// The signal a CPU touch of a fault region raises.
pub const SIGSEGV: i32 = 11;

/// The engine of the demo: this process and the device processes.
pub type DemoEngine = Engine<LinuxCpu, PeerDevice>;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoOptions {
    /// Address bits of the first device (30..=56).
    pub va_bits: u32,
    /// Address bits of the second device (30..=56).
    pub second_va_bits: u32,
    /// SVM buffers (2..=256; the list is spread over all of them).
    pub buffers: u32,
    /// Where to write the picture (none: no picture).
    pub svg: Option<PathBuf>,
    /// Print JSON instead of text (used by the command line; the library
    /// returns the same [`DemoReport`] either way).
    pub json: bool,
}

impl Default for DemoOptions {
    /// Devices of 40 and 44 bits, 8 buffers, `./svmap-demo.svg`, text.
    fn default() -> Self {
        DemoOptions {
            va_bits: 40,
            second_va_bits: 44,
            buffers: 8,
            svg: Some(PathBuf::from("svmap-demo.svg")),
            json: false,
        }
    }
}

/// A step that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoError {
    /// The step (`"(b) start the device processes"`, ...).
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
/// under `ulimit -v`, in this process or in the device processes, which
/// inherit it).
fn fail<E: fmt::Display>(step: &'static str) -> impl FnOnce(E) -> DemoError {
    move |e| {
        let mut message = e.to_string();
        if !message.contains("RLIMIT_AS") {
            message.push_str(&address_space_note());
        }
        DemoError { step, message }
    }
}

/// Step (a): this process as the first device sees it.
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

/// One device process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoDevice {
    /// Its name in the engine.
    pub name: &'static str,
    /// Its address bits.
    pub va_bits: u32,
    /// The device process's pid.
    pub pid: u32,
}

/// Step (b): the engine and the device processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicesStep {
    /// The devices, in definition order.
    pub devices: Vec<DemoDevice>,
    /// Mappings of this process the engine was seeded with.
    pub seeded_vmas: usize,
    /// Seeding plus starting both device processes.
    pub time: Duration,
}

/// Step (c): the buffers, shared by both devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuffersStep {
    /// The buffers `[start, end)`, in allocation order.
    pub buffers: Vec<(u64, u64)>,
    /// Every buffer lies below every device's limit and is mapped
    /// (shared) at the identical address in every device process (checked
    /// in `/proc/PID/maps`).
    pub identical_in_devices: bool,
    /// The wrapping sum of the `u64` words the CPU wrote into the buffers.
    pub cpu_sum: u64,
    /// The same sum as each device read it through its MMU.
    pub device_sums: Vec<u64>,
    /// Mean time per allocation (CPU mapping, both devices mapping).
    pub per_alloc: Duration,
}

impl BuffersStep {
    /// Every device read what the CPU wrote.
    pub fn matches(&self) -> bool {
        !self.device_sums.is_empty() && self.device_sums.iter().all(|&s| s == self.cpu_sum)
    }
}

/// One device's walk of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    /// Nodes the device visited.
    pub count: u64,
    /// The device's checksum.
    pub checksum: u64,
    /// Time of the walk (including the round trip).
    pub time: Duration,
    /// Device TLB hits during the walk.
    pub tlb_hits: u64,
    /// Device TLB misses during the walk.
    pub tlb_misses: u64,
    /// Device page-table walks during the walk.
    pub page_walks: u64,
    /// Device page faults during the walk.
    pub device_faults: u64,
}

/// Step (d): the linked list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListStep {
    /// Nodes built.
    pub nodes: u64,
    /// Checksum computed on the CPU while building.
    pub cpu_checksum: u64,
    /// Time to build on the CPU.
    pub build: Duration,
    /// Each device's walk, in definition order.
    pub walks: Vec<Walk>,
}

impl ListStep {
    /// Every device visited every node with the CPU's checksum.
    pub fn matches(&self) -> bool {
        !self.walks.is_empty()
            && self
                .walks
                .iter()
                .all(|w| w.count == self.nodes && w.checksum == self.cpu_checksum)
    }
}

/// Step (e): one device-only region per CPU policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionsStep {
    /// The fault region `[start, end)` of the first device.
    pub fault: (u64, u64),
    /// How a forked child's read of the fault region ended.
    pub fault_touch: Touch,
    /// The dummy-page region `[start, end)` of the second device.
    pub dummy: (u64, u64),
    /// The sum of every `u64` the CPU read from the dummy region.
    pub dummy_cpu_sum: u64,
    /// How a forked child's write to the dummy region ended.
    pub dummy_write_touch: Touch,
    /// What the second device copied into its region (the first 64 bytes
    /// of buffer 0), summed by the CPU from the buffer.
    pub device_wrote: u64,
    /// The sum of those 64 bytes as the second device reads them back
    /// from its region.
    pub device_read: u64,
    /// The first device's access to the second device's region faulted.
    pub other_device_faults: bool,
}

impl RegionsStep {
    /// The fault region killed the child with `SIGSEGV`, the dummy region
    /// read zeros on the CPU and refused a write, and the device kept its
    /// own data there that the other device cannot reach.
    pub fn ok(&self) -> bool {
        self.fault_touch == Touch::Signal(SIGSEGV)
            && self.dummy_cpu_sum == 0
            && self.dummy_write_touch == Touch::Signal(SIGSEGV)
            && self.device_wrote != 0
            && self.device_read == self.device_wrote
            && self.other_device_faults
    }
}

/// Step (f): a freed buffer faults on every device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreeStep {
    /// The freed buffer `[start, end)`.
    pub buffer: (u64, u64),
    /// Time of the free (both devices invalidate and acknowledge, both
    /// unmap, then the CPU unmaps).
    pub free_time: Duration,
    /// Per device: the fault of its next walk of the list (which reaches
    /// the freed buffer at node 1), `(kind, address)`, or `None` if it did
    /// not fault.
    pub faults: Vec<Option<(Fault, u64)>>,
    /// Per device: invalidations its process counted.
    pub invalidations: Vec<u64>,
}

impl FreeStep {
    /// Every device faulted `unmapped` at the freed buffer.
    pub fn ok(&self) -> bool {
        !self.faults.is_empty()
            && self
                .faults
                .iter()
                .all(|f| *f == Some((Fault::Unmapped, self.buffer.0)))
    }
}

/// Step (g): memory above the limit is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AboveStep {
    /// The range of the allocation made before the devices were set up.
    pub range: (u64, u64),
    /// The refusal for the first device (the typed error's message), or
    /// `None` if the range lies below its limit and it can use it.
    pub refused: Option<String>,
    /// VMAs of this process the engine reports above the first device's
    /// limit.
    pub vmas_above: usize,
}

/// Everything the demo did, with its numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoReport {
    /// Address bits of the first device.
    pub va_bits: u32,
    /// `2^va_bits`.
    pub limit: u64,
    /// This process.
    pub pid: u32,
    /// (a)
    pub inspect: InspectStep,
    /// (b)
    pub devices: DevicesStep,
    /// (c)
    pub buffers: BuffersStep,
    /// (d)
    pub list: ListStep,
    /// (e)
    pub regions: RegionsStep,
    /// (f)
    pub free: FreeStep,
    /// (g)
    pub above: AboveStep,
    /// (h) the picture's path and size in bytes.
    pub svg: Option<(PathBuf, usize)>,
    /// The whole run.
    pub total: Duration,
}

/// Runs the demo with the `svmap device-peer` of this executable
/// ([`device_peer_command`]) as both device processes.
pub fn run(opts: &DemoOptions) -> Result<DemoReport, DemoError> {
    // Checked here so that a missing executable is a failed step.
    device_peer_command().map_err(fail("(b) start the device processes"))?;
    run_with(opts, || {
        device_peer_command().unwrap_or_else(|_| Command::new("svmap-device-peer-not-found"))
    })
}

/// The wrapping sum of the `u64` words the CPU reads from `[start, end)`.
fn cpu_sum(cpu: &LinuxCpu, start: u64, end: u64) -> Result<u64, svmap_runtime::AccessError> {
    let mut sum = 0u64;
    for w in (start..end).step_by(8) {
        sum = sum.wrapping_add(cpu.read_u64(w)?);
    }
    Ok(sum)
}

/// A free range of `len` bytes for a device-only region, decided by the
/// engine's own search: an SVM range allocated for `devices` (free on the
/// CPU and on each of them, below each limit) and freed again.
fn region_room(e: &mut DemoEngine, devices: &[&str], len: u64) -> Result<u64, EngineError> {
    let a = svmap_runtime::svm_alloc(e, len, None, devices, true)?;
    e.svm_free(a)?;
    Ok(a)
}

/// Runs the demo with `peer()` as the command of each device process
/// (tests pass their own re-executed binary, as for [`PeerDevice::spawn`]).
pub fn run_with(
    opts: &DemoOptions,
    mut peer: impl FnMut() -> Command,
) -> Result<DemoReport, DemoError> {
    let t0 = Instant::now();
    for (name, bits) in [
        ("--va-bits", opts.va_bits),
        ("--second-va-bits", opts.second_va_bits),
    ] {
        if !(30..=56).contains(&bits) {
            return Err(DemoError {
                step: "options",
                message: format!("{name} {bits} is not in 30..=56"),
            });
        }
    }
    if !(2..=256).contains(&opts.buffers) {
        return Err(DemoError {
            step: "options",
            message: format!("--buffers {} is not in 2..=256", opts.buffers),
        });
    }
    let va_bits = opts.va_bits;
    let limit = 1u64 << va_bits;

    // (g, first half) A program allocates before any device is set up: in
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
        fail("(g) allocate memory before the devices are set up")(what)
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

    // (b) The engine on this process, and the device processes.
    let step = "(b) start the device processes";
    let t = Instant::now();
    let cpu = LinuxCpu::new(false);
    let dir = cpu.directory();
    let mut e: DemoEngine = Engine::new(MmConfig::default(), cpu);
    let seeded_vmas = seed_from_self(&mut e).map_err(fail(step))?;
    let mut devices = Vec::new();
    for (name, bits) in [(DEVICE, va_bits), (SECOND_DEVICE, opts.second_va_bits)] {
        let dev = PeerDevice::spawn(peer(), &PeerConfig::new(bits, 1), dir.clone())
            .map_err(fail(step))?;
        devices.push(DemoDevice {
            name,
            va_bits: bits,
            pid: dev.pid(),
        });
        e.add_device_with(DeviceConfig::new(name, bits), dev)
            .map_err(fail(step))?;
    }
    let devices_step = DevicesStep {
        devices,
        seeded_vmas,
        time: t.elapsed(),
    };
    let both = [DEVICE, SECOND_DEVICE];
    let min_limit = 1u64 << va_bits.min(opts.second_va_bits);

    // (c) Buffers for both devices: the CPU writes, both devices read.
    let step = "(c) allocate SVM buffers for both devices";
    let nodes_per_buf = LIST_NODES.div_ceil(u64::from(opts.buffers));
    let buf_len = (nodes_per_buf * NODE_SIZE).next_multiple_of(64 << 10);
    let t = Instant::now();
    let mut bufs = Vec::new();
    for _ in 0..opts.buffers {
        // Refreshed from /proc/self/maps once if something mapped since
        // the seeding is in the way (another thread, a library).
        let a = svmap_runtime::svm_alloc(&mut e, buf_len, None, &both, true).map_err(fail(step))?;
        bufs.push((a, a + buf_len));
    }
    let per_alloc = t.elapsed() / opts.buffers;
    let mut sum = 0u64;
    let mut x = 0x0123_4567_89ab_cdef_u64;
    for &(s, end) in &bufs {
        for w in (s..end).step_by(8) {
            x = x.rotate_left(7).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ w;
            e.cpu_backend_mut().write_u64(w, x).map_err(fail(step))?;
            sum = sum.wrapping_add(x);
        }
    }
    let mut device_sums = Vec::new();
    let mut identical_in_devices = true;
    let mut device_views = Vec::new();
    for (i, d) in devices_step.devices.iter().enumerate() {
        let mut p = e.device_backends_mut()[i].peer();
        let mut s = 0u64;
        for &(a, end) in &bufs {
            s = s.wrapping_add(p.sum_u64(a, end - a).map_err(fail(step))?);
        }
        device_sums.push(s);
        let v = maps::read_view(Target::Pid(d.pid)).map_err(fail(step))?;
        identical_in_devices &= bufs.iter().all(|&(a, end)| {
            end <= min_limit
                && v.entry_at(a)
                    .is_some_and(|m| m.start <= a && end <= m.end && m.perms.shared)
        });
        device_views.push(v);
    }
    let buffers = BuffersStep {
        buffers: bufs.clone(),
        identical_in_devices,
        cpu_sum: sum,
        device_sums,
        per_alloc,
    };

    // (d) The list: node i in buffer i % k, so consecutive nodes are in
    // different buffers; `next` is a raw address valid on every side.
    let step = "(d) build the list and walk it on both devices";
    let k = bufs.len() as u64;
    let node = |i: u64| bufs[(i % k) as usize].0 + (i / k) * NODE_SIZE;
    let t = Instant::now();
    let mut h = CHECKSUM_INIT;
    let mut x = 0x5eed_u64;
    {
        let cpu = e.cpu_backend_mut();
        for i in 0..LIST_NODES {
            let next = if i + 1 < LIST_NODES { node(i + 1) } else { 0 };
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let value = x ^ (x >> 29);
            h = checksum_step(h, value);
            cpu.write_u64(node(i) + NODE_NEXT, next)
                .map_err(fail(step))?;
            cpu.write_u64(node(i) + NODE_VALUE, value)
                .map_err(fail(step))?;
        }
    }
    let build = t.elapsed();
    let mut walks = Vec::new();
    for dev in e.device_backends_mut() {
        let mut p = dev.peer();
        let before = p.device_stats().map_err(fail(step))?;
        let t = Instant::now();
        let w = p.walk_list(node(0), LIST_NODES + 1).map_err(fail(step))?;
        let time = t.elapsed();
        let after = p.device_stats().map_err(fail(step))?;
        walks.push(Walk {
            count: w.count,
            checksum: w.checksum,
            time,
            tlb_hits: after.tlb_hits - before.tlb_hits,
            tlb_misses: after.tlb_misses - before.tlb_misses,
            page_walks: after.walks - before.walks,
            device_faults: after.faults - before.faults,
        });
    }
    let list = ListStep {
        nodes: LIST_NODES,
        cpu_checksum: h,
        build,
        walks,
    };

    // (e) One device-only region per CPU policy.
    let step = "(e) device-only regions";
    let f = region_room(&mut e, &[DEVICE], REGION_LEN).map_err(fail(step))?;
    e.device_map(DEVICE, f, f + REGION_LEN, CpuPolicy::Fault)
        .map_err(fail(step))?;
    let fault_touch = touch_in_child(f, false).map_err(fail(step))?;
    // Below both limits, so that the first device could address it: its
    // access faults because the region is the second device's alone.
    let d = region_room(&mut e, &both, REGION_LEN).map_err(fail(step))?;
    e.device_map(SECOND_DEVICE, d, d + REGION_LEN, CpuPolicy::DummyPage)
        .map_err(fail(step))?;
    // The second device keeps data of its own there: a copy of the first
    // 64 bytes of buffer 0.
    let b0 = bufs[0].0;
    let device_wrote = cpu_sum(e.cpu_backend(), b0, b0 + 64).map_err(fail(step))?;
    let device_read = {
        let mut p = e.device_backends_mut()[1].peer();
        p.copy(d, b0, 64).map_err(fail(step))?;
        p.sum_u64(d, 64).map_err(fail(step))?
    };
    let other_device_faults = matches!(
        e.device_backends_mut()[0].peer().sum_u64(d, 8),
        Err(PeerError::DeviceFault { .. })
    );
    let dummy_cpu_sum = cpu_sum(e.cpu_backend(), d, d + REGION_LEN).map_err(fail(step))?;
    let dummy_write_touch = touch_in_child(d, true).map_err(fail(step))?;
    let regions = RegionsStep {
        fault: (f, f + REGION_LEN),
        fault_touch,
        dummy: (d, d + REGION_LEN),
        dummy_cpu_sum,
        dummy_write_touch,
        device_wrote,
        device_read,
        other_device_faults,
    };

    // (f) Free the buffer holding node 1: both devices invalidate it, and
    // their next walk faults there.
    let step = "(f) free a buffer";
    let victim = bufs[1];
    let t = Instant::now();
    e.svm_free(victim.0).map_err(fail(step))?;
    let free_time = t.elapsed();
    let mut faults = Vec::new();
    let mut invalidations = Vec::new();
    for dev in e.device_backends_mut() {
        let mut p = dev.peer();
        faults.push(match p.walk_list(node(0), LIST_NODES + 1) {
            Err(PeerError::DeviceFault { fault, addr, .. }) => Some((fault, addr)),
            Ok(_) => None,
            Err(err) => return Err(fail(step)(err)),
        });
        invalidations.push(p.device_stats().map_err(fail(step))?.invalidations);
    }
    let free = FreeStep {
        buffer: victim,
        free_time,
        faults,
        invalidations,
    };

    // (g) Registering the early allocation for the first device is refused.
    let vmas_above = e
        .vmas_above_limit(DEVICE)
        .map_err(fail("(g) register memory above the limit"))?
        .len();
    let refused = check_device_addressable(&e, early_range.0, early_range.1)
        .err()
        .map(|err| err.to_string());
    let above = AboveStep {
        range: early_range,
        refused,
        vmas_above,
    };

    // (h) The picture.
    let step = "(h) write the picture";
    let svg = match &opts.svg {
        None => None,
        Some(path) => {
            let own = maps::read_view(Target::SelfProcess).map_err(fail(step))?;
            let pic = demo_picture(&PictureInput {
                own: &own,
                devices: &devices_step.devices,
                device_views: &device_views,
                bufs: &bufs,
                freed: victim,
                regions: &regions,
                early: early_range,
                refused: above.refused.is_some(),
            });
            let text = pic.to_svg();
            std::fs::write(path, &text).map_err(|err| DemoError {
                step,
                message: format!("{}: {err}", path.display()),
            })?;
            Some((path.clone(), text.len()))
        }
    };
    drop(early);
    // Dropping the engine shuts the device processes down and unmaps
    // everything it mapped here.
    drop(e);
    Ok(DemoReport {
        va_bits,
        limit,
        pid: std::process::id(),
        inspect,
        devices: devices_step,
        buffers,
        list,
        regions,
        free,
        above,
        svg,
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

/// Checks that CPU memory `[start, end)` can be handed to the demo's first
/// device in `svm`: the typed [`svmap_svm::SvmError::AboveDeviceLimit`]
/// names the range and the limit if not.
pub fn check_device_addressable(
    svm: &SvmSpace,
    start: u64,
    end: u64,
) -> Result<(), svmap_svm::SvmError> {
    svm.check_addressable(DEVICE, start, end)
}

/// What the picture shows.
struct PictureInput<'a> {
    own: &'a maps::View,
    devices: &'a [DemoDevice],
    device_views: &'a [maps::View],
    bufs: &'a [(u64, u64)],
    freed: (u64, u64),
    regions: &'a RegionsStep,
    early: (u64, u64),
    refused: bool,
}

fn demo_picture(p: &PictureInput<'_>) -> Picture {
    let top = 1u64 << probe::user_va_bits();
    let floor = probe::mmap_floor().unwrap_or(PAGE);
    let first_limit = p.devices.first().map_or(top, |d| 1u64 << d.va_bits);
    let (f, d) = (p.regions.fault, p.regions.dummy);
    let mut skip: Vec<(u64, u64)> = p.bufs.to_vec();
    skip.extend([f, d, p.early]);
    let mut cpu = Space::new(format!("CPU: this process (pid {})", std::process::id()));
    cpu.limit(first_limit);
    add_clusters(&mut cpu, &p.own.entries, &skip, Kind::Mapping);
    cpu.region(
        p.early.0,
        p.early.1,
        if p.refused {
            Kind::AboveLimit
        } else {
            Kind::Mapping
        },
        if p.refused {
            "early Vec: refused for the devices"
        } else {
            "early Vec"
        },
    );
    cpu.region(
        f.0,
        f.1,
        Kind::Reservation,
        format!("{DEVICE} fault region (PROT_NONE)"),
    );
    cpu.region(
        d.0,
        d.1,
        Kind::Reservation,
        format!("{SECOND_DEVICE} dummy-page region (zeros)"),
    );
    let mut spaces = vec![cpu];
    for (i, (dev, view)) in p.devices.iter().zip(p.device_views).enumerate() {
        let limit = 1u64 << dev.va_bits;
        let mut sp = Space::new(format!(
            "device {}: process {}, {}-bit MMU",
            dev.name, dev.pid, dev.va_bits
        ));
        sp.limit(limit).window(floor, limit);
        if top > limit {
            sp.region(
                limit,
                top,
                Kind::Unreachable,
                format!("unreachable: >= 2^{}", dev.va_bits),
            );
        }
        let below: Vec<MapsEntry> = view
            .entries
            .iter()
            .filter(|e| e.start < limit)
            .cloned()
            .collect();
        add_clusters(&mut sp, &below, &skip, Kind::DeviceOnly);
        let own = if i == 0 { f } else { d };
        sp.region(
            own.0,
            own.1,
            Kind::DeviceOnly,
            "device-only region: device memory",
        );
        spaces.push(sp);
    }
    for sp in &mut spaces {
        for (i, &(s, e)) in p.bufs.iter().enumerate() {
            if (s, e) == p.freed {
                sp.region(s, e, Kind::Freed, format!("buffer {i}: freed"));
            } else {
                sp.region(s, e, Kind::SvmBuffer, format!("buffer {i}"));
            }
        }
    }
    let names: Vec<String> = p.devices.iter().map(|d| d.va_bits.to_string()).collect();
    let mut pic = Picture::new(format!(
        "svmap demo: the CPU and devices of {} bits at identical addresses",
        names.join(" and ")
    ))
    .note(format!(
        "{} SVM buffers mapped at the same addresses in this process and every device process",
        p.bufs.len()
    ))
    .note(format!(
        "every device walked a {LIST_NODES}-node list through its MMU; buffer at {} freed: their next access faults",
        hex(p.freed.0)
    ))
    .note(format!(
        "device-only regions: {DEVICE}'s faults on a CPU touch, {SECOND_DEVICE}'s reads zeros on the CPU"
    ))
    .note("memory allocated before the devices were set up lies above their limits: refused");
    for sp in spaces {
        pic = pic.space(sp);
    }
    pic.range(0, top.max(first_limit))
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

fn touch_json(t: Touch) -> Value {
    match t {
        Touch::Completed => json!({"completed": true}),
        Touch::Signal(n) => json!({"signal": n}),
        Touch::Exited(c) => json!({"exit": c}),
    }
}

impl DemoReport {
    /// Every step had the expected outcome: both devices read what the CPU
    /// wrote at the identical addresses, both walked the list with the
    /// CPU's checksum, the device-only regions behaved per policy, the
    /// freed buffer faulted `unmapped` at its address on both devices, and
    /// the early allocation was refused (when it lies above the limit).
    pub fn ok(&self) -> bool {
        self.buffers.identical_in_devices
            && self.buffers.matches()
            && self.list.matches()
            && self.regions.ok()
            && self.free.ok()
            && (self.above.refused.is_some() || self.above.range.1 <= self.limit)
    }

    /// The report as one JSON object (addresses as `"0x..."` strings,
    /// times in seconds).
    pub fn to_json(&self) -> Value {
        let h = |v: u64| Value::String(format!("{v:#x}"));
        let range = |(s, e): (u64, u64)| json!({"start": h(s), "end": h(e)});
        let i = &self.inspect;
        let l = &self.list;
        let r = &self.regions;
        let devices: Vec<Value> = self
            .devices
            .devices
            .iter()
            .map(|d| json!({"name": d.name, "va_bits": d.va_bits, "pid": d.pid}))
            .collect();
        let walks: Vec<Value> = l
            .walks
            .iter()
            .map(|w| {
                json!({
                    "count": w.count,
                    "checksum": h(w.checksum),
                    "time_s": w.time.as_secs_f64(),
                    "tlb_hits": w.tlb_hits,
                    "tlb_misses": w.tlb_misses,
                    "page_walks": w.page_walks,
                    "device_faults": w.device_faults,
                })
            })
            .collect();
        let faults: Vec<Value> = self
            .free
            .faults
            .iter()
            .map(|f| match f {
                Some((k, a)) => json!({"fault": k.to_string(), "addr": h(*a)}),
                None => Value::Null,
            })
            .collect();
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
                "largest_free": range(i.largest_free),
                "time_s": i.time.as_secs_f64(),
            },
            "devices": {
                "list": devices,
                "seeded_vmas": self.devices.seeded_vmas,
                "time_s": self.devices.time.as_secs_f64(),
            },
            "buffers": {
                "count": self.buffers.buffers.len(),
                "identical_in_devices": self.buffers.identical_in_devices,
                "cpu_sum": h(self.buffers.cpu_sum),
                "device_sums": self.buffers.device_sums.iter().map(|&s| h(s)).collect::<Vec<_>>(),
                "matches": self.buffers.matches(),
                "per_alloc_s": self.buffers.per_alloc.as_secs_f64(),
                "list": self.buffers.buffers.iter().map(|&b| range(b)).collect::<Vec<_>>(),
            },
            "list": {
                "nodes": l.nodes,
                "cpu_checksum": h(l.cpu_checksum),
                "build_s": l.build.as_secs_f64(),
                "matches": l.matches(),
                "walks": walks,
            },
            "regions": {
                "fault": range(r.fault),
                "fault_touch": touch_json(r.fault_touch),
                "dummy": range(r.dummy),
                "dummy_cpu_sum": h(r.dummy_cpu_sum),
                "dummy_write_touch": touch_json(r.dummy_write_touch),
                "device_wrote": h(r.device_wrote),
                "device_read": h(r.device_read),
                "other_device_faults": r.other_device_faults,
                "ok": r.ok(),
            },
            "free": {
                "buffer": range(self.free.buffer),
                "time_s": self.free.free_time.as_secs_f64(),
                "faults": faults,
                "invalidations": self.free.invalidations,
            },
            "above": {
                "start": h(self.above.range.0),
                "end": h(self.above.range.1),
                "refused": self.above.refused,
                "vmas_above": self.above.vmas_above,
            },
            "svg": self.svg.as_ref().map(|(p, _)| p.display().to_string()),
        })
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.va_bits;
        let i = &self.inspect;
        let devs = &self.devices.devices;
        let bits: Vec<String> = devs.iter().map(|d| d.va_bits.to_string()).collect();
        writeln!(
            f,
            "svmap demo: this process (pid {}) and devices of {} bits at identical addresses",
            self.pid,
            bits.join(" and ")
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
        let ds: Vec<String> = devs
            .iter()
            .map(|d| format!("{} ({}-bit, pid {})", d.name, d.va_bits, d.pid))
            .collect();
        writeln!(
            f,
            "(b) engine seeded with {} mappings of this process; device processes {} started in {}",
            self.devices.seeded_vmas,
            ds.join(" and "),
            ms(self.devices.time)
        )?;
        let bs = &self.buffers;
        let first = bs.buffers.iter().map(|x| x.0).min().unwrap_or(0);
        let last = bs.buffers.iter().map(|x| x.1).max().unwrap_or(0);
        writeln!(
            f,
            "(c) {} SVM buffers of {} for both devices in [{}, {}), {} at the identical addresses \
             in both device processes, {}/buffer; the CPU wrote them (sum {:#018x}) and {}",
            bs.buffers.len(),
            human(bs.buffers.first().map_or(0, |x| x.1 - x.0)),
            hex(first),
            hex(last),
            if bs.identical_in_devices {
                "all mapped"
            } else {
                "NOT all mapped"
            },
            us(bs.per_alloc),
            bs.cpu_sum,
            if bs.matches() {
                "both devices read the same sum".to_owned()
            } else {
                let v: Vec<String> = bs.device_sums.iter().map(|s| format!("{s:#x}")).collect();
                format!("the devices read DIFFERENT sums {}", v.join(", "))
            }
        )?;
        let l = &self.list;
        writeln!(
            f,
            "(d) list of {} nodes built by the CPU in {}, checksum {:#018x}:",
            l.nodes,
            ms(l.build),
            l.cpu_checksum
        )?;
        for (d, w) in devs.iter().zip(&l.walks) {
            writeln!(
                f,
                "    {} walked {} nodes in {} (TLB {} hits / {} misses, {} page-table walks, \
                 {} faults): checksum {:#018x} {}",
                d.name,
                w.count,
                ms(w.time),
                w.tlb_hits,
                w.tlb_misses,
                w.page_walks,
                w.device_faults,
                w.checksum,
                if w.count == l.nodes && w.checksum == l.cpu_checksum {
                    "= CPU's: match"
                } else {
                    "!= CPU's: MISMATCH"
                }
            )?;
        }
        let r = &self.regions;
        writeln!(
            f,
            "(e) fault region of {DEVICE} [{}, {}): a forked child's CPU read: {}",
            hex(r.fault.0),
            hex(r.fault.1),
            r.fault_touch
        )?;
        writeln!(
            f,
            "    dummy-page region of {SECOND_DEVICE} [{}, {}): the device copied 64 bytes there \
             (sum {:#x}, read back {:#x}); the CPU reads {} (sum {:#x}); a forked child's CPU \
             write: {}; {DEVICE}'s access {}",
            hex(r.dummy.0),
            hex(r.dummy.1),
            r.device_wrote,
            r.device_read,
            if r.dummy_cpu_sum == 0 {
                "zeros"
            } else {
                "NOT zeros"
            },
            r.dummy_cpu_sum,
            r.dummy_write_touch,
            if r.other_device_faults {
                "faults"
            } else {
                "did NOT fault"
            }
        )?;
        let fr = &self.free;
        let outcome: Vec<String> = devs
            .iter()
            .zip(&fr.faults)
            .map(|(d, x)| match x {
                Some((k, a)) => format!("{} faulted: {k} at {}", d.name, hex(*a)),
                None => format!("{} did NOT fault", d.name),
            })
            .collect();
        writeln!(
            f,
            "(f) freed buffer [{}, {}) in {} (both devices invalidated first); their next walks: {}",
            hex(fr.buffer.0),
            hex(fr.buffer.1),
            us(fr.free_time),
            outcome.join("; ")
        )?;
        let a = &self.above;
        match &a.refused {
            Some(msg) => writeln!(
                f,
                "(g) a {} Vec allocated before the devices were set up: refused: {msg}",
                human(a.range.1 - a.range.0)
            )?,
            None => writeln!(
                f,
                "(g) a {} Vec allocated before the devices were set up lies at [{}, {}), below 2^{b}: accepted",
                human(a.range.1 - a.range.0),
                hex(a.range.0),
                hex(a.range.1)
            )?,
        }
        match &self.svg {
            Some((path, n)) => writeln!(
                f,
                "(h) picture of the three address spaces: {} ({n} bytes)",
                path.display()
            )?,
            None => writeln!(f, "(h) no picture written")?,
        }
        write!(
            f,
            "{} in {}",
            if self.ok() {
                "all steps as expected"
            } else {
                "SOME STEPS FAILED"
            },
            ms(self.total)
        )
    }
}
