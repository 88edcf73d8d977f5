//! The "churn" benchmark.
//!
//! ```text
//! cargo run --release -p svmap-bench --bin churn -- [--quick] [--json]
//!     [--only IMPL[,IMPL]] [--n N[,N]] [--align 4k|2m] [--order lowest|highest]
//!     [--reps R] [--steps S] [--limit SECS] [--with-1e7]
//! ```
//!
//! Every implementation runs the same fixed-seed sequence: fill N ranges,
//! warm up with 2N steps, then `--reps` timed repetitions of `--steps` steps
//! (default `clamp(N, 20k, 200k)`); a step frees a random live range and
//! allocates a new one (log-uniform 4 KiB..2 MiB in pages). Reported: the
//! median ns per (free + allocate) pair, and the live heap bytes after the
//! warm-up divided by N (counting global allocator).

use std::io::Write;
use std::time::Instant;

use svmap_bench::count_alloc::Counting;
use svmap_bench::peers::{
    gaptree::GapTree, holelist::HoleList, holetree::HoleTree, kernel, kernel::Kernel,
    offsetalloc::OffsetAlloc, rangealloc::RangeAlloc, svmap::Svmap, svmapheap::SvmapHeap,
    vmalloc::VmAlloc, Order,
};
use svmap_bench::workload::{measure, Measurement, Plan};

#[global_allocator]
static ALLOC: Counting = Counting;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;

/// The implementations, in table order.
const IMPLS: &[&str] = &[
    "svmap",
    "svmap-heap",
    "offset-allocator",
    "gap-tree",
    "gap-tree-exact",
    "vm-allocator",
    "range-alloc",
    "hole-list",
    "kernel",
];

/// Whether an implementation's cost grows linearly with N (for the
/// time-limit estimate).
fn linear(imp: &str) -> bool {
    matches!(imp, "vm-allocator" | "range-alloc" | "hole-list")
}

/// The rows of an implementation: (align, order, None if measured or
/// Some(reason) if it cannot express the case).
fn rows(imp: &str) -> Vec<(u64, Order, Option<&'static str>)> {
    use Order::*;
    let std4 = |why: Option<&'static str>| {
        vec![
            (K4, Lowest, why),
            (K4, Highest, why),
            (M2, Lowest, why),
            (M2, Highest, why),
        ]
    };
    match imp {
        "range-alloc" => {
            let mut v = vec![(K4, BestFit, None), (M2, BestFit, None)];
            v.extend(std4(Some("n/a (best fit only)")));
            v
        }
        "offset-allocator" => {
            let mut v = vec![
                (K4, Unordered, None),
                (M2, Unordered, Some("n/a (no alignment)")),
            ];
            v.extend(std4(Some("n/a (no address order)")));
            v
        }
        "kernel" => vec![
            (K4, Highest, None),
            (K4, Lowest, Some("n/a (mmap is top-down)")),
            (M2, Lowest, Some("n/a (mmap has no alignment argument)")),
            (M2, Highest, Some("n/a (mmap has no alignment argument)")),
        ],
        _ => std4(None),
    }
}

fn run(imp: &str, n: usize, align: u64, order: Order, plan: &Plan) -> Measurement {
    let top = order == Order::Highest;
    match imp {
        "svmap" => measure(|| Svmap::new(align, top), plan),
        "svmap-heap" => measure(|| SvmapHeap::new(align, top), plan),
        "offset-allocator" => measure(|| OffsetAlloc::new(n), plan),
        "gap-tree" => measure(|| HoleTree::new(align, top), plan),
        "gap-tree-exact" => measure(|| GapTree::new(align, top), plan),
        "vm-allocator" => measure(|| VmAlloc::new(align, top), plan),
        "range-alloc" => measure(|| RangeAlloc::new(align), plan),
        "hole-list" => measure(|| HoleList::new(align, top), plan),
        "kernel" => measure(|| Kernel, plan),
        _ => unreachable!("unknown implementation {imp}"),
    }
}

struct Args {
    quick: bool,
    json: bool,
    only: Option<Vec<String>>,
    ns: Option<Vec<usize>>,
    align: Option<u64>,
    order: Option<String>,
    reps: Option<usize>,
    steps: Option<usize>,
    limit_s: f64,
    with_1e7: bool,
}

/// Reports a bad command line and exits with status 2.
fn fail(msg: String) -> ! {
    eprintln!("churn: {msg} (see --help)");
    std::process::exit(2)
}

fn parse_n(s: &str) -> usize {
    match s.parse::<f64>() {
        Ok(v) if (1.0..=1e9).contains(&v) && v.fract() == 0.0 => v as usize,
        _ => fail(format!("bad N {s:?}: a whole number from 1 to 1e9")),
    }
}

fn number<T: std::str::FromStr>(s: &str, flag: &str) -> T {
    s.parse()
        .unwrap_or_else(|_| fail(format!("{flag} needs a number, not {s:?}")))
}

fn parse_args() -> Args {
    let mut a = Args {
        quick: false,
        json: false,
        only: None,
        ns: None,
        align: None,
        order: None,
        reps: None,
        steps: None,
        limit_s: 0.0,
        with_1e7: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| fail(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--json" => a.json = true,
            "--with-1e7" => a.with_1e7 = true,
            "--only" => a.only = Some(val().split(',').map(str::to_owned).collect()),
            "--n" => a.ns = Some(val().split(',').map(parse_n).collect()),
            "--align" => {
                a.align = Some(match val().to_ascii_lowercase().as_str() {
                    "4k" | "4096" => K4,
                    "2m" | "2097152" => M2,
                    other => fail(format!("--align 4k or 2m, not {other:?}")),
                })
            }
            "--order" => a.order = Some(val()),
            "--reps" => a.reps = Some(number(&val(), "--reps")),
            "--steps" => a.steps = Some(number(&val(), "--steps")),
            "--limit" => a.limit_s = number(&val(), "--limit"),
            "--no-limit" => a.limit_s = f64::INFINITY,
            "--bench" => {} // passed by `cargo bench`
            "-h" | "--help" => {
                println!(
                    "churn [--quick] [--json] [--only IMPL,..] [--n N,..] [--align 4k|2m] \
                     [--order lowest|highest|best-fit|unordered] [--reps R] [--steps S] \
                     [--limit SECS] [--with-1e7]\nimplementations: {}",
                    IMPLS.join(", ")
                );
                std::process::exit(0);
            }
            other => fail(format!("unknown argument {other:?}")),
        }
    }
    a
}

/// One line of the result.
struct Row {
    imp: &'static str,
    n: usize,
    align: u64,
    order: Order,
    status: String,
    m: Option<Measurement>,
    plan: Option<Plan>,
}

fn json(r: &Row) -> String {
    let num = |x: Option<f64>| x.map_or("null".to_owned(), |v| format!("{v:.2}"));
    let m = r.m.as_ref();
    let reps = m.map_or("[]".to_owned(), |m| {
        let v: Vec<String> = m.reps_ns.iter().map(|x| format!("{x:.2}")).collect();
        format!("[{}]", v.join(","))
    });
    format!(
        "{{\"bench\":\"churn\",\"impl\":\"{}\",\"n\":{},\"align\":{},\"order\":\"{}\",\
         \"status\":\"{}\",\"ns_per_pair\":{},\"bytes_per_range\":{},\
         \"reported_bytes_per_range\":{},\"warmup_ns_per_pair\":{},\"reps_ns\":{},\
         \"holes_per_search\":{},\"rescans_per_alloc\":{},\"reps\":{},\"steps_per_rep\":{},\
         \"wall_s\":{}}}",
        r.imp,
        r.n,
        r.align,
        r.order.label(),
        r.status,
        num(m.map(|m| m.ns_per_pair)),
        num(m.filter(|_| r.imp != "kernel").map(|m| m.bytes_per_range)),
        num(m.and_then(|m| m.reported_bytes_per_range)),
        num(m.map(|m| m.warmup_ns_per_pair)),
        reps,
        num(m.and_then(|m| m.holes_per_search)),
        num(m.and_then(|m| m.rescans_per_alloc)),
        r.plan.map_or(0, |p| p.reps),
        m.map_or(0, |m| m.steps_per_rep),
        num(m.map(|m| m.wall.as_secs_f64())),
    )
}

fn align_label(a: u64) -> &'static str {
    if a == K4 {
        "4K"
    } else {
        "2M"
    }
}

fn print_table(rows: &[Row], ns: &[usize], kernel_ns: &[usize]) {
    let mut all: Vec<usize> = ns.iter().chain(kernel_ns).copied().collect();
    all.sort_unstable();
    all.dedup();
    print!("{:<18} {:<5} {:<10}", "impl", "align", "order");
    for n in &all {
        print!(" {:>13}", format!("N={n}"));
    }
    println!("   B/range@maxN");
    let mut keys: Vec<(&str, u64, Order)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.imp, r.align, r.order)) {
            keys.push((r.imp, r.align, r.order));
        }
    }
    for (imp, align, order) in keys {
        print!("{imp:<18} {:<5} {:<10}", align_label(align), order.label());
        let mut bytes = None;
        for n in &all {
            let cell = rows
                .iter()
                .find(|r| r.imp == imp && r.align == align && r.order == order && r.n == *n);
            let s = match cell {
                Some(Row { m: Some(m), .. }) => {
                    if imp != "kernel" {
                        bytes = Some(m.bytes_per_range);
                    }
                    format!("{:.0} ns", m.ns_per_pair)
                }
                Some(r) if r.status.starts_with("n/a") => "n/a".to_owned(),
                Some(r) if r.status.starts_with("skipped") => "skipped".to_owned(),
                _ => "-".to_owned(),
            };
            print!(" {s:>13}");
        }
        match bytes {
            Some(b) => println!("   {b:.1}"),
            None => println!(),
        }
    }
    let na: Vec<&Row> = rows
        .iter()
        .filter(|r| r.status.starts_with("n/a"))
        .collect();
    if !na.is_empty() {
        println!("\nn/a: the implementation cannot express the case:");
        let mut seen = Vec::new();
        for r in na {
            let line = format!(
                "  {} {} {}: {}",
                r.imp,
                align_label(r.align),
                r.order.label(),
                r.status
            );
            if !seen.contains(&line) {
                println!("{line}");
                seen.push(line);
            }
        }
    }
    println!("skipped: warm-up plus run estimated over the per-measurement time limit.");
}

fn main() {
    let mut args = parse_args();
    if args.limit_s == 0.0 {
        args.limit_s = if args.quick { 5.0 } else { 60.0 };
    }
    let ns: Vec<usize> = match (&args.ns, args.quick) {
        (Some(v), _) => v.clone(),
        (None, true) => vec![1_000, 10_000],
        (None, false) if args.with_1e7 => vec![1_000, 10_000, 100_000, 1_000_000, 10_000_000],
        (None, false) => vec![1_000, 10_000, 100_000, 1_000_000],
    };
    // The kernel's own sizes: below vm.max_map_count.
    let max_maps = kernel::max_map_count();
    let kernel_ns: Vec<usize> = match (&args.ns, args.quick) {
        (Some(v), _) => v.clone(),
        (None, true) => vec![1_000, 10_000],
        (None, false) => vec![1_000, 10_000, 60_000],
    };
    let t_all = Instant::now();
    let mut out: Vec<Row> = Vec::new();
    let stdout = std::io::stdout();
    for &imp in IMPLS {
        if let Some(only) = &args.only {
            if !only.iter().any(|o| o == imp) {
                continue;
            }
        }
        let imp_ns = if imp == "kernel" { &kernel_ns } else { &ns };
        for (align, order, why) in rows(imp) {
            if args.align.is_some_and(|a| a != align) {
                continue;
            }
            if args.order.as_ref().is_some_and(|o| o != order.label()) {
                continue;
            }
            // (n, ns per pair) of the last measured N, for the estimate.
            let mut prev: Option<(usize, f64)> = None;
            let mut prev2: Option<(usize, f64)> = None;
            let mut skipping = false;
            for &n in imp_ns {
                let mut plan = if args.quick {
                    Plan::quick(n)
                } else {
                    Plan::standard(n)
                };
                if let Some(r) = args.reps {
                    plan.reps = r;
                }
                if let Some(s) = args.steps {
                    plan.steps_per_rep = s;
                    plan.rep_target = None;
                }
                let mut row = Row {
                    imp,
                    n,
                    align,
                    order,
                    status: "ok".to_owned(),
                    m: None,
                    plan: None,
                };
                if let Some(w) = why {
                    row.status = w.to_owned();
                } else if imp == "kernel" && n + kernel::vma_count() + 1000 > max_maps {
                    row.status = format!("skipped (vm.max_map_count = {max_maps})");
                } else {
                    if let Some((pn, pns)) = prev {
                        let ratio = n as f64 / pn as f64;
                        // Per-pair cost growth: linear for the O(n) peers,
                        // else what the last two sizes showed (at least 1.3
                        // per step of N).
                        let seen = prev2.map_or(1.3, |(qn, qns): (usize, f64)| {
                            (pns / qns).powf(ratio.ln() / (pn as f64 / qn as f64).ln())
                        });
                        let growth = if linear(imp) { ratio } else { seen.max(1.3) };
                        let est = plan.estimate_s(pns * growth);
                        if est > args.limit_s {
                            skipping = true;
                        }
                    }
                    if skipping {
                        row.status = "skipped (too slow)".to_owned();
                    } else {
                        eprint!(
                            "[{:6.1}s] {imp} n={n} align={} order={} ... ",
                            t_all.elapsed().as_secs_f64(),
                            align_label(align),
                            order.label()
                        );
                        let m = run(imp, n, align, order, &plan);
                        eprintln!(
                            "{:.1} ns/pair, {:.1} B/range ({:.1}s)",
                            m.ns_per_pair,
                            m.bytes_per_range,
                            m.wall.as_secs_f64()
                        );
                        // The warm-up is the better estimate for O(n) peers
                        // whose cost still grows during the run.
                        prev2 = prev;
                        prev = Some((n, m.ns_per_pair.max(m.warmup_ns_per_pair)));
                        row.m = Some(m);
                        row.plan = Some(plan);
                    }
                }
                if args.json {
                    let mut lock = stdout.lock();
                    writeln!(lock, "{}", json(&row)).expect("stdout");
                    lock.flush().expect("stdout");
                }
                out.push(row);
            }
        }
    }
    eprintln!("total {:.1}s", t_all.elapsed().as_secs_f64());
    if !args.json {
        print_table(&out, &ns, &kernel_ns);
    }
}
