//! `svmap replay` on hostile traces, under a memory limit (`ulimit -v`,
//! through `sh`) and time limits: each must end with a clean exit (a
//! typed bad-line message and status 2, or a full replay), never an abort
//! (134), an out-of-memory kill or a hang.
//!
//! A hang is caught by a CPU-time limit (`ulimit -t`), which machine load
//! does not eat into, and, for a hang that burns no CPU, a wall-clock
//! limit far above any loaded run.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Address-space limit of every run: 256 MiB.
const MEM_KIB: u64 = 256 * 1024;
/// CPU-time limit of every run, in seconds: 15 times the 4 s of CPU the
/// longest run here (80,000 map/access/unmap rounds) takes in a debug
/// build. CPU time does not grow with machine load.
const CPU_S: u64 = 60;
/// Wall-clock limit of every run: only for a hang that burns no CPU. A
/// run that takes 10 s on an idle machine took over 60 s on two cores
/// shared with a parallel build (load average 8); ten minutes leave room
/// for far worse.
const TIME: Duration = Duration::from_secs(600);

/// What one limited run did.
#[derive(Debug)]
struct Run {
    /// The exit status; `None` if a signal ended it.
    code: Option<i32>,
    /// The signal that ended it (`SIGXCPU` or `SIGKILL` at the CPU-time
    /// limit).
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

/// A scratch file for one test's trace.
fn scratch(name: &str, text: &[u8]) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hostile-{name}"));
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    })
}

fn wait_limited(mut child: Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait for svmap") {
            return st;
        }
        if start.elapsed() > TIME {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {TIME:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `svmap replay [--check] FILE` with the memory and time limits.
fn replay_limited(file: &str, check: bool) -> Run {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v \"$1\" && ulimit -t \"$2\" || exit 99; shift 2; exec \"$@\"")
        .arg("sh")
        .arg(MEM_KIB.to_string())
        .arg(CPU_S.to_string())
        .arg(env!("CARGO_BIN_EXE_svmap"))
        .arg("replay");
    if check {
        cmd.arg("--check");
    }
    cmd.arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run sh");
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = wait_limited(child, file);
    let run = Run {
        code: status.code(),
        signal: status.signal(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert_ne!(run.code, Some(99), "ulimit failed: {}", run.stderr);
    run
}

/// A bad line: status 2, one short `line N: ...` message, no summary.
fn assert_bad_line(run: &Run, line: u64, what: &str) {
    assert_eq!(run.code, Some(2), "{run:?}");
    let msg = run.stderr.trim_end();
    assert!(
        msg.starts_with(&format!("line {line}: ")) && msg.contains(what),
        "want line {line} with {what:?}, got {:?}",
        &msg[..msg.len().min(500)]
    );
    assert!(!msg.contains('\n'), "one message line: {msg:?}");
    assert!(msg.len() < 512, "a message of {} bytes", msg.len());
    assert!(!run.stdout.contains("\"summary\""), "{}", run.stdout);
}

#[test]
fn a_line_with_many_keys() {
    let keys = |n: usize| {
        (0..n)
            .map(|i| format!("\"k{i}\":1"))
            .collect::<Vec<_>>()
            .join(",")
    };
    // The reviewer's 1 MB line of 100,000 keys is over the line limit.
    let p = scratch(
        "keys-1m",
        format!("{{\"op\":\"find\",{}}}\n", keys(100_000)).as_bytes(),
    );
    assert_bad_line(
        &replay_limited(p.to_str().unwrap(), false),
        1,
        "longer than 65536 bytes",
    );
    // Under the limit, 6,000 keys with a repeat at the end.
    let p = scratch(
        "keys-dup",
        format!("{{\"op\":\"find\",{},\"k0\":2}}\n", keys(6000)).as_bytes(),
    );
    assert_bad_line(
        &replay_limited(p.to_str().unwrap(), false),
        1,
        "\"k0\" appears twice",
    );
}

#[test]
fn an_endless_line_from_dev_zero() {
    let run = replay_limited("/dev/zero", false);
    assert_bad_line(&run, 1, "longer than 65536 bytes");
}

#[test]
fn a_huge_value_is_quoted_short() {
    // A 60,000-byte op name (under the line limit) and a 3 MB one (over).
    for (name, n) in [("value-60k", 60_000), ("value-3m", 3_000_000)] {
        let p = scratch(
            name,
            format!("{{\"op\":\"reset\"}}\n{{\"op\":\"{}\"}}\n", "v".repeat(n)).as_bytes(),
        );
        let run = replay_limited(p.to_str().unwrap(), false);
        let what = if n < 65536 {
            "(60000 bytes)"
        } else {
            "longer than"
        };
        assert_bad_line(&run, 2, what);
    }
}

#[test]
fn a_device_with_a_16_gib_page() {
    // Refused before anything is built; the wide protect never runs.
    let p = scratch(
        "page-2-34",
        b"{\"op\":\"device\",\"name\":\"a\",\"va_bits\":64,\"page_size\":\"0x400000000\",\"mirror\":\"system\"}\n\
          {\"op\":\"map\",\"start\":\"0x10000\",\"end\":\"0x20000\"}\n\
          {\"op\":\"unmap\",\"start\":\"0\",\"length\":\"0xfffffffffffff000\"}\n",
    );
    assert_bad_line(&replay_limited(p.to_str().unwrap(), false), 1, "page_size");
    // The largest page, 1 GiB, on a 64-bit device: a wide unmap after a
    // device access is quick and small.
    let p = scratch(
        "page-2-30",
        b"{\"op\":\"device\",\"name\":\"a\",\"va_bits\":64,\"page_size\":\"0x40000000\",\"mirror\":\"system\"}\n\
          {\"op\":\"device\",\"name\":\"b\",\"va_bits\":64,\"page_size\":\"0x40000000\",\"mirror\":\"system\"}\n\
          {\"op\":\"device\",\"name\":\"c\",\"va_bits\":64,\"page_size\":\"0x40000000\",\"mirror\":\"system\"}\n\
          {\"op\":\"map\",\"start\":\"0x40000000\",\"end\":\"0x80000000\"}\n\
          {\"op\":\"device_access\",\"device\":\"a\",\"addr\":\"0x40000000\",\"write\":true,\"expect\":{\"ok\":true}}\n\
          {\"op\":\"unmap\",\"start\":\"0\",\"length\":\"0xfffffffffffff000\"}\n\
          {\"op\":\"device_access\",\"device\":\"a\",\"addr\":\"0x40000000\",\"write\":true,\"expect\":{\"fault\":\"unmapped\"}}\n",
    );
    let run = replay_limited(p.to_str().unwrap(), true);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("\"checked\": 2, \"mismatches\": 0"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_page_larger_than_the_device_space() {
    let p = scratch(
        "page-over-space",
        b"{\"op\":\"device\",\"name\":\"a\",\"va_bits\":12,\"page_size\":\"0x8000\",\"mirror\":\"system\"}\n\
          {\"op\":\"map\",\"start\":\"0\",\"end\":\"0x10000\"}\n",
    );
    assert_bad_line(
        &replay_limited(p.to_str().unwrap(), false),
        1,
        "larger than the whole address space",
    );
}

#[test]
fn an_errno_name_with_a_sign() {
    let p = scratch(
        "errno-sign",
        b"{\"op\":\"find\",\"length\":\"0x1000\",\"low_limit\":\"0\",\"high_limit\":\"0x1000\",\"expect\":{\"err\":\"E+12\"}}\n",
    );
    assert_bad_line(
        &replay_limited(p.to_str().unwrap(), true),
        1,
        "not an errno name",
    );
}

/// Map a page, touch it from the device, unmap it, in a new 2 MiB region
/// each time: with page tables that kept their emptied tables this needs
/// about 4 KiB per round (over 256 MiB here); now it stays flat.
#[test]
fn a_long_map_access_unmap_loop_stays_small() {
    const ROUNDS: u64 = 80_000;
    let mut text =
        String::from("{\"op\":\"device\",\"name\":\"g\",\"va_bits\":48,\"mirror\":\"system\"}\n");
    for i in 0..ROUNDS {
        let a = (1u64 << 32) + i * 0x20_0000;
        text.push_str(&format!(
            "{{\"op\":\"map\",\"start\":\"{a:#x}\",\"end\":\"{:#x}\"}}\n\
             {{\"op\":\"device_access\",\"device\":\"g\",\"addr\":\"{a:#x}\",\"write\":true,\"expect\":{{\"ok\":true}}}}\n\
             {{\"op\":\"unmap\",\"start\":\"{a:#x}\",\"length\":\"0x1000\"}}\n",
            a + 0x1000
        ));
    }
    let p = scratch("pt-loop", text.as_bytes());
    let run = replay_limited(p.to_str().unwrap(), true);
    assert_eq!(
        run.code,
        Some(0),
        "signal {:?} (SIGXCPU 24 or SIGKILL 9 at the CPU limit), stderr: {}",
        run.signal,
        run.stderr
    );
    let last = run.stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "{{\"summary\": {{\"ops\": {}, \"results\": {ROUNDS}, \"checked\": {ROUNDS}, \"mismatches\": 0}}}}",
            3 * ROUNDS + 1
        )
    );
}
