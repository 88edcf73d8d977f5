//! `svmap run` from the first instruction: a static C program, a program
//! whose constructor and `main` allocate many small blocks, fork+exec
//! children, signal forwarding, loud failures (a report file that cannot
//! be written, a fence library that is not one, an address-space limit too
//! low to fence) and `svmap inspect` on a fenced process.
//!
//! The C programs are compiled here with `gcc -static`; the tests that need
//! them say so and pass when `libc.a` is missing (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;

const BITS: u32 = 36;
const LIMIT: u64 = 1 << BITS;

fn svmap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_svmap"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("svmap-run-fence-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Allocates before `main` (a constructor, as C++ static initialisers and
/// library constructors do) and in `main`: many small blocks (malloc's brk
/// heap), large ones (mmap), a plain mmap; prints every address, one per
/// line as `addr 0x...`. With an argument `fork`, it also forks a child
/// that execs this program again (`/proc/self/exe`), and waits for it.
const PROG: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static void *early[500];

__attribute__((constructor)) static void before_main(void) {
    for (int i = 0; i < 500; i++) early[i] = malloc(40);
}

int main(int argc, char **argv) {
    for (int i = 0; i < 500; i++) printf("addr %p\n", early[i]);
    for (int i = 0; i < 2000; i++) {
        char *s = malloc(40);
        memset(s, 'x', 40);
        printf("addr %p\n", (void *)s);
    }
    for (int i = 0; i < 8; i++) printf("addr %p\n", malloc(1 << 20));
    void *m = mmap(0, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("addr %p\n", m);
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "fork") == 0) {
        pid_t p = fork();
        if (p == 0) {
            execl("/proc/self/exe", "prog", "child", (char *)0);
            _exit(99);
        }
        int st = 0;
        waitpid(p, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 7) return 98;
        return 5;
    }
    return argc > 1 && strcmp(argv[1], "child") == 0 ? 7 : 3;
}
"#;

/// Compiles [`PROG`] statically (or dynamically with `static_link`
/// false); `None` (after saying why) if `gcc -static` cannot link here.
fn compile(dir: &Path, static_link: bool) -> Option<PathBuf> {
    let src = dir.join("prog.c");
    std::fs::write(&src, PROG).unwrap();
    let exe = dir.join(if static_link {
        "prog-static"
    } else {
        "prog-dyn"
    });
    let mut c = Command::new("gcc");
    c.arg("-O1").arg("-o").arg(&exe).arg(&src);
    if static_link {
        c.arg("-static");
    }
    match c.output() {
        Ok(o) if o.status.success() => Some(exe),
        Ok(o) => {
            let err = text(&o.stderr);
            assert!(
                static_link && (err.contains("-lc") || err.contains("libc.a")),
                "gcc failed: {err}"
            );
            eprintln!("skipped: gcc -static cannot link here (no libc.a): {err}");
            None
        }
        Err(e) => {
            eprintln!("skipped: no gcc ({e})");
            None
        }
    }
}

/// Every `addr 0x...` the program printed.
fn addresses(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("addr 0x"))
        .map(|h| u64::from_str_radix(h, 16).unwrap())
        .collect()
}

fn run_fenced(args: &[&str], prog: &Path, prog_args: &[&str]) -> Output {
    svmap()
        .args(["run", "--va-bits", &BITS.to_string()])
        .args(args)
        .arg("--")
        .arg(prog)
        .args(prog_args)
        .output()
        .unwrap()
}

fn all_below(out: &Output, expect: usize) {
    let stdout = text(&out.stdout);
    let a = addresses(&stdout);
    assert_eq!(a.len(), expect, "{stdout}\n{}", text(&out.stderr));
    let above: Vec<String> = a
        .iter()
        .filter(|&&x| x >= LIMIT)
        .map(|x| format!("{x:#x}"))
        .collect();
    assert!(
        above.is_empty(),
        "{} of {} addresses at or above 2^{BITS}: {above:?}\n{}",
        above.len(),
        a.len(),
        text(&out.stderr)
    );
}

const PER_RUN: usize = 500 + 2000 + 8 + 1;

#[test]
fn a_static_program_allocates_below_the_limit() {
    let dir = scratch("static");
    let Some(exe) = compile(&dir, true) else {
        return;
    };
    // Unfenced, the same program's mmap lands near the top (the check
    // below would catch a fence that did nothing).
    let plain = Command::new(&exe).output().unwrap();
    assert!(addresses(&text(&plain.stdout)).iter().any(|&a| a >= LIMIT));
    let out = run_fenced(&[], &exe, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    all_below(&out, PER_RUN);
    // The preload method cannot reach a static program: a refusal.
    let out = run_fenced(&["--preload"], &exe, &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("statically linked"));
    assert!(out.stdout.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn constructors_and_main_allocate_below_the_limit_in_a_dynamic_program() {
    let dir = scratch("dyn");
    let Some(exe) = compile(&dir, false) else {
        return;
    };
    let out = run_fenced(&[], &exe, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    all_below(&out, PER_RUN);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn fork_and_exec_children_are_fenced_too() {
    let dir = scratch("fork");
    let Some(exe) = compile(&dir, true) else {
        return;
    };
    let report = dir.join("fence.log");
    // The program forks and execs itself; the shell forks and execs it.
    let out = svmap()
        .args(["run", "--va-bits", &BITS.to_string(), "--report"])
        .arg(&report)
        .arg("--")
        .args(["sh", "-c", "\"$0\" fork && exit 9; \"$0\" child; exit $?"])
        .arg(&exe)
        .output()
        .unwrap();
    // fork run exits 5 (its child 7), so the shell runs the child: 7.
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    all_below(&out, 3 * PER_RUN);
    // One block per image: sh, the forked program, its exec'd child, the
    // shell's last child.
    let log = std::fs::read_to_string(&report).unwrap();
    let done = log.lines().filter(|l| l.contains("]: done ")).count();
    assert!(done >= 4, "{log}");
    assert!(!log.contains("]: uncovered "), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The exit code of `child` within `limit` (128 + N for a death by
/// signal N), or `None` (the child then killed) when it did not exit.
fn wait_timeout(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let st = common::wait_output(child, limit)?.status;
    Some(st.code().unwrap_or(128 + st.signal().unwrap_or(0)))
}

#[test]
fn sigterm_to_svmap_run_ends_the_program() {
    let mut child = svmap()
        .args([
            "run",
            "--va-bits",
            "40",
            "--",
            "sh",
            "-c",
            "echo $$; exec sleep 1000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let code = wait_timeout(&mut child, Duration::from_secs(120));
    // The program died of the forwarded SIGTERM: 128 + 15.
    assert_eq!(code, Some(143));
    // svmap run reaped it before exiting: the pid is gone.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn report_is_one_absolute_file_checked_before_the_program_runs() {
    let dir = scratch("report");
    // A relative name, from a directory, for a program that changes its
    // own directory and execs: one file, in the directory svmap ran in.
    let out = svmap()
        .current_dir(&dir)
        .args(["run", "--va-bits", "40", "--report", "rel.log", "--"])
        .args(["sh", "-c", "cd / && exec true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = std::fs::read_to_string(dir.join("rel.log")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains("]: done ")).count(),
        2,
        "{log}"
    );
    // A report that cannot be written: exit 125 and the program never ran.
    let marker = dir.join("ran");
    let out = svmap()
        .args(["run", "--va-bits", "40", "--report"])
        .arg(dir.join("no-such-dir").join("x.log"))
        .arg("--")
        .arg("touch")
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("no-such-dir"));
    assert!(!marker.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_fence_library_that_is_not_one_is_refused() {
    let dir = scratch("lib");
    let fake = dir.join("libfake.so");
    std::fs::write(&fake, "not a library\n").unwrap();
    let marker = dir.join("ran");
    for method in [&["--preload"][..], &[]] {
        let out = svmap()
            .args(["run", "--va-bits", "40", "--fence-lib"])
            .arg(&fake)
            .args(method)
            .arg("--")
            .arg("touch")
            .arg(&marker)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125));
        assert!(
            text(&out.stderr).contains("not an ELF file"),
            "{}",
            text(&out.stderr)
        );
        assert!(!marker.exists());
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Under `ulimit -v` the reservations (which count as address space) fail:
/// the run is refused loudly, or warned about with `--allow-partial`.
#[test]
fn a_fence_that_cannot_be_made_is_loud() {
    let svmap = env!("CARGO_BIN_EXE_svmap");
    for method in ["", "--preload"] {
        let script = format!(
            "ulimit -v 1000000; exec \"$0\" run --va-bits 40 {method} $1 -- sh -c 'echo ran'"
        );
        let out = Command::new("sh")
            .args(["-c", &script, svmap, ""])
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{method}: {err}");
        assert!(err.contains("error"), "{method}: {err}");
        assert!(!text(&out.stdout).contains("ran"), "{method}");
        let out = Command::new("sh")
            .args(["-c", &script, svmap, "--allow-partial"])
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{method}: {err}");
        assert!(err.contains("warning"), "{method}: {err}");
        assert_eq!(text(&out.stdout), "ran\n");
    }
}

#[test]
fn inspect_tells_the_fence_apart_from_memory() {
    let out = svmap()
        .args(["run", "--va-bits", "40", "--"])
        .arg(env!("CARGO_BIN_EXE_svmap"))
        .args(["inspect", "self", "--va-bits", "40", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reserved = v["reserved_above_bytes"].as_u64().unwrap();
    let mapped = v["mapped_above_bytes"].as_u64().unwrap();
    // The fence holds nearly all of [2^40, 2^47); what is really mapped
    // above (the executable, the loader, the stack, the vDSO) is small.
    assert!(reserved > (1 << 46), "{v}");
    assert!(mapped < (1 << 30), "{v}");
    for vma in v["vmas"].as_array().unwrap() {
        if vma["reserved"] == true {
            assert_eq!(vma["perms"], "---p", "{vma}");
            assert_ne!(vma["name"], "[heap]", "{vma}");
        }
    }
    let text_out = svmap()
        .args(["run", "--va-bits", "40", "--"])
        .arg(env!("CARGO_BIN_EXE_svmap"))
        .args(["inspect", "self", "--va-bits", "40"])
        .output()
        .unwrap();
    let t = text(&text_out.stdout);
    assert!(t.contains("(reserved, no memory)"), "{t}");
    assert!(
        !t.lines()
            .any(|l| l.contains("---p") && l.contains("[heap]")),
        "{t}"
    );
}

/// The C++ case: libstdc++'s own start-up allocates before `main`, and the
/// heap it starts keeps serving `new` in `main`.
const CXX_PROG: &str = r#"
#include <cstdio>
#include <string>
#include <vector>
static std::vector<std::string *> early(100, nullptr);
int main() {
    for (auto &p : early) p = new std::string(40, 'e');
    for (auto *p : early) std::printf("addr %p\n", (void *)p->data());
    for (int i = 0; i < 2000; i++) {
        std::string *s = new std::string(40, 'x');
        std::printf("addr %p\n", (void *)s);
        std::printf("addr %p\n", (void *)s->data());
    }
    return 3;
}
"#;

#[test]
fn a_cxx_program_allocates_below_the_limit_in_main() {
    let dir = scratch("cxx");
    let src = dir.join("prog.cc");
    std::fs::write(&src, CXX_PROG).unwrap();
    let exe = dir.join("prog-cxx");
    match Command::new("g++")
        .arg("-O1")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("g++ failed: {}", text(&o.stderr)),
        Err(e) => {
            eprintln!("skipped: no g++ ({e})");
            return;
        }
    }
    let out = run_fenced(&[], &exe, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    all_below(&out, 100 + 2 * 2000);
    let _ = std::fs::remove_dir_all(dir);
}
