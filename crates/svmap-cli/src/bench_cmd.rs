//! `svmap bench churn`: the churn workload of `docs/PERFORMANCE.md` on
//! svmap's own map alone, for users and for tools that read its JSON line;
//! `svmap bench svm`: alloc + free pairs on real memory through the SVM
//! runtime with device processes, against `mmap` + `munmap`;
//! `svmap bench svm-layer`: the pure SVM layer against the bare map.

use std::ffi::OsString;

use svmap_bench::peers::svmap::Svmap;
use svmap_bench::workload::{max_align, measure, Plan, MAX_LIVE};

use svmap_runtime::bench;

use crate::args::{self, Arg, Stop};

/// Help text of `svmap bench`.
pub const HELP: &str = r#"svmap bench: measure svmap's address map or its SVM runtime

Usage: svmap bench churn --live N [--align BYTES] [--highest] [--quick] [--json]
       svmap bench svm --live N [--devices K] [--steps S] [--punch-batch BYTES]
                       [--guarded] [--json]
       svmap bench svm-layer [--live N]... [--steps S] [--json]
       svmap bench migrate

svmap bench migrate: page migration between this process and one device
process: prefetch throughput to the device and back (16 MiB in 4 KiB
granules, 64 MiB in 2 MiB granules) against memcpy of the same size, and the
mean latency of a CPU read of a granule held by the device (fault, migration
back, wake) against a first touch of a fresh anonymous page. Prints a
Markdown table.

svmap bench churn: svmap's own address map on the churn workload.

Fills a 2^47-byte window with N live ranges (sizes log-uniform from 4 KiB to
2 MiB in pages, fixed seed), runs 2N warm-up steps, then timed repetitions
of steps that each free a random live range and allocate a new one (exact
aligned fit, lowest or highest address first). Reports the median ns per
(free + allocate) pair and the heap bytes per live range as the map
accounts them itself (its nodes' allocations; this command installs no
counting allocator). The peers' figures, with every allocator byte counted,
come from `cargo run --release -p svmap-bench --bin churn`
(docs/PERFORMANCE.md).

Options:
  --live N        live ranges, 1..=2e7 (e.g. 1000, 1e6; required)
  --align BYTES   alignment of every allocation: a power of two from 4096
                  up to the largest with which N ranges always fit in the
                  window, N * (4 MiB + align) <= 2^47 (2 MiB for N = 2e7,
                  128 MiB for N = 1e6, 2^46 for N = 1); default 4096;
                  suffixes k, m, g allowed: 2m
  --highest       highest address first (default: lowest)
  --quick         fewer, shorter repetitions
  --json          one JSON line: impl, n, align, order, ns_per_pair,
                  bytes_per_range (the map's own byte accounting),
                  reported_bytes_per_range (the same figure), holes_per_search,
                  warmup_ns_per_pair, reps_ns, steps_per_rep, wall_s
  -h, --help      this help

Build with --release: a debug build measures the debug code.

Examples:
  svmap bench churn --live 1e6 --align 2m --json
  cargo run --release -- bench churn --live 10000 --highest

Exit status: 0 measured; 2 usage error.

svmap bench svm: the SVM runtime on real memory. Starts K device processes
(svmap device-peer, 40 and 44 bits in turn; with K = 0 none, and a model
device of 44 bits gives the window its width), reserves their common window
(one sparse shared memfd), allocates N live buffers for all K devices
(sizes log-uniform from 4 KiB to 2 MiB, fixed seed, one word written in
each), then times S steps that each free a random buffer (invalidated and
acknowledged on every device) and allocate a new one. In the same run, the
same work through plain mmap + munmap, a MAP_SHARED memfd mmap + munmap,
and the per-buffer-memfd heap (these with at most 30000 live buffers, below
vm.max_map_count; the heap also below RLIMIT_NOFILE). RssShmem is read
before the runtime's buffers exist, with all of them live, and after
freeing them all (before and after the sparse heap's batch of pending
punches is flushed).

Options:
  --live N        live buffers, 1..=1e6 (required)
  --devices K     device processes, 0..=8 (default 0)
  --steps S       timed steps, 1..=1e7 (default 10000)
  --punch-batch BYTES
                  freed bytes the sparse heap may leave unpunched before it
                  punches them (coalesced), 0..=1g; 0 punches every free at
                  once; default 16m; suffixes k, m, g allowed
  --guarded       freed ranges PROT_NONE on the CPU (use after free faults)
  --json          one JSON line: live, devices, device_bits, steps, guarded,
                  punch_batch,
                  ns_per_pair, syscalls_per_pair, device_syscalls_per_pair,
                  mmap_ns_per_pair, mmap_syscalls_per_pair, mmap_live,
                  memfd_ns_per_pair, memfd_syscalls_per_pair,
                  heap_ns_per_pair, heap_syscalls_per_pair, heap_live,
                  ratio_vs_mmap, rss_shmem_start_kib, rss_shmem_peak_kib,
                  rss_shmem_unflushed_kib, rss_shmem_after_free_kib, wall_s
  -h, --help      this help

System calls are counted by the code that makes them (the sparse heaps'
punches and mprotects, the device sockets' sendmsg/recvmsg/poll); the
baselines' are the calls each pair makes by construction (2, 5 and 6).

Example:
  cargo run --release -- bench svm --live 10000 --devices 2

Exit status: 0 measured; 1 the measurement failed; 2 usage error.

svmap bench svm-layer: the SVM engine's own cost, without memory or device
processes. For each N, in one run and on the same sequence (N live ranges,
sizes log-uniform from 4 KiB to 2 MiB, fixed seed, lowest address first,
then S steps that each free a random range and allocate a new one): the
bare address map (AddressMap::allocate + unmap), then svm_alloc + svm_free
of the engine with the model backends (no system calls) with 0, 1 and 8
devices (40 and 44 bits in turn), and with 1 device and its window
reserved first, as the runtime does. Each figure is the median ns per pair
of 3 repetitions of S/3 steps.

Options:
  --live N        live ranges, 1..=1e6; repeat for several (default 1e3,
                  1e4 and 1e5)
  --steps S       timed steps per subject, 3..=1e7 (default 60000)
  --json          one JSON line per N: live, steps, map_ns_per_pair,
                  svm0_ns_per_pair, svm1_ns_per_pair, svm8_ns_per_pair,
                  svm1_window_ns_per_pair, and each of those four divided
                  by map_ns_per_pair (svm0_vs_map, svm1_vs_map, svm8_vs_map,
                  svm1_window_vs_map)
  -h, --help      this help

Example:
  cargo run --release -- bench svm-layer --json

Exit status: 0 measured; 1 the measurement failed; 2 usage error.
"#;

fn parse_count(s: &str) -> Option<usize> {
    if let Some((m, e)) = s.split_once(['e', 'E']) {
        let m: usize = m.parse().ok()?;
        let e: u32 = e.parse().ok()?;
        return m.checked_mul(10usize.checked_pow(e)?);
    }
    s.parse().ok()
}

fn parse_bytes(s: &str) -> Option<u64> {
    if !s.is_ascii() {
        return None;
    }
    let (num, mul) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v: u64 = if let Some(h) = num.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()?
    } else {
        num.parse().ok()?
    };
    v.checked_mul(mul)
}

fn usage_error(msg: &str) -> i32 {
    eprintln!("svmap bench: {msg}\n(see svmap bench --help)");
    2
}

/// What `svmap bench churn` was asked for.
struct Options {
    live: usize,
    align: u64,
    highest: bool,
    quick: bool,
    json: bool,
}

/// The arguments after `bench churn`.
fn parse_churn(p: &mut args::Parser) -> Result<Options, Stop> {
    let (mut live, mut align, mut highest, mut quick, mut json) =
        (None, None::<u64>, false, false, false);
    while let Some(arg) = p.next()? {
        match arg {
            Arg::Long("live") => {
                let v = args::text("--live", args::value(p, "--live", "a positive count")?)?;
                match parse_count(&v) {
                    Some(n) if (1..=MAX_LIVE).contains(&n) => live = Some(n),
                    _ => {
                        return Err(Stop::Usage(format!(
                            "--live {v:?} is not a count in 1..=2e7 (e.g. 1000, 1e6)"
                        )))
                    }
                }
            }
            Arg::Long("align") => {
                let v = args::text("--align", args::value(p, "--align", "a byte count")?)?;
                match parse_bytes(&v) {
                    Some(b) if b.is_power_of_two() && b >= 4096 => align = Some(b),
                    _ => {
                        return Err(Stop::Usage(format!(
                            "--align {v:?} is not a power of two >= 4096 (e.g. 4096, 64k, 2m)"
                        )))
                    }
                }
            }
            Arg::Long("highest") => highest = true,
            Arg::Long("quick") => quick = true,
            Arg::Long("json") => json = true,
            Arg::Short('h') | Arg::Long("help") => return Err(Stop::Help),
            other => return Err(args::unknown(other)),
        }
    }
    let live = live.ok_or_else(|| Stop::Usage("--live N is required".to_owned()))?;
    let align = align.unwrap_or(4096);
    // `live` is in 1..=MAX_LIVE, where the bound exists.
    let most = max_align(live).unwrap_or(4096);
    if align > most {
        return Err(Stop::Usage(format!(
            "--align {align:#x} is too large for --live {live}: {live} ranges of up to 2 MiB \
             aligned to A fit in the 2^47-byte window at every step only if \
             {live} * (4 MiB + A) <= 2^47, so A is at most {most:#x}"
        )));
    }
    Ok(Options {
        live,
        align,
        highest,
        quick,
        json,
    })
}

/// What `svmap bench svm` was asked for.
struct SvmOptions {
    cfg: bench::Config,
    json: bool,
}

fn count_in(opt: &str, v: &str, lo: usize, hi: usize, range: &str) -> Result<usize, Stop> {
    match parse_count(v) {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(Stop::Usage(format!(
            "{opt} {v:?} is not a count in {range}"
        ))),
    }
}

/// The arguments after `bench svm`.
fn parse_svm(p: &mut args::Parser) -> Result<SvmOptions, Stop> {
    let (mut live, mut devices, mut steps, mut guarded, mut json) = (None, 0, 10_000, false, false);
    let mut punch_batch = svmap_runtime::sparse::DEFAULT_PUNCH_BATCH;
    while let Some(arg) = p.next()? {
        match arg {
            Arg::Long("live") => {
                let v = args::text("--live", args::value(p, "--live", "a positive count")?)?;
                live = Some(count_in("--live", &v, 1, bench::MAX_LIVE, "1..=1e6")?);
            }
            Arg::Long("devices") => {
                let v = args::text("--devices", args::value(p, "--devices", "a count")?)?;
                devices = count_in("--devices", &v, 0, bench::MAX_DEVICES, "0..=8")?;
            }
            Arg::Long("steps") => {
                let v = args::text("--steps", args::value(p, "--steps", "a positive count")?)?;
                steps = count_in("--steps", &v, 1, bench::MAX_STEPS, "1..=1e7")?;
            }
            Arg::Long("punch-batch") => {
                let v = args::text(
                    "--punch-batch",
                    args::value(p, "--punch-batch", "a byte count")?,
                )?;
                match parse_bytes(&v) {
                    Some(b) if b <= bench::MAX_PUNCH_BATCH => punch_batch = b,
                    _ => {
                        return Err(Stop::Usage(format!(
                            "--punch-batch {v:?} is not a byte count in 0..=1g (e.g. 0, 4m)"
                        )))
                    }
                }
            }
            Arg::Long("guarded") => guarded = true,
            Arg::Long("json") => json = true,
            Arg::Short('h') | Arg::Long("help") => return Err(Stop::Help),
            other => return Err(args::unknown(other)),
        }
    }
    let live = live.ok_or_else(|| Stop::Usage("--live N is required".to_owned()))?;
    Ok(SvmOptions {
        cfg: bench::Config {
            live,
            devices,
            steps,
            guarded,
            punch_batch,
        },
        json,
    })
}

fn run_svm(p: &mut args::Parser) -> i32 {
    let SvmOptions { cfg, json } = match parse_svm(p) {
        Ok(o) => o,
        Err(Stop::Help) => {
            print!("{HELP}");
            return 0;
        }
        Err(Stop::Usage(m)) => return usage_error(&m),
    };
    let tty = crate::progress::enabled();
    if tty {
        eprint!(
            "measuring {} live buffers, {} device processes, {} steps...",
            cfg.live, cfg.devices, cfg.steps
        );
    }
    let r = match bench::run(&cfg, &svmap_peer::device_peer_command) {
        Ok(r) => r,
        Err(e) => {
            if tty {
                eprintln!();
            }
            eprintln!("svmap bench svm: {e}");
            return 1;
        }
    };
    if tty {
        eprintln!(" done in {:.1?}", r.wall);
    }
    let ratio = r.mmap.ns_per_pair / r.runtime.ns_per_pair.max(f64::MIN_POSITIVE);
    if json {
        let v = serde_json::json!({
            "live": cfg.live,
            "devices": cfg.devices,
            "device_bits": r.device_bits,
            "steps": cfg.steps,
            "guarded": cfg.guarded,
            "punch_batch": r.punch_batch,
            "ns_per_pair": r.runtime.ns_per_pair,
            "syscalls_per_pair": r.runtime.syscalls_per_pair,
            "device_syscalls_per_pair": r.runtime.device_syscalls_per_pair,
            "mmap_ns_per_pair": r.mmap.ns_per_pair,
            "mmap_syscalls_per_pair": r.mmap.syscalls_per_pair,
            "mmap_live": r.mmap.live,
            "memfd_ns_per_pair": r.memfd.ns_per_pair,
            "memfd_syscalls_per_pair": r.memfd.syscalls_per_pair,
            "heap_ns_per_pair": r.heap.ns_per_pair,
            "heap_syscalls_per_pair": r.heap.syscalls_per_pair,
            "heap_live": r.heap.live,
            "ratio_vs_mmap": ratio,
            "rss_shmem_start_kib": r.rss_shmem_start_kib,
            "rss_shmem_peak_kib": r.rss_shmem_peak_kib,
            "rss_shmem_unflushed_kib": r.rss_shmem_unflushed_kib,
            "rss_shmem_after_free_kib": r.rss_shmem_after_free_kib,
            "wall_s": r.wall.as_secs_f64(),
        });
        println!("{v}");
    } else {
        println!(
            "svmap svm: {} live buffers, {} device processes {:?}, {} steps, punch batch {}{}",
            cfg.live,
            cfg.devices,
            r.device_bits,
            cfg.steps,
            r.punch_batch,
            if cfg.guarded { ", guarded" } else { "" }
        );
        println!(
            "  {:<34} {:>10} {:>10} {:>8}",
            "", "ns/pair", "calls/pair", "live"
        );
        for (name, f) in [
            ("runtime", &r.runtime),
            ("mmap + munmap", &r.mmap),
            ("memfd MAP_SHARED mmap + munmap", &r.memfd),
            ("per-buffer-memfd heap", &r.heap),
        ] {
            println!(
                "  {name:<34} {:>10.1} {:>10.2} {:>8}",
                f.ns_per_pair, f.syscalls_per_pair, f.live
            );
        }
        println!(
            "  of the runtime's calls, on device sockets: {:.2} per pair",
            r.runtime.device_syscalls_per_pair
        );
        println!("  mmap + munmap / runtime: {ratio:.2}x");
        println!(
            "  RssShmem KiB: {} before, {} with all live, {} after freeing all, {} flushed",
            r.rss_shmem_start_kib,
            r.rss_shmem_peak_kib,
            r.rss_shmem_unflushed_kib,
            r.rss_shmem_after_free_kib
        );
        println!("  wall time: {:.1?}", r.wall);
    }
    0
}

/// What `svmap bench svm-layer` was asked for.
#[derive(Debug)]
struct LayerOptions {
    live: Vec<usize>,
    steps: usize,
    json: bool,
}

/// The arguments after `bench svm-layer`.
fn parse_layer(p: &mut args::Parser) -> Result<LayerOptions, Stop> {
    let (mut live, mut steps, mut json) = (Vec::new(), 60_000, false);
    while let Some(arg) = p.next()? {
        match arg {
            Arg::Long("live") => {
                let v = args::text("--live", args::value(p, "--live", "a positive count")?)?;
                live.push(count_in("--live", &v, 1, bench::MAX_LAYER_LIVE, "1..=1e6")?);
            }
            Arg::Long("steps") => {
                let v = args::text("--steps", args::value(p, "--steps", "a positive count")?)?;
                steps = count_in(
                    "--steps",
                    &v,
                    bench::LAYER_REPS,
                    bench::MAX_STEPS,
                    "3..=1e7",
                )?;
            }
            Arg::Long("json") => json = true,
            Arg::Short('h') | Arg::Long("help") => return Err(Stop::Help),
            other => return Err(args::unknown(other)),
        }
    }
    if live.is_empty() {
        live = vec![1_000, 10_000, 100_000];
    }
    Ok(LayerOptions { live, steps, json })
}

fn run_layer(p: &mut args::Parser) -> i32 {
    let LayerOptions { live, steps, json } = match parse_layer(p) {
        Ok(o) => o,
        Err(Stop::Help) => {
            print!("{HELP}");
            return 0;
        }
        Err(Stop::Usage(m)) => return usage_error(&m),
    };
    if !json {
        println!("svmap svm-layer: ns per alloc + free pair, {steps} steps per subject");
        println!(
            "  {:>8} {:>9} {:>9} {:>9} {:>9} {:>11} {:>7} {:>7} {:>7}",
            "live",
            "map",
            "svm K=0",
            "svm K=1",
            "svm K=8",
            "K=1 window",
            "K=0/map",
            "K=1/map",
            "K=8/map"
        );
    }
    for n in live {
        let r = match bench::run_layer(n, steps) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("svmap bench svm-layer: {e}");
                return 1;
            }
        };
        let vs = |x: f64| x / r.map_ns.max(f64::MIN_POSITIVE);
        if json {
            let v = serde_json::json!({
                "live": r.live,
                "steps": r.steps,
                "map_ns_per_pair": r.map_ns,
                "svm0_ns_per_pair": r.svm_ns[0],
                "svm1_ns_per_pair": r.svm_ns[1],
                "svm8_ns_per_pair": r.svm_ns[2],
                "svm1_window_ns_per_pair": r.window_ns,
                "svm0_vs_map": vs(r.svm_ns[0]),
                "svm1_vs_map": vs(r.svm_ns[1]),
                "svm8_vs_map": vs(r.svm_ns[2]),
                "svm1_window_vs_map": vs(r.window_ns),
            });
            println!("{v}");
        } else {
            println!(
                "  {:>8} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>11.0} {:>7.2} {:>7.2} {:>7.2}",
                r.live,
                r.map_ns,
                r.svm_ns[0],
                r.svm_ns[1],
                r.svm_ns[2],
                r.window_ns,
                vs(r.svm_ns[0]),
                vs(r.svm_ns[1]),
                vs(r.svm_ns[2])
            );
        }
    }
    0
}

/// Runs `svmap bench` with the arguments after `bench`.
pub fn run(args: &[OsString]) -> i32 {
    let mut p = args::parser(args);
    match p.next() {
        Ok(Some(Arg::Value(b))) if b == "svm" => return run_svm(&mut p),
        Ok(Some(Arg::Value(b))) if b == "svm-layer" => return run_layer(&mut p),
        Ok(Some(Arg::Value(b))) if b == "migrate" => return crate::migrate_cmd::bench(&args[1..]),
        Ok(Some(Arg::Value(b))) if b == "churn" => {}
        Ok(Some(Arg::Short('h') | Arg::Long("help"))) | Ok(None) => {
            print!("{HELP}");
            return if args.is_empty() { 2 } else { 0 };
        }
        Ok(Some(Arg::Value(other))) => {
            return usage_error(&format!(
                "unknown benchmark {other:?} (try churn, svm, svm-layer or migrate)"
            ))
        }
        Ok(Some(other)) => return usage_error(&args::message(other.unexpected())),
        Err(e) => return usage_error(&args::message(e)),
    }
    let Options {
        live: n,
        align,
        highest,
        quick,
        json,
    } = match parse_churn(&mut p) {
        Ok(o) => o,
        Err(Stop::Help) => {
            print!("{HELP}");
            return 0;
        }
        Err(Stop::Usage(m)) => return usage_error(&m),
    };
    let plan = if quick {
        Plan::quick(n)
    } else {
        Plan::standard(n)
    };
    let tty = crate::progress::enabled();
    if tty {
        eprint!(
            "measuring {n} live ranges ({} steps)...",
            plan.total_steps()
        );
    }
    let m = measure(|| Svmap::new(align, highest), &plan);
    if tty {
        eprintln!(" done in {:.1?}", m.wall);
    }
    let order = if highest { "highest" } else { "lowest" };
    // No counting global allocator in this binary: the map's own accounting
    // of its heap bytes is the figure (`Measurement::bytes_per_range` would
    // read 0 here).
    let bytes_per_range = m.reported_bytes_per_range.unwrap_or(0.0);
    if json {
        let reps: Vec<String> = m.reps_ns.iter().map(|x| format!("{x:.1}")).collect();
        println!(
            "{{\"impl\": \"svmap\", \"n\": {n}, \"align\": {align}, \"order\": \"{order}\", \
             \"ns_per_pair\": {:.1}, \"bytes_per_range\": {:.2}, \
             \"reported_bytes_per_range\": {}, \"holes_per_search\": {}, \
             \"warmup_ns_per_pair\": {:.1}, \"reps_ns\": [{}], \"steps_per_rep\": {}, \
             \"wall_s\": {:.3}}}",
            m.ns_per_pair,
            bytes_per_range,
            m.reported_bytes_per_range
                .map_or("null".to_owned(), |b| format!("{b:.2}")),
            m.holes_per_search
                .map_or("null".to_owned(), |h| format!("{h:.3}")),
            m.warmup_ns_per_pair,
            reps.join(", "),
            m.steps_per_rep,
            m.wall.as_secs_f64()
        );
    } else {
        println!("svmap churn: {n} live ranges, align {align:#x}, {order} first");
        println!(
            "  ns per (free + allocate) pair : {:.1} (median of {})",
            m.ns_per_pair,
            m.reps_ns.len()
        );
        println!("  heap bytes per live range     : {bytes_per_range:.1}");
        if let Some(h) = m.holes_per_search {
            println!("  candidate holes per search    : {h:.3}");
        }
        println!(
            "  warm-up ns per pair           : {:.1}",
            m.warmup_ns_per_pair
        );
        println!("  wall time                     : {:.1?}", m.wall);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_sizes() {
        assert_eq!(parse_count("1e6"), Some(1_000_000));
        assert_eq!(parse_count("1000"), Some(1000));
        assert_eq!(parse_count("1e99"), None);
        assert_eq!(parse_bytes("2m"), Some(2 << 20));
        assert_eq!(parse_bytes("0x1000"), Some(4096));
        assert_eq!(parse_bytes("4k"), Some(4096));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(parse_bytes("\u{e9}k"), None);
        assert_eq!(parse_bytes("0xffffffffffffffffk"), None);
    }

    fn svm(a: &[&str]) -> Result<SvmOptions, Stop> {
        let args: Vec<OsString> = a.iter().map(OsString::from).collect();
        parse_svm(&mut args::parser(&args))
    }

    #[test]
    fn svm_options_are_bounded() {
        let o = svm(&["--live", "1e4", "--devices", "4", "--json"]).unwrap();
        assert_eq!(
            (o.cfg.live, o.cfg.devices, o.cfg.steps),
            (10_000, 4, 10_000)
        );
        assert!(o.json && !o.cfg.guarded);
        let o = svm(&[
            "--live",
            "1e6",
            "--devices",
            "8",
            "--steps",
            "1e7",
            "--guarded",
        ])
        .unwrap();
        assert_eq!(
            (o.cfg.live, o.cfg.devices, o.cfg.steps),
            (1_000_000, 8, 10_000_000)
        );
        assert!(o.cfg.guarded);
        assert_eq!(
            o.cfg.punch_batch,
            svmap_runtime::sparse::DEFAULT_PUNCH_BATCH
        );
        let o = svm(&["--live", "1", "--punch-batch", "0"]).unwrap();
        assert_eq!(o.cfg.punch_batch, 0);
        let o = svm(&["--live", "1", "--punch-batch", "1g"]).unwrap();
        assert_eq!(o.cfg.punch_batch, 1 << 30);
        for (bad, needle) in [
            (&["--devices", "1"][..], "--live N is required"),
            (&["--live", "0"], "1..=1e6"),
            (&["--live", "1000001"], "1..=1e6"),
            (&["--live", "x"], "1..=1e6"),
            (&["--live", "10", "--devices", "9"], "0..=8"),
            (&["--live", "10", "--devices", "-1"], "0..=8"),
            (&["--live", "10", "--steps", "0"], "1..=1e7"),
            (&["--live", "10", "--steps", "1e8"], "1..=1e7"),
            (&["--live", "10", "--align", "4096"], "align"),
            (&["--live", "10", "--punch-batch", "2g"], "0..=1g"),
            (&["--live", "10", "--punch-batch", "x"], "0..=1g"),
        ] {
            match svm(bad) {
                Err(Stop::Usage(m)) => assert!(m.contains(needle), "{bad:?}: {m}"),
                other => panic!("{bad:?} accepted: {:?}", other.map(|o| o.cfg)),
            }
        }
    }

    #[test]
    fn svm_layer_options_are_bounded() {
        let layer = |a: &[&str]| {
            let args: Vec<OsString> = a.iter().map(OsString::from).collect();
            parse_layer(&mut args::parser(&args))
        };
        let o = layer(&[]).unwrap();
        assert_eq!(
            (o.live, o.steps, o.json),
            (vec![1_000, 10_000, 100_000], 60_000, false)
        );
        let o = layer(&["--live", "1e3", "--live", "5", "--steps", "3", "--json"]).unwrap();
        assert_eq!((o.live, o.steps, o.json), (vec![1_000, 5], 3, true));
        for (bad, want) in [
            (&["--live", "0"][..], "1..=1e6"),
            (&["--live", "2e6"], "1..=1e6"),
            (&["--steps", "2"], "3..=1e7"),
            (&["--devices", "1"], "--devices"),
        ] {
            match layer(bad) {
                Err(Stop::Usage(m)) => assert!(m.contains(want), "{bad:?}: {m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn svm_layer_measures_every_subject_and_refuses_bad_sizes() {
        let r = bench::run_layer(40, 30).unwrap();
        assert_eq!((r.live, r.steps), (40, 30));
        for x in [r.map_ns, r.svm_ns[0], r.svm_ns[1], r.svm_ns[2], r.window_ns] {
            assert!(x.is_finite() && x > 0.0, "{r:?}");
        }
        assert!(bench::run_layer(0, 30).is_err());
        assert!(bench::run_layer(bench::MAX_LAYER_LIVE + 1, 30).is_err());
        assert!(bench::run_layer(10, bench::LAYER_REPS - 1).is_err());
    }

    fn churn(a: &[&str]) -> Result<Options, Stop> {
        let args: Vec<OsString> = a.iter().map(OsString::from).collect();
        parse_churn(&mut args::parser(&args))
    }

    #[test]
    fn alignment_is_bounded_by_what_the_window_holds() {
        // 2^45 for 1000 ranges: only four aligned slots in 2^47 bytes.
        let m = match churn(&["--live", "1000", "--align", "35184372088832"]) {
            Err(Stop::Usage(m)) => m,
            other => panic!("{:?}", other.map(|o| o.align)),
        };
        assert!(
            m.contains("too large for --live 1000") && m.contains("0x2000000000"),
            "{m}"
        );
        // The largest accepted alignment is the workload's bound.
        let most = max_align(1000).unwrap();
        assert_eq!(
            churn(&["--live", "1000", "--align", &most.to_string()]).map(|o| o.align),
            Ok(most)
        );
        assert!(churn(&["--live", "1000", "--align", &(2 * most).to_string()]).is_err());
        assert_eq!(
            churn(&["--live", "1", "--align", "0x400000000000"]).map(|o| o.align),
            Ok(1 << 46)
        );
        assert_eq!(
            churn(&["--live", "2e7", "--align", "2m"]).map(|o| o.live),
            Ok(20_000_000)
        );
        for bad in [
            &["--live", "2e7", "--align", "4m"][..],
            &["--live", "20000001"],
            &["--live", "0"],
            &["--live", "-1"],
            &["--live", "1e30"],
            &["--live", ""],
            &["--live"],
            &["--live", "10", "--align", "0"],
            &["--live", "10", "--align", "2048"],
            &["--live", "10", "--align", "12k"],
            &["--live", "10", "--align", "0x8000000000000000"],
            &["--live", "10", "--align", "99999999999999999999"],
            &["--live", "10", "--align"],
        ] {
            assert!(matches!(churn(bad), Err(Stop::Usage(_))), "{bad:?}");
        }
    }
}
