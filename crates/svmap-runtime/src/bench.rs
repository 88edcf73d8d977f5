//! The measurement behind `svmap bench svm`: alloc + free pairs on real
//! memory through the engine with `K` device processes, and, in the same
//! run, the same sizes through plain `mmap` + `munmap`, a `MAP_SHARED`
//! memfd `mmap` + `munmap`, and the per-buffer-memfd
//! [`svmap_linux::heap::Heap`].
//!
//! Every implementation gets the same kind of work: `live` buffers with
//! sizes log-uniform from 4 KiB to 2 MiB (the churn workload's
//! generator, fixed seed), one word written in each so that it holds a
//! real page, then `steps` steps that each free a random live buffer and
//! allocate (and touch) a new one. The figure is the wall time of the steps
//! divided by their number.
//!
//! System calls per pair are counted by the code that makes them: the
//! sparse heaps' counters ([`crate::LinuxCpu::syscalls`]) and the device
//! sockets' ([`crate::PeerDevice::syscalls`]); for the baselines they are
//! the calls each pair makes by construction (listed at each).

#![allow(unsafe_code)] // mmap, munmap and one write per buffer; each block has a SAFETY comment

use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use svmap_bench::workload::{SplitMix64, SEED};
use svmap_core::linux::MmConfig;
use svmap_linux::heap::Heap;
use svmap_peer::PeerConfig;
use svmap_svm::backend::BatchError;
use svmap_svm::{
    BackendError, DeviceBackend, DeviceConfig, DeviceFault, Engine, ModelDevice, Prot,
};

use crate::{seed_from_self, LinuxCpu, PeerDevice};

/// Most live buffers: 1e6 (the sizes average about 330 KiB of address
/// space, far below the smallest device window of 2^40 bytes).
pub const MAX_LIVE: usize = 1_000_000;
/// Most device processes.
pub const MAX_DEVICES: usize = 8;
/// Largest punch batch bound: 1 GiB.
pub const MAX_PUNCH_BATCH: u64 = 1 << 30;
/// Most timed steps.
pub const MAX_STEPS: usize = 10_000_000;
/// The baselines that hold one VMA (and, for the memfd heap, one
/// descriptor) per buffer run with at most this many live buffers, below
/// `vm.max_map_count` (65530 by default); `RLIMIT_NOFILE` lowers it further
/// for the memfd heap.
pub const BASELINE_LIVE_CAP: usize = 30_000;

/// What to measure.
#[derive(Debug)]
pub struct Config {
    /// Live buffers, 1..=[`MAX_LIVE`].
    pub live: usize,
    /// Device processes, 0..=[`MAX_DEVICES`].
    pub devices: usize,
    /// Timed alloc + free steps, 1..=[`MAX_STEPS`].
    pub steps: usize,
    /// Freed ranges `PROT_NONE` on the CPU (the sparse heap's guarded mode).
    pub guarded: bool,
    /// The bound of the sparse heaps' punch batch in bytes (0: every free
    /// punched at once).
    pub punch_batch: u64,
}

/// The figures of one implementation.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Live buffers it ran with.
    pub live: usize,
    /// Nanoseconds per alloc + free pair.
    pub ns_per_pair: f64,
    /// System calls per pair.
    pub syscalls_per_pair: f64,
    /// Of those, the ones on device sockets.
    pub device_syscalls_per_pair: f64,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The runtime (engine + Linux CPU backend + device processes).
    pub runtime: Figures,
    /// Plain private anonymous `mmap` + `munmap`.
    pub mmap: Figures,
    /// `memfd_create` + `ftruncate` + `MAP_SHARED` `mmap` + `close`, then `munmap`.
    pub memfd: Figures,
    /// The per-buffer-memfd heap.
    pub heap: Figures,
    /// `RssShmem` of this process (KiB) before the runtime's buffers exist.
    pub rss_shmem_start_kib: u64,
    /// ... with every buffer live, after the timed steps.
    pub rss_shmem_peak_kib: u64,
    /// ... after every buffer was freed, before the punch batch is
    /// flushed (at most the batch's bound above the start).
    pub rss_shmem_unflushed_kib: u64,
    /// ... after every buffer was freed and the batch flushed.
    pub rss_shmem_after_free_kib: u64,
    /// The bound of the sparse heaps' punch batch (bytes).
    pub punch_batch: u64,
    /// Device widths (bits), one per device process.
    pub device_bits: Vec<u32>,
    /// Wall time of the whole run.
    pub wall: Duration,
}

/// The sizes of the fill and the steps (victim index, new size).
struct Work {
    fill: Vec<u64>,
    steps: Vec<(usize, u64)>,
}

fn work(live: usize, steps: usize) -> Work {
    let mut rng = SplitMix64::new(SEED);
    let fill = (0..live).map(|_| rng.size()).collect();
    let n = u32::try_from(live).unwrap_or(u32::MAX);
    let steps = (0..steps)
        .map(|_| (rng.below(n) as usize, rng.size()))
        .collect();
    Work { fill, steps }
}

/// One implementation under test.
trait Subject {
    fn alloc(&mut self, len: u64) -> Result<u64, String>;
    fn free(&mut self, addr: u64, len: u64) -> Result<(), String>;
    /// System calls made so far.
    fn syscalls(&self) -> u64;
    /// Of those, the ones on device sockets.
    fn device_syscalls(&self) -> u64 {
        0
    }
}

fn touch(addr: u64) {
    // SAFETY: `addr` starts a buffer that the subject just allocated,
    // read-write and at least one page long.
    unsafe { std::ptr::write_volatile(addr as *mut u64, addr) };
}

/// Fills, runs the timed steps, and frees everything; `after_steps` runs
/// with every buffer still live.
fn drive<S: Subject>(
    s: &mut S,
    w: &Work,
    mut after_steps: impl FnMut(&mut S),
) -> Result<Figures, String> {
    let mut live: Vec<(u64, u64)> = Vec::with_capacity(w.fill.len());
    let mut result = Ok(());
    for &len in &w.fill {
        match s.alloc(len) {
            Ok(a) => {
                touch(a);
                live.push((a, len));
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let mut figures = Figures {
        live: live.len(),
        ..Figures::default()
    };
    if result.is_ok() {
        let (calls0, dev0) = (s.syscalls(), s.device_syscalls());
        let t0 = Instant::now();
        for &(victim, len) in &w.steps {
            let (a, l) = live[victim];
            if let Err(e) = s.free(a, l) {
                result = Err(e);
                break;
            }
            match s.alloc(len) {
                Ok(b) => {
                    touch(b);
                    live[victim] = (b, len);
                }
                Err(e) => {
                    // The slot is gone: drop it from what is freed below.
                    live.swap_remove(victim);
                    result = Err(e);
                    break;
                }
            }
        }
        let t = t0.elapsed();
        let n = w.steps.len().max(1) as f64;
        figures.ns_per_pair = t.as_nanos() as f64 / n;
        figures.syscalls_per_pair = (s.syscalls() - calls0) as f64 / n;
        figures.device_syscalls_per_pair = (s.device_syscalls() - dev0) as f64 / n;
        if result.is_ok() {
            after_steps(s);
        }
    }
    for (a, l) in live {
        let r = s.free(a, l);
        if result.is_ok() {
            result = r;
        }
    }
    result.map(|()| figures)
}

/// Private anonymous `mmap` + `munmap`: 2 system calls per pair.
struct Mmap(u64);

impl Subject for Mmap {
    fn alloc(&mut self, len: u64) -> Result<u64, String> {
        self.0 += 1;
        // SAFETY: a new mapping at an address the kernel chooses; it
        // replaces nothing.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len as usize,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        }
        .map_err(|e| format!("mmap: {e}"))?;
        Ok(p as u64)
    }

    fn free(&mut self, addr: u64, len: u64) -> Result<(), String> {
        self.0 += 1;
        // SAFETY: [addr, addr + len) is a mapping `alloc` made; nothing
        // refers to it any more.
        unsafe { rustix::mm::munmap(addr as *mut _, len as usize) }
            .map_err(|e| format!("munmap: {e}"))
    }

    fn syscalls(&self) -> u64 {
        self.0
    }
}

/// A memfd per buffer, `MAP_SHARED`, closed once mapped: `memfd_create`,
/// `ftruncate`, `mmap`, `close`, then `munmap`: 5 system calls per pair.
struct Memfd(u64);

impl Subject for Memfd {
    fn alloc(&mut self, len: u64) -> Result<u64, String> {
        self.0 += 4;
        let fd = rustix::fs::memfd_create(c"svmap-bench", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| format!("memfd_create: {e}"))?;
        rustix::fs::ftruncate(&fd, len).map_err(|e| format!("ftruncate: {e}"))?;
        // SAFETY: a new shared mapping of our own memfd at an address the
        // kernel chooses; it replaces nothing.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len as usize,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }
        .map_err(|e| format!("mmap(MAP_SHARED): {e}"))?;
        drop(fd);
        Ok(p as u64)
    }

    fn free(&mut self, addr: u64, len: u64) -> Result<(), String> {
        Mmap(0).free(addr, len)?;
        self.0 += 1;
        Ok(())
    }

    fn syscalls(&self) -> u64 {
        self.0
    }
}

/// The per-buffer-memfd heap: alloc is `memfd_create`, `ftruncate`,
/// `F_ADD_SEALS`, `mmap`; free is `mmap(PROT_NONE)` and `close`: 6 per
/// pair.
struct PerBuffer(Heap, u64);

impl Subject for PerBuffer {
    fn alloc(&mut self, len: u64) -> Result<u64, String> {
        self.1 += 4;
        self.0
            .alloc(len, 4096)
            .map(|p| p.as_ptr() as u64)
            .map_err(|e| e.to_string())
    }

    fn free(&mut self, addr: u64, _len: u64) -> Result<(), String> {
        self.1 += 2;
        let p = std::ptr::NonNull::new(addr as *mut u8).ok_or("null buffer")?;
        self.0.free(p).map_err(|e| e.to_string())
    }

    fn syscalls(&self) -> u64 {
        self.1
    }
}

/// A device of the bench: a device process, or (with no device process)
/// the model device that only gives the window its width.
#[derive(Debug)]
enum Device {
    Model(ModelDevice),
    Process(Box<PeerDevice>),
}

impl DeviceBackend for Device {
    fn map(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        match self {
            Device::Model(d) => d.map(start, end),
            Device::Process(d) => d.map(start, end),
        }
    }
    fn map_start(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        match self {
            Device::Model(d) => d.map_start(start, end),
            Device::Process(d) => d.map_start(start, end),
        }
    }
    fn map_finish(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        match self {
            Device::Model(d) => d.map_finish(start, end),
            Device::Process(d) => d.map_finish(start, end),
        }
    }
    fn invalidate(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        match self {
            Device::Model(d) => d.invalidate(start, end),
            Device::Process(d) => d.invalidate(start, end),
        }
    }
    fn protect(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), BackendError> {
        match self {
            Device::Model(d) => d.protect(start, end, prot),
            Device::Process(d) => d.protect(start, end, prot),
        }
    }
    fn unmap(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        match self {
            Device::Model(d) => d.unmap(start, end),
            Device::Process(d) => d.unmap(start, end),
        }
    }
    fn invalidate_unmap(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        match self {
            Device::Model(d) => d.invalidate_unmap(ranges),
            Device::Process(d) => d.invalidate_unmap(ranges),
        }
    }
    fn invalidate_unmap_start(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        match self {
            Device::Model(d) => d.invalidate_unmap_start(ranges),
            Device::Process(d) => d.invalidate_unmap_start(ranges),
        }
    }
    fn invalidate_unmap_finish(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        match self {
            Device::Model(d) => d.invalidate_unmap_finish(ranges),
            Device::Process(d) => d.invalidate_unmap_finish(ranges),
        }
    }
    fn own_mappings(&mut self) -> Result<Vec<(u64, u64)>, BackendError> {
        match self {
            Device::Model(d) => d.own_mappings(),
            Device::Process(d) => d.own_mappings(),
        }
    }
    fn map_region(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        match self {
            Device::Model(d) => d.map_region(start, end),
            Device::Process(d) => d.map_region(start, end),
        }
    }
    fn take_faults(&mut self, out: &mut Vec<DeviceFault>) {
        match self {
            Device::Model(d) => d.take_faults(out),
            Device::Process(d) => d.take_faults(out),
        }
    }
}

struct Runtime {
    engine: Engine<LinuxCpu, Device>,
    names: Vec<String>,
}

impl Subject for Runtime {
    fn device_syscalls(&self) -> u64 {
        self.engine
            .device_backends()
            .iter()
            .map(|d| match d {
                Device::Model(_) => 0,
                Device::Process(p) => p.syscalls(),
            })
            .sum()
    }

    fn alloc(&mut self, len: u64) -> Result<u64, String> {
        self.engine
            .svm_alloc(len, None, &self.names, false)
            .map_err(|e| e.to_string())
    }

    fn free(&mut self, addr: u64, _len: u64) -> Result<(), String> {
        self.engine.svm_free(addr).map_err(|e| e.to_string())
    }

    fn syscalls(&self) -> u64 {
        self.engine.cpu_backend().syscalls() + self.device_syscalls()
    }
}

/// `RssShmem` of this process in KiB.
pub fn rss_shmem_kib() -> Result<u64, String> {
    let s = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("RssShmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no RssShmem line in /proc/self/status".to_owned())
}

/// The width of device `i`: 40 and 44 bits in turn.
fn device_bits(i: usize) -> u32 {
    if i.is_multiple_of(2) {
        40
    } else {
        44
    }
}

/// Runs the benchmark. `peer` makes the command of one device process
/// (`svmap device-peer`). The baselines run first, then the runtime: its
/// window takes every free address below the devices' limit.
pub fn run(cfg: &Config, peer: &dyn Fn() -> std::io::Result<Command>) -> Result<Report, String> {
    if !(1..=MAX_LIVE).contains(&cfg.live)
        || cfg.devices > MAX_DEVICES
        || !(1..=MAX_STEPS).contains(&cfg.steps)
        || cfg.punch_batch > MAX_PUNCH_BATCH
    {
        return Err(format!("configuration out of bounds: {cfg:?}"));
    }
    let t0 = Instant::now();
    let mut report = Report::default();
    let base_live = cfg.live.min(BASELINE_LIVE_CAP);
    let base = work(base_live, cfg.steps);
    report.mmap = drive(&mut Mmap(0), &base, |_| {}).map_err(|e| format!("mmap baseline: {e}"))?;
    report.memfd =
        drive(&mut Memfd(0), &base, |_| {}).map_err(|e| format!("memfd baseline: {e}"))?;
    // One descriptor per live buffer: stay well below the soft limit.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let heap_live = base_live.min(
        usize::try_from(nofile.saturating_sub(256))
            .unwrap_or(1)
            .max(1),
    );
    let heap_work = work(heap_live, cfg.steps);
    {
        let heap = Heap::below_bits(44, 1 << 42).map_err(|e| format!("memfd heap: {e}"))?;
        report.heap = drive(&mut PerBuffer(heap, 0), &heap_work, |_| {})
            .map_err(|e| format!("memfd heap: {e}"))?;
    }

    let mut cpu = LinuxCpu::new(cfg.guarded);
    cpu.set_punch_batch(cfg.punch_batch)
        .map_err(|e| e.to_string())?;
    report.punch_batch = cfg.punch_batch;
    let dir = cpu.directory();
    let mut engine: Engine<LinuxCpu, Device> = Engine::new(MmConfig::default(), cpu);
    seed_from_self(&mut engine).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if cfg.devices == 0 {
        // No device process: a model device gives the window its width.
        engine
            .add_device_with(DeviceConfig::new("host", 44), Device::Model(ModelDevice))
            .map_err(|e| e.to_string())?;
        names.push("host".to_owned());
    }
    for i in 0..cfg.devices {
        let bits = device_bits(i);
        let mut pc = PeerConfig::new(bits, 1);
        pc.timeout = Duration::from_secs(30);
        let cmd = peer().map_err(|e| format!("the device process command: {e}"))?;
        let dev = PeerDevice::spawn(cmd, &pc, dir.clone())
            .map_err(|e| format!("starting device process {i}: {e}"))?;
        let name = format!("dev{i}");
        engine
            .add_device_with(
                DeviceConfig::new(&name, bits),
                Device::Process(Box::new(dev)),
            )
            .map_err(|e| e.to_string())?;
        report.device_bits.push(bits);
        names.push(name);
    }
    engine.reserve_window(&names).map_err(|e| e.to_string())?;
    let mut rt = Runtime { engine, names };
    report.rss_shmem_start_kib = rss_shmem_kib()?;
    let w = work(cfg.live, cfg.steps);
    let mut peak = 0;
    report.runtime = drive(&mut rt, &w, |_| peak = rss_shmem_kib().unwrap_or(0))
        .map_err(|e| format!("runtime: {e}"))?;
    report.rss_shmem_peak_kib = peak;
    report.rss_shmem_unflushed_kib = rss_shmem_kib()?;
    rt.engine
        .cpu_backend_mut()
        .flush()
        .map_err(|e| format!("flushing the punch batch: {e}"))?;
    report.rss_shmem_after_free_kib = rss_shmem_kib()?;
    report.wall = t0.elapsed();
    Ok(report)
}

/// The device counts of [`run_layer`]: none, one and eight.
pub const LAYER_DEVICES: [usize; 3] = [0, 1, 8];
/// Most live ranges of [`run_layer`].
pub const MAX_LAYER_LIVE: usize = 1_000_000;
/// Timed repetitions per subject in [`run_layer`]; the median counts.
pub const LAYER_REPS: usize = 3;

/// What [`run_layer`] measured at one number of live ranges: ns per
/// alloc + free pair, each the median of [`LAYER_REPS`] repetitions of
/// `steps / LAYER_REPS` steps.
#[derive(Clone, Debug, Default)]
pub struct LayerRow {
    /// Live ranges.
    pub live: usize,
    /// Timed steps per subject.
    pub steps: usize,
    /// The bare map: `AddressMap::allocate` + `unmap` in `[mmap_min_addr,
    /// 2^40)`.
    pub map_ns: f64,
    /// `Engine<ModelCpu, ModelDevice>::svm_alloc` + `svm_free` for every
    /// device, with [`LAYER_DEVICES`] devices (40 and 44 bits in turn), no
    /// window.
    pub svm_ns: [f64; 3],
    /// The same with one device and its window reserved first (what the
    /// runtime does).
    pub window_ns: f64,
}

/// One subject of [`run_layer`].
trait LayerSubject {
    fn alloc(&mut self, len: u64) -> Result<u64, String>;
    fn free(&mut self, addr: u64, len: u64) -> Result<(), String>;
}

struct BareMap(svmap_core::AddressMap);

impl LayerSubject for BareMap {
    fn alloc(&mut self, len: u64) -> Result<u64, String> {
        let req = svmap_core::FitRequest {
            length: len,
            low: MmConfig::default().mmap_min_addr,
            high: 1 << 40,
            align: 4096,
            align_offset: 0,
            topdown: false,
            respect_guard_gaps: false,
        };
        self.0
            .allocate(
                &req,
                &svmap_core::SearchParams::default(),
                svmap_core::VmaFlags::NONE,
            )
            .map_err(|e| e.to_string())
    }

    fn free(&mut self, addr: u64, len: u64) -> Result<(), String> {
        self.0
            .unmap(addr, addr + len)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

struct ModelEngine(Engine, Vec<String>);

impl LayerSubject for ModelEngine {
    fn alloc(&mut self, len: u64) -> Result<u64, String> {
        self.0
            .svm_alloc(len, None, &self.1, false)
            .map_err(|e| e.to_string())
    }

    fn free(&mut self, addr: u64, _len: u64) -> Result<(), String> {
        self.0.svm_free(addr).map_err(|e| e.to_string())
    }
}

fn model_engine(devices: usize, window: bool) -> Result<ModelEngine, String> {
    let mut e = Engine::default();
    let names: Vec<String> = (0..devices).map(|i| format!("dev{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        e.add_device(DeviceConfig::new(n, device_bits(i)))
            .map_err(|e| e.to_string())?;
    }
    if window {
        e.reserve_window(&names).map_err(|e| e.to_string())?;
    }
    Ok(ModelEngine(e, names))
}

/// Fills, then times [`LAYER_REPS`] repetitions of the steps; the median
/// ns per pair.
fn churn_layer<S: LayerSubject>(s: &mut S, w: &Work) -> Result<f64, String> {
    let mut live = Vec::with_capacity(w.fill.len());
    for &len in &w.fill {
        live.push((s.alloc(len)?, len));
    }
    let per = (w.steps.len() / LAYER_REPS).max(1);
    let mut reps = Vec::with_capacity(LAYER_REPS);
    for chunk in w.steps.chunks(per).take(LAYER_REPS) {
        let t = Instant::now();
        for &(victim, len) in chunk {
            let (a, l) = live[victim];
            s.free(a, l)?;
            live[victim] = (s.alloc(len)?, len);
        }
        reps.push(t.elapsed().as_nanos() as f64 / chunk.len() as f64);
    }
    reps.sort_by(f64::total_cmp);
    Ok(reps[reps.len() / 2])
}

/// The pure SVM layer against the bare map at `live` live ranges: the
/// churn workload (sizes log-uniform from 4 KiB to 2 MiB, fixed seed,
/// lowest address first), `steps` timed steps per subject, every subject
/// on the same sequence, one after the other. No memory is touched and no
/// system call made.
pub fn run_layer(live: usize, steps: usize) -> Result<LayerRow, String> {
    if !(1..=MAX_LAYER_LIVE).contains(&live) || !(LAYER_REPS..=MAX_STEPS).contains(&steps) {
        return Err(format!(
            "live {live} or steps {steps} out of bounds (1..={MAX_LAYER_LIVE}, {LAYER_REPS}..={MAX_STEPS})"
        ));
    }
    let w = work(live, steps);
    let mut row = LayerRow {
        live,
        steps,
        ..LayerRow::default()
    };
    row.map_ns = churn_layer(&mut BareMap(svmap_core::AddressMap::new()), &w)
        .map_err(|e| format!("bare map: {e}"))?;
    for (i, &k) in LAYER_DEVICES.iter().enumerate() {
        row.svm_ns[i] = churn_layer(&mut model_engine(k, false)?, &w)
            .map_err(|e| format!("engine, {k} devices: {e}"))?;
    }
    row.window_ns = churn_layer(&mut model_engine(1, true)?, &w)
        .map_err(|e| format!("engine, 1 device, window: {e}"))?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use svmap_peer::{device, FAILPOINT_ENV, PEER_FD_ENV};

    use super::*;

    #[test]
    fn peer_role() {
        if std::env::var_os(PEER_FD_ENV).is_some() {
            std::process::exit(device::serve_from_env());
        }
    }

    fn peer_command() -> Command {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "bench::tests::peer_role",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .stdout(Stdio::null())
        .env_remove(FAILPOINT_ENV);
        c
    }

    /// The bench's device sends a mapping in `map_start` and waits for it
    /// in `map_finish`, as the runtime's device does, so the bench maps on
    /// its devices in parallel.
    #[test]
    fn the_bench_device_maps_in_two_halves() {
        let cpu = LinuxCpu::new(false);
        let dir = cpu.directory();
        let mut engine: Engine<LinuxCpu, Device> = Engine::new(MmConfig::default(), cpu);
        seed_from_self(&mut engine).unwrap();
        let mut pc = PeerConfig::new(40, 1);
        pc.timeout = Duration::from_secs(30);
        let dev = PeerDevice::spawn(peer_command(), &pc, dir).unwrap();
        engine
            .add_device_with(
                DeviceConfig::new("dev0", 40),
                Device::Process(Box::new(dev)),
            )
            .unwrap();
        // Other tests of this binary map memory in parallel (possibly in
        // the window just computed): refresh once on a collision.
        crate::with_refresh(&mut engine, |e| e.reserve_window(&["dev0"])).unwrap();
        let a = engine.svm_alloc(0x2000, None, &["dev0"], false).unwrap();
        let range = (a, a + 0x2000);
        // Through the bench's device, not the device process's own.
        let dev: &mut Device = &mut engine.device_backends_mut()[0];
        let in_flight = |dev: &mut Device| match dev {
            Device::Process(p) => p.peer().in_flight(),
            Device::Model(_) => panic!("a device process was added"),
        };
        dev.invalidate_unmap(&[range]).unwrap();
        dev.map_start(range.0, range.1).unwrap();
        assert!(in_flight(dev), "map_start waited for the answer");
        dev.map_finish(range.0, range.1).unwrap();
        assert!(!in_flight(dev));
        engine.svm_free(a).unwrap();
        engine.check_invariants();
    }
}
