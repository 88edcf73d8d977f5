//! The fence on real programs nobody here wrote: python3 allocating several
//! hundred MiB in many objects, and coreutils `sort` on a 50 MB input. Every
//! mapping above 2^40 at the end (or at any sample while `sort` runs) must be
//! one that was already there at start (reported by the fence), the fence's
//! own `PROT_NONE` reservations, or the main stack within its room.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use svmap_linux::fence::{self, FenceOptions, ProcessReport};
use svmap_linux::maps::{parse_line, Kind, MapsEntry};

const BITS: u32 = 40;
const LIMIT: u64 = 1 << BITS;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("svmap-fence-{}-{name}", std::process::id()))
}

fn opts(report: &PathBuf) -> FenceOptions {
    let _ = std::fs::remove_file(report);
    FenceOptions {
        report: Some(report.clone()),
        ..FenceOptions::new(BITS)
    }
}

fn report_of(report: &PathBuf, pid: u32) -> ProcessReport {
    let text = std::fs::read_to_string(report).expect("the fence wrote no report");
    fence::parse_report(&text)
        .into_iter()
        .find(|r| r.pid == pid)
        .unwrap_or_else(|| panic!("no report for pid {pid}:\n{text}"))
}

/// Checks a maps text against the start report; returns the number of
/// anonymous mappings below the limit.
fn check_maps(maps: &str, rep: &ProcessReport) -> usize {
    assert!(rep.done, "{rep:?}");
    assert!(rep.uncovered.is_empty(), "{rep:?}");
    let above: Vec<MapsEntry> = rep
        .above
        .iter()
        .map(|l| parse_line(l.as_bytes()).unwrap())
        .collect();
    let mut anon_below = 0;
    for line in maps.lines() {
        let e = parse_line(line.as_bytes()).unwrap();
        if e.start >= 1 << 63 {
            continue; // [vsyscall]
        }
        if e.end <= LIMIT {
            anon_below += usize::from(e.kind() == Kind::Anonymous);
            continue;
        }
        let known = above.iter().any(|a| a.start == e.start && a.end == e.end);
        let stack = e.kind() == Kind::Stack && rep.stack_room.is_none_or(|(lo, _)| e.start >= lo);
        let fence = e.kind() != Kind::File
            && !e.perms.read
            && !e.perms.write
            && rep
                .reserved_ranges
                .iter()
                .any(|&(s, t)| s <= e.start && e.end <= t);
        assert!(
            known || stack || fence,
            "a new mapping above 2^{BITS}: {line}\nreport: {rep:#?}"
        );
    }
    anon_below
}

#[test]
fn library_is_found_next_to_the_test_binary() {
    let lib = fence::find_library().unwrap();
    assert!(lib.ends_with(fence::LIB_NAME), "{}", lib.display());
}

#[test]
fn cat_proc_self_maps() {
    let report = tmp("cat");
    let child = fence::command(&opts(&report), "cat", &["/proc/self/maps"])
        .unwrap()
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let rep = report_of(&report, pid);
    check_maps(&String::from_utf8(out.stdout).unwrap(), &rep);
    assert!(rep.reserved > 0 && !rep.above.is_empty());
    // The exit status comes back through run_command.
    assert!(fence::run_command(BITS, "true", &[] as &[&str])
        .unwrap()
        .success());
    assert!(!fence::run_command(BITS, "false", &[] as &[&str])
        .unwrap()
        .success());
    let _ = std::fs::remove_file(report);
}

const PY: &str = r#"
import sys
objs = []
# ~400 MiB: 200k small objects (malloc's brk/arena sizes) and 100 x 2 MiB
for i in range(200_000):
    objs.append(bytearray(1024 + (i % 7) * 64))
for i in range(100):
    objs.append(bytearray(2 << 20))
d = {i: str(i) * 10 for i in range(300_000)}
total = sum(len(o) for o in objs)
sys.stdout.write(open('/proc/self/maps').read())
sys.stderr.write(f"allocated {total >> 20} MiB in {len(objs) + len(d)} objects\n")
"#;

fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn python_allocating_hundreds_of_mib() {
    let report = tmp("python");
    let child = fence::command(&opts(&report), python(), &["-c", PY])
        .unwrap()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    eprintln!("python: {}", stderr.trim());
    let rep = report_of(&report, pid);
    let anon = check_maps(&String::from_utf8(out.stdout).unwrap(), &rep);
    assert!(anon > 0);
    let _ = std::fs::remove_file(report);
}

#[test]
fn sort_of_a_50_mb_file() {
    let input = tmp("sort-in");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut n = 0;
        while n < 50_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let line = format!("{x:016x} {}\n", x % 1_000_003);
            n += line.len();
            f.write_all(line.as_bytes()).unwrap();
        }
    }
    let report = tmp("sort");
    let out_path = tmp("sort-out");
    let args = [
        "--parallel=4".to_string(),
        "-S".to_string(),
        "300M".to_string(),
        "-o".to_string(),
        out_path.to_str().unwrap().to_string(),
        input.to_str().unwrap().to_string(),
    ];
    let mut child = fence::command(&opts(&report), "sort", &args)
        .unwrap()
        .spawn()
        .unwrap();
    let pid = child.id();
    let (mut samples, mut max_anon) = (0, 0);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if let (Ok(maps), Ok(text)) = (
            std::fs::read_to_string(format!("/proc/{pid}/maps")),
            std::fs::read_to_string(&report),
        ) {
            if let Some(rep) = fence::parse_report(&text)
                .into_iter()
                .find(|r| r.pid == pid && r.done)
            {
                if !maps.is_empty() {
                    max_anon = max_anon.max(check_maps(&maps, &rep));
                    samples += 1;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(status.success());
    eprintln!(
        "sort: {samples} samples of its maps, up to {max_anon} anonymous mappings below 2^{BITS}"
    );
    assert!(samples > 0, "sort finished before a sample");
    assert_eq!(
        std::fs::metadata(&out_path).unwrap().len(),
        std::fs::metadata(&input).unwrap().len()
    );
    for p in [input, out_path, report] {
        let _ = std::fs::remove_file(p);
    }
}
