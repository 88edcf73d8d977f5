//! Compiles the C programs (`tests/c/test_capi.c`, `examples/c/example.c`)
//! with the system C compiler against the `libsvmap.a` / `libsvmap.so` that
//! cargo built for this test run, and runs them: linked statically, linked
//! dynamically, under valgrind (skipped, with a note, when valgrind is not
//! installed), and after `examples/c/install.sh` with the flags from
//! `pkg-config --cflags --libs svmap` (skipped when pkg-config is missing).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// What a static `libsvmap.a` needs from the system (`rustc --print
/// native-static-libs` for a glibc target).
const STATIC_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory cargo put `libsvmap.{a,so}` in for this build: the
/// profile directory above `deps/`, where this test binary lives (so it
/// follows `CARGO_TARGET_DIR`, `--release` and `--target`).
fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe
            .ancestors()
            .find(|d| d.join("libsvmap.a").is_file())
            .unwrap_or_else(|| panic!("no libsvmap.a above {}", exe.display()))
            .to_path_buf();
        assert!(
            dir.join("libsvmap.so").is_file(),
            "no libsvmap.so in {}",
            dir.display()
        );
        dir
    })
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("svmap-capi");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_owned())
}

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed:\n{}", show(&o));
    o
}

#[derive(Clone, Copy)]
enum Link {
    Static,
    Shared,
}

/// Compiles `src` into `out_dir()/name`, warnings as errors.
fn compile(src: &Path, name: &str, link: Link) -> PathBuf {
    let exe = out_dir().join(name);
    let mut cmd = Command::new(cc());
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg("-I")
        .arg(workspace().join("include"))
        .arg(format!(
            "-DSVMAP_TEST_DATA_DIR=\"{}\"",
            workspace().join("tests/data").display()
        ));
    if cfg!(debug_assertions) {
        // The library of a debug build exports the panic test hook.
        cmd.arg("-DSVMAP_TEST_DEBUG_HOOK");
    }
    cmd.arg(src).arg("-o").arg(&exe);
    match link {
        Link::Static => {
            cmd.arg(lib_dir().join("libsvmap.a")).args(STATIC_LIBS);
        }
        Link::Shared => {
            cmd.arg("-L")
                .arg(lib_dir())
                .arg("-lsvmap")
                .arg(format!("-Wl,-rpath,{}", lib_dir().display()));
        }
    }
    run_ok(&mut cmd);
    exe
}

fn test_program() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_capi.c")
}

fn example_program() -> PathBuf {
    workspace().join("examples/c/example.c")
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn c_test_program_static() {
    let exe = compile(&test_program(), "test_capi_static", Link::Static);
    let o = run_ok(&mut Command::new(&exe));
    println!("{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn c_test_program_shared() {
    let exe = compile(&test_program(), "test_capi_shared", Link::Shared);
    // The LD_LIBRARY_PATH cargo sets names target/<profile>, which may hold
    // an older libsvmap.so (cargo test does not refresh it), and the loader
    // searches it before the runpath: point it at the library just built.
    let o = run_ok(Command::new(&exe).env("LD_LIBRARY_PATH", lib_dir()));
    println!("{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn c_example_runs() {
    let exe = compile(&example_program(), "example_static", Link::Static);
    let o = run_ok(&mut Command::new(&exe));
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}");
    assert!(text.contains("below 2^40"), "{text}");
}

/// Compiles `source` statically and runs it under valgrind with leak
/// checking (definite, indirect and possible leaks are errors). Prints that
/// it skipped when valgrind is not installed (CI installs it).
fn run_under_valgrind(test: &str, source: &Path, name: &str) {
    run_under_valgrind_with(test, source, name, &[]);
}

/// [`run_under_valgrind`] with environment variables for the program.
fn run_under_valgrind_with(test: &str, source: &Path, name: &str, env: &[(&str, &str)]) {
    if !have("valgrind") {
        println!(
            "SKIPPED: valgrind is not installed, so {name} did not run under valgrind \
             (install it: apt-get install valgrind)"
        );
        eprintln!("SKIPPED {test}: valgrind is not installed");
        return;
    }
    let exe = compile(source, name, Link::Static);
    let o = run_ok(
        Command::new("valgrind")
            .args([
                "--leak-check=full",
                "--error-exitcode=1",
                "--errors-for-leak-kinds=definite,indirect,possible",
                "--quiet",
            ])
            .envs(env.iter().copied())
            .arg(&exe),
    );
    println!(
        "valgrind: no errors, no leaks\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn c_test_program_under_valgrind() {
    run_under_valgrind(
        "c_test_program_under_valgrind",
        &test_program(),
        "test_capi_valgrind",
    );
}

/// The runtime with two recording C devices: the order of the callbacks
/// (invalidate before unmap and before any reuse) and no range at or above
/// a device's limit.
#[test]
fn c_runtime_with_recording_devices() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_runtime.c");
    let exe = compile(&src, "test_runtime_static", Link::Static);
    let o = run_ok(&mut Command::new(&exe));
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}");
    assert!(text.contains("checks passed"), "{text}");
}

/// Attributes and prefetch from C with recording invalidate and migrate
/// callbacks: invalidation of the other device before each migration to a
/// device, whole granules, bad attribute lists refused.
#[test]
fn c_runtime_attributes_and_prefetch_with_recording_callbacks() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_migrate.c");
    let exe = compile(&src, "test_migrate_static", Link::Static);
    let o = run_ok(&mut Command::new(&exe));
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}");
    assert!(text.contains("checks passed"), "{text}");
}

/// The same under valgrind, without the window round: valgrind keeps
/// address ranges of its own that `/proc/self/maps` does not show, so a
/// window reservation over the free space below 2^40 meets one of them and
/// is refused with `SVMAP_EEXIST` (the runtime never maps over it), which
/// the program checks instead.
#[test]
fn c_runtime_with_recording_devices_under_valgrind() {
    run_under_valgrind_with(
        "c_runtime_with_recording_devices_under_valgrind",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_runtime.c"),
        "test_runtime_valgrind",
        &[("SVMAP_TEST_UNDER_VALGRIND", "1")],
    );
}

fn runtime_hostile_program() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_runtime_hostile.c")
}

/// The runtime's entry points under hostile input (NULLs, counts that
/// cannot be arrays, zero, wrapping and huge lengths, unknown enums and
/// devices, double frees, frees of addresses never allocated, callbacks
/// that fail with garbage codes or call the runtime): each returns its
/// documented status with a message, and the C program checks that
/// nothing changed.
#[test]
fn c_runtime_hostile_inputs_are_refused() {
    let exe = compile(
        &runtime_hostile_program(),
        "test_runtime_hostile_static",
        Link::Static,
    );
    let o = run_ok(&mut Command::new(&exe));
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}");
    assert!(text.contains("checks passed"), "{text}");
}

#[test]
fn c_runtime_hostile_inputs_under_valgrind() {
    run_under_valgrind(
        "c_runtime_hostile_inputs_under_valgrind",
        &runtime_hostile_program(),
        "test_runtime_hostile_valgrind",
    );
}

fn hostile_program() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_hostile.c")
}

/// Hostile inputs (NULLs, overflowing lengths and counts, inverted ranges,
/// unknown enums, non-0/1 bools, misaligned out-parameters, closed
/// descriptors, double deallocs, device sizes without bound, a pipe whose
/// reader has gone with SIGPIPE at its default action, a NULL-exe peer
/// spawn inside a peer) each come back as a clean error.
#[test]
fn c_hostile_inputs_are_refused() {
    let exe = compile(&hostile_program(), "test_hostile_static", Link::Static);
    let o = run_ok(&mut Command::new(&exe));
    println!("{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn c_hostile_inputs_under_valgrind() {
    run_under_valgrind(
        "c_hostile_inputs_under_valgrind",
        &hostile_program(),
        "test_hostile_valgrind",
    );
}

fn vaheap_program() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_vaheap.c")
}

/// The address heap as a driver's GPU virtual-address heap (Mesa's
/// `util_vma_heap` way): alignments lowest and highest first, merging
/// frees, a refused double free, exact and non-crossing allocations, a
/// seeded churn against a list of live ranges, hostile arguments.
#[test]
fn c_vaheap_as_a_gpu_va_heap() {
    let exe = compile(&vaheap_program(), "test_vaheap_static", Link::Static);
    let o = run_ok(&mut Command::new(&exe));
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}");
    assert!(text.contains("checks passed"), "{text}");
}

#[test]
fn c_vaheap_under_valgrind() {
    run_under_valgrind(
        "c_vaheap_under_valgrind",
        &vaheap_program(),
        "test_vaheap_valgrind",
    );
}

/// The install steps of examples/c/README.md, then the example built with
/// nothing but `pkg-config --cflags --libs svmap`.
#[test]
fn install_and_build_example_with_pkg_config() {
    if !have("pkg-config") {
        println!("SKIPPED: pkg-config is not installed");
        eprintln!("SKIPPED install_and_build_example_with_pkg_config: no pkg-config");
        return;
    }
    let prefix = out_dir().join("prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    run_ok(
        Command::new("sh")
            .arg(workspace().join("examples/c/install.sh"))
            .arg(&prefix)
            .env("SVMAP_LIB_DIR", lib_dir()),
    );
    let pc_dir = prefix.join("lib/pkgconfig");
    let pc = std::fs::read_to_string(pc_dir.join("svmap.pc")).unwrap();
    assert!(!pc.contains('@'), "unsubstituted template:\n{pc}");
    let flags = run_ok(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "svmap"])
            .env("PKG_CONFIG_PATH", &pc_dir),
    );
    let flags = String::from_utf8(flags.stdout).unwrap();
    assert!(flags.contains("-lsvmap"), "{flags}");
    let exe = out_dir().join("example_pkg_config");
    run_ok(
        Command::new(cc())
            .arg(example_program())
            .arg("-o")
            .arg(&exe)
            .args(flags.split_whitespace()),
    );
    let o = run_ok(Command::new(&exe).env("LD_LIBRARY_PATH", prefix.join("lib")));
    assert!(String::from_utf8_lossy(&o.stdout).contains("below 2^40"));
}
