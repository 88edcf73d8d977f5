//! `svmap migrate-demo` and `svmap bench migrate`: page migration between
//! this process and a device process, shown step by step and measured
//! (docs/PERFORMANCE.md).

use std::process::Command;
use std::time::{Duration, Instant};

use svmap_core::linux::MmConfig;
use svmap_peer::PeerConfig;
use svmap_svm::{Attr, DeviceConfig, Engine, Location};

use crate::migrate::{MigrateStats, Runtime};
use crate::{seed_from_self, LinuxCpu, PeerDevice};

const MIB2: u64 = 2 << 20;

/// A runtime with one 40-bit device process (`gpu0`) and a window for it.
fn runtime(peer: &dyn Fn() -> std::io::Result<Command>) -> Result<Runtime, String> {
    let cpu = LinuxCpu::new(false);
    let dir = cpu.directory();
    let mut e = Engine::new(MmConfig::default(), cpu);
    seed_from_self(&mut e).map_err(|x| x.to_string())?;
    let mut cfg = PeerConfig::new(40, 1);
    cfg.timeout = Duration::from_secs(30);
    let cmd = peer().map_err(|x| format!("the device process command: {x}"))?;
    let dev = PeerDevice::spawn(cmd, &cfg, dir).map_err(|x| x.to_string())?;
    e.add_device_with(DeviceConfig::new("gpu0", 40), dev)
        .map_err(|x| x.to_string())?;
    e.reserve_window(&["gpu0"]).map_err(|x| x.to_string())?;
    Runtime::new(e).map_err(|x| x.to_string())
}

fn pattern(a: u64) -> u64 {
    a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a
}

/// Writes the pattern over `[a, a + len)` with the CPU; returns its sum.
fn fill(rt: &mut Runtime, a: u64, len: u64) -> Result<u64, String> {
    let mut sum = 0u64;
    for w in (a..a + len).step_by(8) {
        rt.engine_mut()
            .cpu_backend_mut()
            .write_u64(w, pattern(w))
            .map_err(|x| x.to_string())?;
        sum = sum.wrapping_add(pattern(w));
    }
    Ok(sum)
}

/// Reads `[a, a + len)` with the CPU (faulting granules back); returns the
/// sum.
fn cpu_sum(rt: &Runtime, a: u64, len: u64, step: u64) -> Result<u64, String> {
    let mut sum = 0u64;
    for w in (a..a + len).step_by(step as usize) {
        let v = rt
            .engine()
            .cpu_backend()
            .read_u64(w)
            .map_err(|x| x.to_string())?;
        sum = sum.wrapping_add(v);
    }
    Ok(sum)
}

/// What `svmap migrate-demo` saw.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// The range.
    pub range: (u64, u64),
    /// The CPU's sum of its words after writing them.
    pub cpu_sum: u64,
    /// Counters after the prefetch to the device.
    pub after_prefetch: MigrateStats,
    /// Where the first page was after the prefetch.
    pub location_after_prefetch: Location,
    /// The device's sum, read from its own memory.
    pub device_sum: u64,
    /// The CPU's sum when it read the range again (every granule faulted
    /// back).
    pub cpu_sum_after: u64,
    /// Counters at the end.
    pub after_read: MigrateStats,
    /// Wall time of the prefetch and of the CPU read.
    pub times: (Duration, Duration),
}

/// A range of 8 MiB (four 2 MiB granules) written by the CPU, prefetched
/// to the device, summed there, and read by the CPU again.
pub fn demo(peer: &dyn Fn() -> std::io::Result<Command>) -> Result<DemoReport, String> {
    let mut rt = runtime(peer)?;
    let len = 4 * MIB2;
    let a = rt
        .engine_mut()
        .svm_alloc(len, Some(MIB2), &["gpu0"], false)
        .map_err(|x| x.to_string())?;
    let cpu_sum0 = fill(&mut rt, a, len)?;
    let t = Instant::now();
    rt.set_attr(a, len, &[Attr::PrefetchLocation(Some(Location::Device(0)))])
        .map_err(|x| x.to_string())?;
    let t_prefetch = t.elapsed();
    let after_prefetch = rt.stats();
    let location_after_prefetch = rt.migrator().location_of(a);
    let device_sum = rt.device_sum(0, a, len).map_err(|x| x.to_string())?;
    let t = Instant::now();
    let cpu_sum_after = cpu_sum(&rt, a, len, 8)?;
    let t_read = t.elapsed();
    Ok(DemoReport {
        range: (a, a + len),
        cpu_sum: cpu_sum0,
        after_prefetch,
        location_after_prefetch,
        device_sum,
        cpu_sum_after,
        after_read: rt.stats(),
        times: (t_prefetch, t_read),
    })
}

/// One row of `svmap bench migrate`.
#[derive(Clone, Copy, Debug)]
pub struct BenchRow {
    /// Granule bytes.
    pub granule: u64,
    /// Bytes moved each way.
    pub bytes: u64,
    /// Prefetch to the device, bytes per second.
    pub to_device_bps: f64,
    /// Prefetch back to system memory, bytes per second.
    pub to_system_bps: f64,
    /// `memcpy` of the same size (warm buffers), bytes per second.
    pub memcpy_bps: f64,
    /// A CPU read of a granule on the device: fault, migration back, wake
    /// (mean per granule).
    pub fault_migrate: Duration,
    /// First touches of fresh anonymous memory, one per 4 KiB page, over
    /// one granule's worth of bytes (mean per granule).
    pub anon_fault: Duration,
    /// CPU faults counted during the fault measurement.
    pub faults: u64,
}

fn bps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9)
}

/// The mean cost of touching every 4 KiB page of `granule` bytes of
/// fresh anonymous memory for the first time (16 MiB in all).
fn anon_fault(granule: u64) -> Duration {
    let total = 16usize << 20;
    // Large zeroed allocations come straight from mmap: untouched pages.
    let mut v: Vec<u8> = vec![0; total];
    let t = Instant::now();
    for i in (0..total).step_by(4096) {
        v[i] = 1;
    }
    let d = t.elapsed();
    std::hint::black_box(&v);
    d / (total as u64 / granule) as u32
}

fn memcpy_bps(bytes: u64) -> f64 {
    let src = vec![1u8; bytes as usize];
    let mut dst = vec![2u8; bytes as usize];
    dst.copy_from_slice(&src);
    let reps = 3;
    let t = Instant::now();
    for _ in 0..reps {
        dst.copy_from_slice(std::hint::black_box(&src));
    }
    std::hint::black_box(&dst);
    bps(bytes * reps, t.elapsed())
}

/// One row: `bytes` of SVM memory with granules of `2^k` pages.
fn row(rt: &mut Runtime, k: u8, bytes: u64) -> Result<BenchRow, String> {
    let granule = 0x1000u64 << k;
    let a = rt
        .engine_mut()
        .svm_alloc(bytes, Some(MIB2), &["gpu0"], false)
        .map_err(|x| x.to_string())?;
    rt.set_attr(a, bytes, &[Attr::Granularity(k)])
        .map_err(|x| x.to_string())?;
    fill(rt, a, bytes)?;
    let t = Instant::now();
    rt.prefetch(a, bytes, Location::Device(0))
        .map_err(|x| x.to_string())?;
    let to_dev = t.elapsed();
    let t = Instant::now();
    rt.prefetch(a, bytes, Location::System)
        .map_err(|x| x.to_string())?;
    let to_sys = t.elapsed();
    rt.prefetch(a, bytes, Location::Device(0))
        .map_err(|x| x.to_string())?;
    let before = rt.stats().cpu_faults;
    let t = Instant::now();
    let sum = cpu_sum(rt, a, bytes, granule)?;
    let faulting = t.elapsed();
    std::hint::black_box(sum);
    let faults = rt.stats().cpu_faults - before;
    let n = (bytes / granule).max(1);
    rt.free(a).map_err(|x| x.to_string())?;
    Ok(BenchRow {
        granule,
        bytes,
        to_device_bps: bps(bytes, to_dev),
        to_system_bps: bps(bytes, to_sys),
        memcpy_bps: memcpy_bps(bytes),
        fault_migrate: faulting / n as u32,
        anon_fault: anon_fault(granule),
        faults,
    })
}

/// `svmap bench migrate`: 16 MiB at 4 KiB granules and 64 MiB at 2 MiB
/// granules, each way, with the CPU fault-and-migrate latency.
pub fn bench(peer: &dyn Fn() -> std::io::Result<Command>) -> Result<Vec<BenchRow>, String> {
    let mut rt = runtime(peer)?;
    Ok(vec![row(&mut rt, 0, 16 << 20)?, row(&mut rt, 9, 64 << 20)?])
}
