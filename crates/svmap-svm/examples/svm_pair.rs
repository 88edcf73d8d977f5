//! A small driver of the churn workload on the pure SVM layer, for
//! instruction counts (`valgrind --tool=callgrind`) and quick timings:
//! `N` live ranges, then `S` steps that each free a random live range and
//! allocate a new one (sizes log-uniform over 1..=512 pages, the churn
//! benchmark's generator and seed).
//!
//! ```sh
//! cargo run --release -p svmap-svm --example svm_pair -- engine 1000 1 20000
//! cargo run --release -p svmap-svm --example svm_pair -- map 1000 0 20000
//! ```
//!
//! Arguments: `engine|window|map LIVE DEVICES STEPS`. `engine` runs
//! `Engine<ModelCpu, ModelDevice>::svm_alloc` + `svm_free` for every device
//! (40 and 44 bits in turn); `window` does the same after reserving the
//! devices' common window (what the runtime does); `map` runs the bare
//! `AddressMap::allocate` + `unmap` over the same window. Prints the time
//! per pair; the instruction count per pair is the difference of two
//! callgrind runs with different `STEPS`, divided by the difference.

use std::time::Instant;

use svmap_core::linux::MmConfig;
use svmap_core::{AddressMap, FitRequest, SearchParams, VmaFlags};
use svmap_svm::{DeviceConfig, Engine, ModelCpu};

/// The churn benchmark's generator (SplitMix64) and seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
    fn size(&mut self) -> u64 {
        let u = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let pages = (u * 513f64.log2()).exp2() as u64;
        pages.clamp(1, 512) * 4096
    }
}

trait Subject {
    fn alloc(&mut self, len: u64) -> u64;
    fn free(&mut self, addr: u64, len: u64);
}

struct Svm {
    engine: Engine,
    names: Vec<String>,
}

impl Subject for Svm {
    fn alloc(&mut self, len: u64) -> u64 {
        self.engine
            .svm_alloc(len, None, &self.names, false)
            .expect("svm_alloc")
    }
    fn free(&mut self, addr: u64, _len: u64) {
        self.engine.svm_free(addr).expect("svm_free");
    }
}

struct Bare {
    map: AddressMap,
    low: u64,
    high: u64,
}

impl Subject for Bare {
    fn alloc(&mut self, len: u64) -> u64 {
        let req = FitRequest {
            length: len,
            low: self.low,
            high: self.high,
            align: 4096,
            align_offset: 0,
            topdown: false,
            respect_guard_gaps: false,
        };
        self.map
            .allocate(&req, &SearchParams::default(), VmaFlags::NONE)
            .expect("allocate")
    }
    fn free(&mut self, addr: u64, len: u64) {
        self.map.unmap(addr, addr + len).expect("unmap");
    }
}

fn run<S: Subject>(s: &mut S, live: usize, steps: usize) -> f64 {
    let mut rng = Rng(0x5eed_c0de_2026_0003);
    let mut held: Vec<(u64, u64)> = (0..live)
        .map(|_| {
            let len = rng.size();
            (s.alloc(len), len)
        })
        .collect();
    let n = u32::try_from(live).expect("live fits in u32");
    let plan: Vec<(usize, u64)> = (0..steps)
        .map(|_| (rng.below(n) as usize, rng.size()))
        .collect();
    let t = Instant::now();
    for &(victim, len) in &plan {
        let (a, l) = held[victim];
        s.free(a, l);
        held[victim] = (s.alloc(len), len);
    }
    t.elapsed().as_nanos() as f64 / steps.max(1) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: svm_pair engine|window|map LIVE DEVICES STEPS";
    let [mode, live, devices, steps] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let live: usize = live.parse().expect("LIVE");
    let devices: usize = devices.parse().expect("DEVICES");
    let steps: usize = steps.parse().expect("STEPS");
    let bits = |i: usize| if i.is_multiple_of(2) { 40 } else { 44 };
    let cfg = MmConfig::default();
    let ns = match mode.as_str() {
        "engine" | "window" => {
            let mut engine: Engine = Engine::new(cfg, ModelCpu);
            let names: Vec<String> = (0..devices).map(|i| format!("dev{i}")).collect();
            for (i, n) in names.iter().enumerate() {
                engine
                    .add_device(DeviceConfig::new(n.clone(), bits(i)))
                    .expect("add_device");
            }
            if mode == "window" {
                engine.reserve_window(&names).expect("reserve_window");
            }
            run(&mut Svm { engine, names }, live, steps)
        }
        "map" => {
            let high = if devices == 0 { cfg.task_size } else { 1 << 40 };
            let mut b = Bare {
                map: AddressMap::new(),
                low: cfg.mmap_min_addr,
                high,
            };
            run(&mut b, live, steps)
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    println!("{mode} live={live} devices={devices} steps={steps}: {ns:.0} ns/pair");
}
