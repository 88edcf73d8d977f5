//! A churn driver for instruction counting: fills `N` ranges, warms up 2N
//! steps, then runs `STEPS` timed steps in [`steps`], which callgrind can
//! count alone:
//!
//! ```sh
//! cargo build --release -p svmap-bench --example churn_count
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*churn_count*steps*' \
//!     target/release/examples/churn_count svmap 10000 20000 4k lowest
//! ```
//!
//! Instructions per pair = the total `Ir` / `STEPS`. Implementations:
//! `svmap`, `svmap-heap`, `gap-tree`, `offset-allocator`, `hole-list`.

use std::hint::black_box;

use svmap_bench::peers::holelist::HoleList;
use svmap_bench::peers::holetree::HoleTree;
use svmap_bench::peers::offsetalloc::OffsetAlloc;
use svmap_bench::peers::svmap::Svmap;
use svmap_bench::peers::svmapheap::SvmapHeap;
use svmap_bench::workload::{Churn, SplitMix64, Step, SEED};

/// The counted part: `steps` frees and allocations.
#[inline(never)]
fn steps<C: Churn>(c: &mut C, live: &mut [C::Handle], steps: &[Step]) {
    for st in steps {
        let slot = &mut live[st.victim as usize];
        c.free(*slot);
        *slot = black_box(c.alloc(st.bytes));
    }
}

fn gen(rng: &mut SplitMix64, count: usize, n: u32) -> Vec<Step> {
    (0..count)
        .map(|_| {
            let victim = rng.below(n);
            let bytes = rng.size();
            Step { victim, bytes }
        })
        .collect()
}

fn run<C: Churn>(mut c: C, n: usize, count: usize) {
    let mut rng = SplitMix64::new(SEED);
    let fill = gen(&mut rng, n, 1);
    let mut live: Vec<C::Handle> = fill.iter().map(|s| c.alloc(s.bytes)).collect();
    let warm = gen(&mut rng, 2 * n, n as u32);
    for st in &warm {
        let slot = &mut live[st.victim as usize];
        c.free(*slot);
        *slot = c.alloc(st.bytes);
    }
    let timed = gen(&mut rng, count, n as u32);
    let t0 = std::time::Instant::now();
    steps(&mut c, &mut live, &timed);
    let ns = t0.elapsed().as_nanos() as f64 / count as f64;
    eprintln!(
        "n {n} steps {count}: {ns:.0} ns/pair, {:.2} B/range (reported), holes/search {:?}, rescans/alloc {:?}",
        c.reported_heap_bytes().unwrap_or(0) as f64 / n as f64,
        c.holes_per_search(),
        c.rescans_per_alloc()
    );
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let usage = "churn_count IMPL N STEPS [4k|2m] [lowest|highest]";
    let imp = a.get(1).expect(usage).as_str();
    let n: usize = a.get(2).expect(usage).parse::<f64>().expect(usage) as usize;
    let count: usize = a.get(3).expect(usage).parse::<f64>().expect(usage) as usize;
    let align = match a.get(4).map(String::as_str) {
        None | Some("4k") => 4096,
        Some("2m") => 2 << 20,
        _ => panic!("{usage}"),
    };
    let top = a.get(5).is_some_and(|o| o == "highest");
    match imp {
        "svmap" => run(Svmap::new(align, top), n, count),
        "svmap-heap" => run(SvmapHeap::new(align, top), n, count),
        "gap-tree" => run(HoleTree::new(align, top), n, count),
        "offset-allocator" => run(OffsetAlloc::new(n), n, count),
        "hole-list" => run(HoleList::new(align, top), n, count),
        _ => panic!("{usage}"),
    }
}
