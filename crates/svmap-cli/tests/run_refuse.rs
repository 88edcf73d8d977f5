//! Programs that cannot run fenced get a refusal that names why:
//! AddressSanitizer and ThreadSanitizer binaries (fixed mappings far above
//! any limit), and the preload fence inside a valgrind client. valgrind
//! itself runs fenced under the traced method and finishes.
//!
//! The sanitizer programs are compiled here with `gcc -fsanitize=...`; the
//! tests say so and pass where the runtime is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;

fn svmap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_svmap"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("svmap-run-refuse-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `gcc -fsanitize=WHICH` of a program that prints `ran` and exits 0;
/// `None` (after saying why) where the sanitizer runtime is missing.
fn sanitized(dir: &Path, which: &str) -> Option<PathBuf> {
    let src = dir.join("p.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(void) { puts(\"ran\"); return 0; }\n",
    )
    .unwrap();
    let exe = dir.join(format!("p-{which}"));
    let out = Command::new("gcc")
        .arg(format!("-fsanitize={which}"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            // The program runs unfenced (else the check below proves nothing).
            let plain = Command::new(&exe).output().unwrap();
            if plain.status.code() != Some(0) {
                eprintln!("skipped: -fsanitize={which} programs do not run here: {plain:?}");
                return None;
            }
            Some(exe)
        }
        Ok(o) => {
            eprintln!(
                "skipped: gcc -fsanitize={which} fails here: {}",
                text(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("skipped: no gcc ({e})");
            None
        }
    }
}

fn run(args: &[&str], prog: &Path) -> Output {
    svmap()
        .args(["run", "--va-bits", "40"])
        .args(args)
        .arg("--")
        .arg(prog)
        .output()
        .unwrap()
}

fn refused(which: &str, names: &[&str]) {
    let dir = scratch(which);
    let Some(exe) = sanitized(&dir, which) else {
        return;
    };
    for method in [&[][..], &["--preload"][..]] {
        let out = run(method, &exe);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{method:?}: {err}");
        assert!(
            out.stdout.is_empty(),
            "{method:?}: it ran: {}",
            text(&out.stdout)
        );
        for n in names {
            assert!(err.contains(n), "{method:?}: {n:?} not in: {err}");
        }
        assert!(err.contains("2^40"), "{err}");
    }
    // Also as a descendant: the shell's child is refused, the shell sees
    // it killed, svmap run exits 125.
    let out = svmap()
        .args(["run", "--va-bits", "40", "--", "sh", "-c", "\"$0\"; exit 0"])
        .arg(&exe)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    // --allow-partial: a warning, and the program runs unfenced.
    for method in [
        &["--allow-partial"][..],
        &["--allow-partial", "--preload"][..],
    ] {
        let out = run(method, &exe);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{method:?}: {err}");
        assert_eq!(text(&out.stdout), "ran\n", "{method:?}: {err}");
        assert!(err.contains("warning") && err.contains(names[0]), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn address_sanitizer_programs_are_refused_with_their_fixed_ranges() {
    refused(
        "address",
        &["AddressSanitizer", "0x7fff8000", "0x600000000000"],
    );
}

#[test]
fn thread_sanitizer_programs_are_refused_with_their_fixed_ranges() {
    refused("thread", &["ThreadSanitizer", "0x720000000000"]);
}

/// The wait used below reads the child's pipes while it runs: a child
/// that writes far more than a pipe holds on both still finishes.
#[test]
fn waiting_reads_output_larger_than_a_pipe() {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "head -c 1000000 /dev/zero; head -c 300000 /dev/zero >&2; exit 3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::wait_output(&mut child, Duration::from_secs(120))
        .expect("a child writing 1.3 MB did not finish");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout.len(), 1_000_000);
    assert_eq!(out.stderr.len(), 300_000);
    // A child that does not exit is killed at the limit.
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    assert!(common::wait_output(&mut child, Duration::from_millis(200)).is_none());
    assert!(child.try_wait().unwrap().is_some());
}

#[test]
fn valgrind_runs_fenced_and_the_preload_fence_in_its_client_is_refused() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("skipped: no valgrind");
        return;
    }
    // The traced method fences valgrind's own process, whose address
    // space manager then places itself and the client below the limit. A
    // hang guard only (it takes about a second; the preload fence in a
    // valgrind client used to take minutes).
    for (method, code) in [(&[][..], 0), (&["--preload"][..], 125)] {
        let mut child = svmap()
            .args(["run", "--va-bits", "40"])
            .args(method)
            .args(["--", "valgrind", "-q", "/bin/true"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = common::wait_output(&mut child, Duration::from_secs(600))
            .unwrap_or_else(|| panic!("{method:?}: svmap run -- valgrind did not finish"));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{method:?}: {err}");
        if code == 125 {
            assert!(err.contains("valgrind"), "{err}");
            // The task size is read as the kernel's, not valgrind's answer.
            assert!(!err.contains("0xfffffffffff000"), "{err}");
        }
    }
}
