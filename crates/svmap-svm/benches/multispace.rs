//! Multi-space search cost: `svm_alloc` + `svm_free` with k = 1, 2, 4, 8
//! devices over N = 1e3..1e5 occupied ranges (`cargo bench -p svmap-svm`).
//!
//! Layout: N ranges packed below 2^40 (every device has 40 bits) with
//! gaps shorter than the request, so that no hole near them fits and the
//! search must skip them all. Half the ranges are CPU mappings; the other
//! half are device-only regions spread over the devices, and for half of
//! those the CPU reservation is unmapped again, so they exist only on their
//! device (the case that makes the subset search restart).
//!
//! - "all": the buffer is visible to every device: one search of the
//!   combined index.
//! - "subset": the first k - 1 devices (CPU only for k = 1): CPU search,
//!   verified on each listed device, restarted past conflicts.

use std::hint::black_box;
use std::time::Instant;

use svmap_svm::{CpuPolicy, DeviceConfig, SvmSpace};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const LEN: u64 = 0x10000;

fn build(k: usize, n: usize) -> (SvmSpace, Vec<String>) {
    let mut sp: SvmSpace = SvmSpace::default();
    let names: Vec<String> = (0..k).map(|i| format!("dev{i}")).collect();
    for nm in &names {
        sp.add_device(DeviceConfig::new(nm.clone(), 40)).unwrap();
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Lay the ranges out downwards from 2^40.
    let mut top: u64 = 1 << 40;
    for i in 0..n {
        let len = (1 + rng.below(16)) * 0x1000;
        let gap = (1 + rng.below(15)) * 0x1000; // < LEN: no fit here
        let start = top - gap - len;
        top = start;
        if i % 2 == 0 {
            sp.cpu_map(start, start + len, false).unwrap();
        } else {
            let d = &names[rng.below(k as u64) as usize];
            sp.device_map(d, start, start + len, CpuPolicy::Fault)
                .unwrap();
            if i % 4 == 1 {
                sp.cpu_unmap(start, len).unwrap();
            }
        }
    }
    (sp, names)
}

fn measure(sp: &mut SvmSpace, devs: &[String], reps: u32) -> (f64, f64) {
    let before = sp.stats();
    let t = Instant::now();
    for _ in 0..reps {
        let a = sp.svm_alloc(black_box(LEN), None, devs, true).unwrap();
        sp.svm_free(a).unwrap();
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(reps);
    let after = sp.stats();
    let searches = (after.subset_searches - before.subset_searches).max(1);
    let iters = (after.subset_iterations - before.subset_iterations) as f64 / searches as f64;
    (ns, iters)
}

fn main() {
    println!("| k | N | all: ns/op (alloc+free) | subset: ns/op | subset: searches/op | combined-index segments |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for &n in &[1_000usize, 10_000, 100_000] {
        for &k in &[1usize, 2, 4, 8] {
            let (mut sp, names) = build(k, n);
            let reps = 20_000;
            let (all, _) = measure(&mut sp, &names, reps);
            let subset = &names[..k - 1];
            let (sub, iters) = measure(&mut sp, subset, reps);
            println!(
                "| {k} | {n} | {all:.0} | {sub:.0} | {iters:.1} | {} |",
                sp.combined_index().len()
            );
        }
    }
}
