//! `svmap run --via-loader`: the executable is mapped by its dynamic
//! loader, like a library, below 2^N; without it the kernel places it
//! (a PIE near 0x555555554000), above.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BITS: u32 = 36;
const LIMIT: u64 = 1 << BITS;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Prints the range of the `/proc/self/maps` line that holds `main`'s code,
/// as `text START END`, then `argv0 ARGV[0] argc ARGC`; exits 4.
const WHERE: &str = r#"
#include <stdio.h>
int main(int argc, char **argv) {
    unsigned long at = (unsigned long)main, s, e;
    char line[512];
    FILE *f = fopen("/proc/self/maps", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s <= at && at < e)
            printf("text %lx %lx\n", s, e);
    printf("argv0 %s argc %d\n", argv[0], argc);
    return 4;
}
"#;

fn compile(dir: &Path, static_link: bool) -> Option<PathBuf> {
    let src = dir.join("where.c");
    std::fs::write(&src, WHERE).unwrap();
    let exe = dir.join(if static_link { "where-static" } else { "where" });
    let mut c = Command::new("gcc");
    c.arg("-O1").arg("-o").arg(&exe).arg(&src);
    if static_link {
        c.arg("-static");
    }
    match c.output() {
        Ok(o) if o.status.success() => Some(exe),
        Ok(o) => {
            let err = text(&o.stderr);
            assert!(static_link, "gcc failed: {err}");
            eprintln!("skipped: gcc -static cannot link here: {err}");
            None
        }
        Err(e) => {
            eprintln!("skipped: no gcc ({e})");
            None
        }
    }
}

fn run(extra: &[&str], exe: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_svmap"))
        .args(["run", "--va-bits", &BITS.to_string()])
        .args(extra)
        .arg("--")
        .arg(exe)
        .args(["x", "y"])
        .output()
        .unwrap()
}

/// The text range and argv[0] the program printed.
fn text_range(out: &Output) -> (u64, u64, String) {
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{s}\n{}", text(&out.stderr));
    let t = s
        .lines()
        .find_map(|l| l.strip_prefix("text "))
        .unwrap_or_else(|| panic!("{s}"));
    let (a, b) = t.split_once(' ').unwrap();
    let h = |x: &str| u64::from_str_radix(x, 16).unwrap();
    let argv = s.lines().find_map(|l| l.strip_prefix("argv0 ")).unwrap();
    (h(a), h(b), argv.to_string())
}

#[test]
fn through_the_loader_the_program_text_lies_below_the_limit() {
    let dir = std::env::temp_dir().join(format!("svmap-run-loader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(exe) = compile(&dir, false) else {
        return;
    };
    // The kernel places the executable itself: above the limit.
    let (start, _, _) = text_range(&run(&[], &exe));
    assert!(start >= LIMIT, "{start:#x}");
    let (start, end, argv) = text_range(&run(&["--via-loader"], &exe));
    assert!(end <= LIMIT, "text at {start:#x}-{end:#x}");
    // The arguments reach the program, argv[0] as given.
    assert_eq!(argv, format!("{} argc 3", exe.display()));
    // The preload library comes after the loader has mapped the program:
    // the combination is a usage error.
    let out = run(&["--via-loader", "--preload"], &exe);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--via-loader needs the traced method"));
    assert!(out.stdout.is_empty());
    // A static executable has no loader: refused.
    if let Some(st) = compile(&dir, true) {
        let out = run(&["--via-loader"], &st);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            text(&out.stderr).contains("no dynamic loader"),
            "{}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs a hot loop so that LuaJIT compiles it, then prints every anonymous
/// executable mapping (LuaJIT's machine-code areas) as `jit START END`.
const LUA_JIT_AREAS: &str = r#"
local t = 0
for i = 1, 2e6 do t = t + (i % 7) end
for line in io.lines("/proc/self/maps") do
  local a, b, p, inode, path = line:match("^(%x+)-(%x+) (%S+) %S+ %S+ (%d+)%s*(.*)$")
  if p and p:sub(3, 3) == "x" and inode == "0" and path == "" then
    print("jit " .. a .. " " .. b)
  end
end
print("sum " .. t)
"#;

/// LuaJIT keeps its machine code within ±2 GiB of its own text. Fenced with
/// the executable above 2^N it finds no such place and runs without
/// compiled code (far slower); through the loader its text, and so its
/// machine code, lie below 2^N.
#[test]
fn luajit_compiles_below_the_limit_only_through_the_loader() {
    if Command::new("luajit").arg("-v").output().is_err() {
        eprintln!("skipped: no luajit");
        return;
    }
    let areas = |extra: &[&str]| -> Vec<(u64, u64)> {
        let out = Command::new(env!("CARGO_BIN_EXE_svmap"))
            .args(["run", "--va-bits", &BITS.to_string()])
            .args(extra)
            .args(["--", "luajit", "-e", LUA_JIT_AREAS])
            .output()
            .unwrap();
        let s = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{s}\n{}", text(&out.stderr));
        // The loop ran to its end either way.
        assert!(s.lines().any(|l| l == "sum 5999997"), "{s}");
        let h = |x: &str| u64::from_str_radix(x, 16).unwrap();
        s.lines()
            .filter_map(|l| l.strip_prefix("jit "))
            .map(|r| {
                let (a, b) = r.split_once(' ').unwrap();
                (h(a), h(b))
            })
            .collect()
    };
    assert_eq!(areas(&[]), vec![], "fenced without the loader");
    let below = areas(&["--via-loader"]);
    assert!(!below.is_empty(), "no machine code through the loader");
    assert!(below.iter().all(|&(_, e)| e <= LIMIT), "{below:x?}");
}
