//! Programs that cannot run fenced get a refusal that names why:
//! AddressSanitizer and ThreadSanitizer binaries (fixed mappings far above
//! any limit), and the preload fence inside a valgrind client. valgrind
//! itself runs fenced under the traced method and finishes.
//!
//! The sanitizer programs are compiled here with `gcc -fsanitize=...`; the
//! tests say so and pass where the runtime is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

fn wait_timeout(child: &mut std::process::Child, limit: Duration) -> Option<Output> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            let mut out = Output {
                status: child.wait().unwrap(),
                stdout: Vec::new(),
                stderr: Vec::new(),
            };
            use std::io::Read;
            child
                .stdout
                .take()
                .unwrap()
                .read_to_end(&mut out.stdout)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_end(&mut out.stderr)
                .unwrap();
            return Some(out);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
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
        let out = wait_timeout(&mut child, Duration::from_secs(600))
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
