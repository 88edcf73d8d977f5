//! The workload of Mesa's random VMA heap test on the exact heaps.
//!
//! ```text
//! cargo run --release -p svmap-bench --bin vma_random -- [--json]
//!     [--only IMPL[,IMPL]] [--n N[,N]] [--order highest|lowest[,..]]
//!     [--reps R] [--ops A] [--block B] [--count C] [--repeat K]
//!     [--seed S] [--no-mesa-test]
//! ```
//!
//! Two scenarios (see `svmap_bench::vma_random` for the workload):
//!
//! - `mesa-test`: Mesa's test itself, `--count` steps (default 2459, as
//!   Mesa's) from an empty heap, fills and empties included; reported: ns
//!   per operation (allocation, failed allocation or free), each repetition
//!   `--repeat` replays of the whole trace on fresh heaps.
//! - `steady`: about N live allocations (default 100, 440, 1000 and 4000):
//!   rounds of `--block` frees then `--block` allocations (default
//!   `min(32, N / 4)`), `--ops` timed allocations per repetition (default
//!   50,000) after a warm-up of 2N; reported: ns per allocation, per free
//!   and per pair (their sum).
//!
//! Every scenario runs in both placement orders (highest first is Mesa's
//! default, `alloc_high`). A trace is recorded once; each implementation
//! first replays it untimed, its every answer checked against the trace,
//! then the `--reps` timed repetitions (default 5) run with the
//! implementations interleaved, and their answers are checked again.
//! Reported: the median over the repetitions, and, counted rather than
//! timed, how many holes Mesa's list-based heap visits per allocation and
//! per free on the same trace (`hole-list` keeps the same holes in a
//! sorted array: the same scan to allocate, a binary search to free).

use std::io::Write;
use std::time::{Duration, Instant};

use svmap_bench::vma_random::{
    answers, gap_tree, hole_list, list_walks, max_block, replay, verify, Divergence, ListWalks,
    SvmapHeapVma, SvmapVma, Timing, Trace, VmaHeap, MESA_COUNT, SEED,
};

/// The implementations, in table order.
const IMPLS: &[&str] = &["svmap-heap", "svmap", "hole-list", "gap-tree-exact"];

struct Args {
    json: bool,
    only: Option<Vec<String>>,
    ns: Vec<usize>,
    orders: Vec<bool>,
    reps: usize,
    ops: usize,
    block: Option<usize>,
    count: usize,
    repeat: usize,
    seed: u64,
    mesa_test: bool,
}

/// Reports a bad command line and exits with status 2.
fn fail(msg: String) -> ! {
    eprintln!("vma_random: {msg} (see --help)");
    std::process::exit(2)
}

fn number<T: std::str::FromStr>(s: &str, flag: &str) -> T {
    s.parse()
        .unwrap_or_else(|_| fail(format!("{flag} needs a number, not {s:?}")))
}

fn positive(s: &str, flag: &str, max: usize) -> usize {
    match s.parse::<usize>() {
        Ok(v) if (1..=max).contains(&v) => v,
        _ => fail(format!("{flag}: a whole number from 1 to {max}, not {s:?}")),
    }
}

const HELP: &str = "vma_random [--json] [--only IMPL,..] [--n N,..] \
    [--order highest|lowest,..] [--reps R] [--ops A] [--block B] [--count C] [--repeat K] \
    [--seed S] [--no-mesa-test]";

fn parse_args() -> Args {
    let mut a = Args {
        json: false,
        only: None,
        ns: vec![100, 440, 1_000, 4_000],
        orders: vec![true, false],
        reps: 5,
        ops: 50_000,
        block: None,
        count: MESA_COUNT,
        repeat: 100,
        seed: SEED,
        mesa_test: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| fail(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--json" => a.json = true,
            "--no-mesa-test" => a.mesa_test = false,
            "--only" => {
                let v: Vec<String> = val().split(',').map(str::to_owned).collect();
                if let Some(bad) = v.iter().find(|i| !IMPLS.contains(&i.as_str())) {
                    fail(format!("unknown implementation {bad:?}"));
                }
                a.only = Some(v);
            }
            "--n" => {
                a.ns = val()
                    .split(',')
                    .map(|s| positive(s, "--n", 1_000_000))
                    .collect();
                if let Some(n) = a.ns.iter().find(|&&n| n < 4) {
                    fail(format!("--n {n}: at least 4 live allocations"));
                }
            }
            "--order" => {
                a.orders = val()
                    .split(',')
                    .map(|o| match o {
                        "highest" => true,
                        "lowest" => false,
                        other => fail(format!("--order highest or lowest, not {other:?}")),
                    })
                    .collect()
            }
            "--reps" => a.reps = positive(&val(), "--reps", 1_000),
            "--ops" => a.ops = positive(&val(), "--ops", 100_000_000),
            "--block" => a.block = Some(positive(&val(), "--block", 1_000_000)),
            "--count" => a.count = positive(&val(), "--count", 100_000_000),
            "--repeat" => a.repeat = positive(&val(), "--repeat", 1_000_000),
            "--seed" => a.seed = number(&val(), "--seed"),
            "--bench" => {} // passed by `cargo bench`
            "-h" | "--help" => {
                println!("{HELP}\nimplementations: {}", IMPLS.join(", "));
                std::process::exit(0);
            }
            other => fail(format!("unknown argument {other:?}")),
        }
    }
    a
}

/// Builds a fresh `name` heap and hands it to `f`.
fn with_impl<R>(name: &str, topdown: bool, f: impl Visit<R>) -> R {
    match name {
        "svmap-heap" => f.visit(|| SvmapHeapVma::new(topdown)),
        "svmap" => f.visit(|| SvmapVma::new(topdown)),
        "hole-list" => f.visit(|| hole_list(topdown)),
        "gap-tree-exact" => f.visit(|| gap_tree(topdown)),
        _ => unreachable!("unknown implementation {name}"),
    }
}

/// Something done with a fresh heap of any implementation (monomorphised
/// per implementation, so the replay loop calls it directly).
trait Visit<R> {
    fn visit<H: VmaHeap>(self, make: impl Fn() -> H) -> R;
}

struct Check<'a>(&'a Trace);

impl Visit<Result<(), Divergence>> for Check<'_> {
    fn visit<H: VmaHeap>(self, make: impl Fn() -> H) -> Result<(), Divergence> {
        verify(&mut make(), self.0)
    }
}

/// `repeat` timed replays on fresh heaps; `Err` if an answer differs from
/// the trace.
struct Time<'a> {
    trace: &'a Trace,
    expect: &'a [Option<u64>],
    repeat: usize,
}

impl Visit<Result<Timing, String>> for Time<'_> {
    fn visit<H: VmaHeap>(self, make: impl Fn() -> H) -> Result<Timing, String> {
        let mut sum = Timing::default();
        let mut out = Vec::new();
        for _ in 0..self.repeat {
            let mut h = make();
            let t = replay(&mut h, self.trace, &mut out);
            drop(h);
            if out != self.expect {
                let i = out
                    .iter()
                    .zip(self.expect)
                    .position(|(a, b)| a != b)
                    .unwrap_or(out.len().min(self.expect.len()));
                return Err(format!(
                    "a timed replay answered differently at allocation {i}"
                ));
            }
            for (s, x) in [
                (&mut sum.alloc, t.alloc),
                (&mut sum.free, t.free),
                (&mut sum.mixed, t.mixed),
            ] {
                s.0 += x.0;
                s.1 += x.1;
            }
        }
        Ok(sum)
    }
}

fn ns(d: (Duration, usize)) -> f64 {
    d.0.as_nanos() as f64 / d.1.max(1) as f64
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.is_empty() {
        f64::NAN
    } else if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// One implementation's result in one scenario.
struct Row {
    imp: &'static str,
    status: String,
    alloc: Vec<f64>,
    free: Vec<f64>,
    pair: Vec<f64>,
    op: Vec<f64>,
}

/// One scenario: a trace and the rows of its implementations.
struct Scenario {
    name: &'static str,
    n: Option<usize>,
    block: Option<usize>,
    topdown: bool,
    trace: Trace,
    walks: ListWalks,
    rows: Vec<Row>,
    wall: Duration,
}

fn run(sc: &mut Scenario, impls: &[&'static str], reps: usize, repeat: usize) {
    let t0 = Instant::now();
    let expect = answers(&sc.trace);
    sc.walks = list_walks(&sc.trace);
    for &imp in impls {
        let status = match with_impl(imp, sc.topdown, Check(&sc.trace)) {
            Ok(()) => "ok".to_owned(),
            Err(d) => format!("differs: {d}"),
        };
        sc.rows.push(Row {
            imp,
            status,
            alloc: Vec::new(),
            free: Vec::new(),
            pair: Vec::new(),
            op: Vec::new(),
        });
    }
    for rep in 0..reps {
        // Interleaved, the first implementation rotating per repetition.
        let k = sc.rows.len();
        for j in 0..k {
            let row = &mut sc.rows[(rep + j) % k];
            if row.status != "ok" {
                continue;
            }
            let time = Time {
                trace: &sc.trace,
                expect: &expect,
                repeat,
            };
            match with_impl(row.imp, sc.topdown, time) {
                Ok(t) => {
                    if t.mixed.1 > 0 {
                        row.op.push(ns(t.mixed));
                    }
                    if t.alloc.1 > 0 || t.free.1 > 0 {
                        let (a, f) = (ns(t.alloc), ns(t.free));
                        row.alloc.push(a);
                        row.free.push(f);
                        // Per pair: one allocation and one free, the blocks
                        // holding equally many.
                        row.pair.push(a + f);
                    }
                }
                Err(e) => row.status = e,
            }
        }
    }
    sc.wall = t0.elapsed();
}

fn order_label(topdown: bool) -> &'static str {
    if topdown {
        "highest"
    } else {
        "lowest"
    }
}

fn json(sc: &Scenario, r: &Row, seed: u64) -> String {
    let num = |v: &[f64]| {
        if v.is_empty() {
            "null".to_owned()
        } else {
            format!("{:.2}", median(v))
        }
    };
    let list = |v: &[f64]| {
        let s: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
        format!("[{}]", s.join(","))
    };
    let opt = |v: Option<usize>| v.map_or("null".to_owned(), |x| x.to_string());
    let st = &sc.trace.stats;
    format!(
        "{{\"bench\":\"vma_random\",\"scenario\":\"{}\",\"impl\":\"{}\",\"order\":\"{}\",\
         \"n\":{},\"block\":{},\"status\":\"{}\",\"ns_per_alloc\":{},\"ns_per_free\":{},\
         \"ns_per_pair\":{},\"ns_per_op\":{},\"reps_alloc_ns\":{},\"reps_free_ns\":{},\
         \"reps_op_ns\":{},\"mean_live\":{:.1},\"max_live\":{},\"holes_at_start\":{},\
         \"holes_at_end\":{},\"list_alloc_walk\":{:.2},\"list_free_walk\":{:.2},\"allocs\":{},\"failed_allocs\":{},\"frees\":{},\"fills\":{},\
         \"empties\":{},\"seed\":{},\"wall_s\":{:.2}}}",
        sc.name,
        r.imp,
        order_label(sc.topdown),
        opt(sc.n),
        opt(sc.block),
        r.status.replace('"', "'"),
        num(&r.alloc),
        num(&r.free),
        num(&r.pair),
        num(&r.op),
        list(&r.alloc),
        list(&r.free),
        list(&r.op),
        st.mean_live,
        st.max_live,
        st.holes_at_start,
        st.holes_at_end,
        sc.walks.alloc,
        sc.walks.free,
        st.allocs,
        st.failed,
        st.frees,
        st.fills,
        st.empties,
        seed,
        sc.wall.as_secs_f64(),
    )
}

fn print_scenario(sc: &Scenario) {
    let st = &sc.trace.stats;
    match sc.n {
        None => println!(
            "\n{} ({} first): {} allocations ({} found no room), {} frees, {} fills, \
             {} empties; live mean {:.0}, max {}, at the end {}; holes at the end {}",
            sc.name,
            order_label(sc.topdown),
            st.allocs,
            st.failed,
            st.frees,
            st.fills,
            st.empties,
            st.mean_live,
            st.max_live,
            st.final_live,
            st.holes_at_end
        ),
        Some(n) => println!(
            "\n{} N={} ({} first, block {}): live mean {:.1}; holes {} at the start, {} at \
             the end; {} timed allocations ({} found no room), {} timed frees",
            sc.name,
            n,
            order_label(sc.topdown),
            sc.block.unwrap_or(0),
            st.mean_live,
            st.holes_at_start,
            st.holes_at_end,
            st.allocs,
            st.failed,
            st.frees
        ),
    }
    println!(
        "  Mesa's list would visit {:.1} holes per allocation, {:.1} per free",
        sc.walks.alloc, sc.walks.free
    );
    for r in &sc.rows {
        if r.status != "ok" {
            println!("  {:<15} {}", r.imp, r.status);
        } else if sc.n.is_none() {
            println!("  {:<15} {:>8.1} ns/op", r.imp, median(&r.op));
        } else {
            println!(
                "  {:<15} alloc {:>8.1} ns   free {:>8.1} ns   pair {:>8.1} ns",
                r.imp,
                median(&r.alloc),
                median(&r.free),
                median(&r.pair)
            );
        }
    }
}

/// ns per `Instant::now()`.
fn timer_ns() -> f64 {
    let k = 1_000_000u32;
    let t0 = Instant::now();
    let mut last = t0;
    for _ in 0..k {
        last = std::hint::black_box(Instant::now());
    }
    (last - t0).as_nanos() as f64 / f64::from(k)
}

fn main() {
    let a = parse_args();
    let impls: Vec<&'static str> = IMPLS
        .iter()
        .copied()
        .filter(|i| a.only.as_ref().is_none_or(|o| o.iter().any(|x| x == i)))
        .collect();
    let t_all = Instant::now();
    let stdout = std::io::stdout();
    let timer = timer_ns();
    if a.json {
        println!("{{\"bench\":\"vma_random\",\"timer_ns\":{timer:.2}}}");
    } else {
        println!(
            "vma_random: seed {}, {} repetitions (median); Instant::now() takes {timer:.1} ns, \
             about one per timed block is in its time",
            a.seed, a.reps
        );
    }
    let emit = |sc: &Scenario| {
        if a.json {
            let mut lock = stdout.lock();
            for r in &sc.rows {
                writeln!(lock, "{}", json(sc, r, a.seed)).expect("stdout");
            }
            lock.flush().expect("stdout");
        } else {
            print_scenario(sc);
        }
    };
    for &topdown in &a.orders {
        if a.mesa_test {
            eprint!(
                "[{:6.1}s] mesa-test {} first, {} steps ... ",
                t_all.elapsed().as_secs_f64(),
                order_label(topdown),
                a.count
            );
            let mut sc = Scenario {
                name: "mesa-test",
                n: None,
                block: None,
                topdown,
                trace: Trace::mesa_test(a.count, a.seed, topdown),
                walks: ListWalks::default(),
                rows: Vec::new(),
                wall: Duration::ZERO,
            };
            run(&mut sc, &impls, a.reps, a.repeat);
            eprintln!("{:.1}s", sc.wall.as_secs_f64());
            emit(&sc);
        }
        for &n in &a.ns {
            let block = a.block.unwrap_or((n / 4).clamp(1, 32));
            if block > max_block(n) {
                fail(format!(
                    "--block {block}: at most {} for N={n}",
                    max_block(n)
                ));
            }
            eprint!(
                "[{:6.1}s] steady N={n} {} first ... ",
                t_all.elapsed().as_secs_f64(),
                order_label(topdown)
            );
            let trace = Trace::steady(n, block, 2 * n, a.ops.div_ceil(block), a.seed, topdown)
                .unwrap_or_else(|e| fail(e.to_string()));
            let mut sc = Scenario {
                name: "steady",
                n: Some(n),
                block: Some(block),
                topdown,
                trace,
                walks: ListWalks::default(),
                rows: Vec::new(),
                wall: Duration::ZERO,
            };
            run(&mut sc, &impls, a.reps, 1);
            eprintln!("{:.1}s", sc.wall.as_secs_f64());
            emit(&sc);
        }
    }
    eprintln!("total {:.1}s", t_all.elapsed().as_secs_f64());
}
