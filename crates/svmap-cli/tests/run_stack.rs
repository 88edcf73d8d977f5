//! `svmap run` and the main stack: the stack's room is reserved and given
//! to the stack alone, so that a program that fills the space below 2^N
//! gets nothing above it (also with an unlimited stack and in the legacy
//! layout), while a program that raises its own RLIMIT_STACK can still use
//! it, and a real stack overflow is still a SIGSEGV.
//!
//! The C programs are compiled here with gcc.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use svmap_linux::fence::parse_report;
use svmap_linux::maps::{parse_line, Kind};

const BITS: u32 = 36;
const LIMIT: u64 = 1 << BITS;

fn svmap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_svmap"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("svmap-run-stack-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Maps read-write `MAP_NORESERVE` chunks (1 GiB, halving on failure down
/// to one page) until not even one page can be mapped, counting the bytes
/// it got and those above `argv[1]`; prints `got BYTES above BYTES`, then
/// its `/proc/self/maps` (read with `read` into a static buffer: malloc
/// has no memory left).
const FILL: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    setvbuf(stdout, 0, _IONBF, 0);
    unsigned long limit = strtoul(argv[1], 0, 0);
    unsigned long len = 1UL << 30, got = 0, above = 0;
    while (len >= 4096) {
        char *p = mmap(0, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) { len /= 2; continue; }
        got += len;
        if ((unsigned long)p + len > limit) above += len;
    }
    printf("got %lu above %lu\n", got, above);
    static char buf[1 << 20];
    int fd = open("/proc/self/maps", O_RDONLY);
    size_t used = 0;
    ssize_t r;
    while (fd >= 0 && (r = read(fd, buf + used, sizeof buf - 1 - used)) > 0) used += r;
    fputs(buf, stdout);
    return 0;
}
"#;

/// Raises its soft RLIMIT_STACK to 64 MiB (exit 2 if the hard limit is
/// lower) and recurses until 48 MiB of stack are in use, writing every
/// frame; prints `deep ok`.
const DEEP: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

static char *base;
static unsigned long depth(unsigned long want) {
    volatile char frame[4000];
    memset((char *)frame, 1, sizeof frame);
    if ((unsigned long)(base - (char *)frame) >= want) return frame[7];
    return depth(want) + frame[11];
}

int main(void) {
    struct rlimit r;
    getrlimit(RLIMIT_STACK, &r);
    r.rlim_cur = 64UL << 20;
    if (r.rlim_max != RLIM_INFINITY && r.rlim_max < r.rlim_cur) return 2;
    if (setrlimit(RLIMIT_STACK, &r)) return 3;
    char here;
    base = &here;
    printf("deep ok %lu\n", depth(48UL << 20));
    return 0;
}
"#;

/// Recurses without end: a stack overflow.
const OVERFLOW: &str = r#"
#include <string.h>
static int f(int n) {
    volatile char b[4000];
    memset((char *)b, n, sizeof b);
    return f(n + 1) + b[3];
}
int main(void) { return f(0); }
"#;

fn compile(dir: &Path, name: &str, src: &str) -> Option<PathBuf> {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let exe = dir.join(name);
    match Command::new("gcc")
        .arg("-O1")
        .arg("-o")
        .arg(&exe)
        .arg(&c)
        .output()
    {
        Ok(o) => {
            assert!(o.status.success(), "gcc failed: {}", text(&o.stderr));
            Some(exe)
        }
        Err(e) => {
            eprintln!("skipped: no gcc ({e})");
            None
        }
    }
}

/// Runs `sh -c "SETUP exec PROG ARGS"` under `svmap run --va-bits BITS`
/// with a report file; returns the output and the report text.
fn run_in_shell(
    extra: &[&str],
    setup: &str,
    prog: &Path,
    args: &[&str],
    dir: &Path,
) -> (Output, String) {
    let report = dir.join("fence.log");
    let _ = std::fs::remove_file(&report);
    let script = format!("{setup} exec \"$0\" \"$@\"");
    let out = svmap()
        .args(["run", "--va-bits", &BITS.to_string(), "--report"])
        .arg(&report)
        .args(extra)
        .args(["--", "sh", "-c", &script])
        .arg(prog)
        .args(args)
        .output()
        .unwrap();
    let log = std::fs::read_to_string(&report).unwrap_or_default();
    (out, log)
}

/// Whether this shell may run `setup` (a hard limit may forbid raising a
/// limit to unlimited).
fn shell_allows(setup: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("{setup} true")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: this shell cannot run {setup:?}");
    }
    ok
}

/// Checks the output of [`FILL`]: it got memory, none of it above the
/// limit, and every mapping above the limit at its end was there when the
/// fence went up (stack, vDSO, the executable, the loader: the report's
/// `above` lines) or is one of the fence's `PROT_NONE` reservations.
fn check_fill(out: &Output, log: &str) {
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{log}", text(&out.stderr));
    let got = stdout
        .lines()
        .find_map(|l| l.strip_prefix("got "))
        .unwrap_or_else(|| panic!("no summary: {stdout}\n{}", text(&out.stderr)));
    let (got, above) = got.split_once(" above ").unwrap();
    let (got, above): (u64, u64) = (got.parse().unwrap(), above.parse().unwrap());
    // The space below the limit, less what the program and the kernel
    // hold there (at most a few GiB).
    assert!(got > LIMIT / 2, "only {got:#x} bytes mapped\n{stdout}");
    assert_eq!(above, 0, "{above:#x} bytes above 2^{BITS}\n{stdout}\n{log}");
    let reports = parse_report(log);
    let rep = reports.last().expect("a report");
    assert!(rep.done && rep.uncovered.is_empty(), "{log}");
    // `start-end perms name`.
    let at_exec: Vec<(u64, u64)> = rep
        .above
        .iter()
        .map(|l| {
            let (a, b) = l
                .split_whitespace()
                .next()
                .unwrap()
                .split_once('-')
                .unwrap();
            let h = |x: &str| u64::from_str_radix(x, 16).unwrap();
            (h(a), h(b))
        })
        .collect();
    let mut lines = 0;
    for line in stdout.lines().filter(|l| !l.starts_with("got ")) {
        let e = parse_line(line.as_bytes()).unwrap();
        lines += 1;
        if e.end <= LIMIT || e.start >= 1 << 63 {
            continue;
        }
        let reservation =
            !e.perms.read && !e.perms.write && !e.perms.exec && e.kind() != Kind::File;
        // The loader splits what the kernel mapped (RELRO): a part of a
        // mapping that was there counts as there.
        let was_there =
            at_exec.iter().any(|&(a, b)| a <= e.start && e.end <= b) || e.kind() == Kind::Stack;
        assert!(
            reservation || was_there,
            "a mapping above 2^{BITS} after the fill: {line}\n{stdout}\n{log}"
        );
    }
    assert!(lines > 5, "{stdout}");
}

#[test]
fn filling_the_space_below_the_limit_with_an_unlimited_stack_puts_nothing_above_it() {
    let setup = "ulimit -s unlimited &&";
    let dir = scratch("fill-unlimited");
    let Some(fill) = compile(&dir, "fill", FILL) else {
        return;
    };
    if !shell_allows(setup) {
        return;
    }
    let (out, log) = run_in_shell(&[], setup, &fill, &[&LIMIT.to_string()], &dir);
    check_fill(&out, &log);
    // The stack's whole room is reserved (unlimited: everything the
    // kernel left below the stack), not left free for mmap.
    let rep = parse_report(&log).pop().unwrap();
    let (lo, hi) = rep.stack_room.expect("a stack room");
    assert!(hi - lo > 1 << 30, "{log}");
    assert!(
        rep.reserved_ranges.iter().any(|&(s, e)| s <= lo && e > lo),
        "the room is not reserved: {log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn filling_the_space_below_the_limit_with_the_default_stack_puts_nothing_above_it() {
    let dir = scratch("fill-default");
    let Some(fill) = compile(&dir, "fill", FILL) else {
        return;
    };
    let (out, log) = run_in_shell(&[], "", &fill, &[&LIMIT.to_string()], &dir);
    check_fill(&out, &log);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_legacy_layout_is_switched_off_and_filling_puts_nothing_above_the_limit() {
    let dir = scratch("fill-legacy");
    let Some(fill) = compile(&dir, "fill", FILL) else {
        return;
    };
    let legacy = Command::new("setarch").args(["-L", "true"]).status();
    if !legacy.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no setarch -L here");
        return;
    }
    // Unfenced, the legacy layout places mappings from TASK_SIZE/3 up:
    // the first mapping of the fill lies above the limit.
    let plain = Command::new("setarch")
        .arg("-L")
        .arg(&fill)
        .arg(LIMIT.to_string())
        .output()
        .unwrap();
    let plain_out = text(&plain.stdout);
    assert!(!plain_out.contains("above 0\n"), "{plain_out}");
    for setarch in [&["-L"][..], &["x86_64", "-L"][..]] {
        let report = dir.join("legacy.log");
        let _ = std::fs::remove_file(&report);
        let out = svmap()
            .args(["run", "--va-bits", &BITS.to_string(), "--report"])
            .arg(&report)
            .args(["--", "setarch"])
            .args(setarch)
            .arg(&fill)
            .arg(LIMIT.to_string())
            .output()
            .unwrap();
        let log = std::fs::read_to_string(&report).unwrap();
        assert!(
            text(&out.stderr).contains("legacy layout"),
            "{}",
            text(&out.stderr)
        );
        check_fill(&out, &log);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_program_that_raises_its_stack_limit_can_use_it() {
    let dir = scratch("deep");
    let Some(deep) = compile(&dir, "deep", DEEP) else {
        return;
    };
    // A hard limit of 128 MiB (the room), the default hard limit, and an
    // unlimited one.
    for setup in ["ulimit -Hs 131072 &&", "", "ulimit -s unlimited &&"] {
        if !shell_allows(setup) {
            continue;
        }
        let (out, log) = run_in_shell(&[], setup, &deep, &[], &dir);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{setup}: {}\n{log}",
            text(&out.stderr)
        );
        assert!(text(&out.stdout).starts_with("deep ok"));
        // The stack grew into its reserved room: the launcher gave it
        // 47 MiB or more of it, a guard gap at a time.
        let grown: u64 = log
            .lines()
            .filter_map(|l| l.split("stack-grow ").nth(1))
            .map(|r| {
                let r = r.split_whitespace().next().unwrap();
                let (a, b) = r.split_once('-').unwrap();
                let h = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).unwrap();
                h(b) - h(a)
            })
            .sum();
        assert!(grown >= 47 << 20, "{setup}: {grown:#x}\n{log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_room_smaller_than_the_stack_needs_and_a_real_overflow_end_in_sigsegv() {
    let dir = scratch("overflow");
    let (Some(deep), Some(overflow)) = (
        compile(&dir, "deep", DEEP),
        compile(&dir, "overflow", OVERFLOW),
    ) else {
        return;
    };
    // --stack-room 4M: the 48 MiB recursion runs out of room.
    let (out, log) = run_in_shell(&["--stack-room", "4M"], "", &deep, &[], &dir);
    assert_eq!(
        out.status.code(),
        Some(128 + 11),
        "{}\n{log}",
        text(&out.stderr)
    );
    // Endless recursion under a 16 MiB soft limit: the kernel refuses the
    // growth at the limit, the launcher passes the SIGSEGV on.
    let (out, log) = run_in_shell(&[], "ulimit -Ss 16384 &&", &overflow, &[], &dir);
    assert_eq!(
        out.status.code(),
        Some(128 + 11),
        "{}\n{log}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stack_room_needs_a_size() {
    for bad in ["", "12Q", "-1", "200T", "x"] {
        let out = svmap()
            .args(["run", "--va-bits", "40", "--stack-room", bad, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(text(&out.stderr).contains("--stack-room"), "{bad:?}");
    }
    let out = svmap()
        .args([
            "run",
            "--va-bits",
            "40",
            "--stack-room",
            "64M",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}
