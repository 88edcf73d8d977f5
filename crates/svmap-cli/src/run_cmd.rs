//! `svmap run --va-bits N [--verbose] [--report FILE] -- CMD [ARGS...]`:
//! runs an unmodified program behind the address-space fence
//! ([`svmap_linux::fence`]), so that its later mappings land below `2^N`.
//! CMD and its arguments reach the program byte for byte ([`OsString`]).

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::PathBuf;

use crate::args::{self, Arg, Stop};

use svmap_linux::error::Error;
use svmap_linux::fence::{self, FenceOptions, Method};

/// Help text of `svmap run`.
pub const HELP: &str = r##"svmap run: run a program with its address space fenced below 2^N

Usage: svmap run --va-bits N [OPTIONS] [--] CMD [ARGS...]

Starts CMD under ptrace and, at its exec and at every exec of a program it
starts, reserves every free part of the new image's address space at and
above 2^N (cheap PROT_NONE | MAP_NORESERVE reservations, never over
existing mappings) before the image runs its first instruction, leaving
only the main stack its room to grow. The kernel then places every later
mapping of the loader, the libraries' constructors, malloc (which falls back
to mmap when brk fails) and the program below 2^N: memory a device with N
address bits can reach. Static executables are fenced the same way. What
the kernel placed at exec (stack, vDSO, the executable and the loader)
cannot move; the report names it.

svmap run stays attached until every process it started has exited, and
forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2, SIGALRM and SIGWINCH
sent to it to CMD; if svmap run is killed, so is CMD. A program under
svmap run cannot itself be traced (run debuggers with --preload).

The stack: the room below the main stack is reserved like the rest and
given to the stack, a guard gap (1 MiB) at a time, when it faults there;
mmap never gets it, even when the space below 2^N is full. A program that
raises its soft RLIMIT_STACK gets stack up to its new limit within the room
(hard limit or --stack-room) and within the space the kernel left below the
stack at exec (at least 128 MiB; the soft limit at exec plus up to 16 GiB
of random offset with ASLR). A stack buffer more than 1 MiB below the
deepest stack page touched so far, written first by a system call (read
into an untouched 2 MiB array), gets EFAULT where it would not unfenced.

The legacy layout (setarch -L, personality ADDR_COMPAT_LAYOUT) places
mappings bottom-up from TASK_SIZE/3 and never below: an image that has it
is executed again (execve of /proc/self/exe, same arguments and
environment) in the default layout, with a warning. With
vm.legacy_va_layout=1 (system-wide) the program is refused.

Refused (exit 125, naming why; --allow-partial runs them unfenced and
untraced, with what they start): programs built with AddressSanitizer,
ThreadSanitizer, MemorySanitizer or LeakSanitizer, whose runtimes need
fixed mappings far above any useful limit (ASan: shadow at
0x7fff8000-0x10007fff8000, heap at 0x600000000000; TSan: shadow from
0x100000000000, heap at 0x720000000000). valgrind runs fenced (svmap run
-- valgrind PROG fences valgrind's own process, which then places itself
and PROG below 2^N); the preload fence inside a valgrind client refuses.

Not fenced: a mapping the program places itself with MAP_FIXED above 2^N
succeeds (it replaces part of a reservation); the fence steers the kernel's
choice of addresses, it does not forbid addresses.

--preload uses the preload library libsvmap_fence.so instead (also the
fallback, with a warning, where ptrace is not permitted): it fences from its
constructor, after the loader and the constructors of the libraries loaded
before it, so it cannot fence static executables (refused) nor memory those
constructors allocated. The library is found next to the svmap executable
(target/<profile>/, its ../lib/ or a sibling profile), or at
$SVMAP_FENCE_LIB.

Options:
  --va-bits N        the device's address bits, 20..=56 (required)
  --verbose          the fence prints its report on standard error
  --report FILE      the fence appends its report to FILE (one block per
                     process, lines "svmap-fence[PID]: ..."); FILE is
                     opened before CMD starts
  --allow-partial    a fence that cannot be completed (e.g. under a low
                     ulimit -v) is a warning and the program runs; without
                     it the program is killed and svmap run exits 125
  --stack-room BYTES room kept below the main stack for it to grow (a
                     number, or with K, M, G, T: 64M); default: the hard
                     RLIMIT_STACK, or with an unlimited hard limit all the
                     space the kernel left below the stack at exec. The
                     room is reserved too and given to the stack alone, as
                     it grows (see "The stack" below)
  --via-loader       run CMD through its dynamic loader (ld.so CMD ARGS),
                     which maps the executable like a library: below 2^N,
                     where a JIT that must reach its own code within 2 GiB
                     (LuaJIT) finds room; /proc/self/exe then names the
                     loader (not for static executables or scripts)
  --preload          fence with the preload library, not ptrace
  --fence-lib PATH   the preload library to use (must be an x86-64 ELF
                     shared object)
  -h, --help         print this help
  --                 end of options: CMD and its arguments follow

Exit status:
  the exit status of CMD; 128+SIG if a signal killed it
  2    a usage error
  125  svmap could not set the fence up (bad library, report file not
       writable, static executable with --preload) or a process could not
       be fenced (it was killed)
  126  CMD was found but could not be run
  127  CMD was not found

Examples:
  svmap run --va-bits 40 -- python3 -c 'import mmap; print(mmap.mmap(-1, 1 << 20))'
  svmap run --va-bits 44 --verbose -- sort large.txt
  svmap run --va-bits 40 --report fence.log -- ./my-gpu-app --size 8G
"##;

/// The arguments after `run`: the fence options (`va_bits` still 0 when
/// `--va-bits` is missing), then CMD and its arguments, untouched.
fn parse(args: &[OsString]) -> Result<(FenceOptions, Option<u32>, Vec<OsString>), Stop> {
    let mut opts = FenceOptions::new(0);
    let mut va_bits: Option<u32> = None;
    let mut command = Vec::new();
    let mut p = args::parser(args);
    while let Some(arg) = p.next()? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Err(Stop::Help),
            Arg::Long("va-bits") => {
                let v = args::value(&mut p, "--va-bits", "a number of bits")?;
                va_bits = Some(args::number_in(
                    "--va-bits",
                    v,
                    20..=56,
                    "a number of address bits",
                )?);
            }
            Arg::Long("verbose") => opts.verbose = true,
            Arg::Long("allow-partial") => opts.allow_partial = true,
            Arg::Long("preload") => opts.method = Method::Preload,
            Arg::Long("via-loader") => opts.via_loader = true,
            Arg::Long("stack-room") => {
                let v = args::value(&mut p, "--stack-room", "a size in BYTES")?;
                opts.stack_room = Some(bytes("--stack-room", v)?);
            }
            Arg::Long("report") => {
                opts.report = Some(PathBuf::from(args::value(&mut p, "--report", "a FILE")?));
            }
            Arg::Long("fence-lib") => {
                opts.library = Some(PathBuf::from(args::value(&mut p, "--fence-lib", "a PATH")?));
            }
            // The first argument that is not an option (or the one after
            // `--`) is CMD; what follows is its own.
            Arg::Value(cmd) => {
                command.push(cmd);
                command.extend(p.raw_args()?);
                break;
            }
            other => return Err(args::unknown(other)),
        }
    }
    Ok((opts, va_bits, command))
}

/// Runs `svmap run` with the arguments after `run`; returns the exit status.
pub fn run(args: &[OsString]) -> i32 {
    let (mut opts, va_bits, command) = match parse(args) {
        Ok(v) => v,
        Err(Stop::Help) => {
            print!("{HELP}");
            return 0;
        }
        Err(Stop::Usage(m)) => return usage_error(&m),
    };
    let Some(va_bits) = va_bits else {
        return usage_error("missing --va-bits N");
    };
    opts.va_bits = va_bits;
    if opts.via_loader && opts.method == Method::Preload {
        return usage_error(
            "--via-loader needs the traced method: the preload library is loaded only \
             after the loader has mapped the program",
        );
    }
    if let Some(lib) = &opts.library {
        // The loader would only warn and run the program unfenced.
        if let Err(e) = fence::check_library(lib) {
            eprintln!("svmap run: {e}");
            return 125;
        }
    }
    if opts.library.is_none() && fence::find_library().is_err() {
        // A cargo tree where only the dependency copy was built
        // (`target/<profile>/deps/`, e.g. by `cargo test`).
        let deps = std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.join("deps").join(fence::LIB_NAME)));
        opts.library = deps.filter(|p| p.is_file());
    }
    let Some((cmd, cmd_args)) = command.split_first() else {
        return usage_error("missing the command to run (after --)");
    };
    match fence::run_fenced(&opts, cmd, cmd_args) {
        Ok(o) if !o.fenced && !opts.allow_partial => {
            eprintln!(
                "svmap run: a process could not be fenced below 2^{} and was killed \
                 (see the svmap-fence lines above; --allow-partial runs it anyway)",
                opts.va_bits
            );
            125
        }
        Ok(fence::Outcome { status, .. }) => {
            if let Some(code) = status.code() {
                code
            } else {
                use std::os::unix::process::ExitStatusExt;
                128 + status.signal().unwrap_or(0)
            }
        }
        Err(Error::Spawn { cmd, source }) => {
            eprintln!("svmap run: cannot run {cmd:?}: {source}");
            match source.kind() {
                ErrorKind::NotFound => 127,
                _ => 126,
            }
        }
        Err(e) => {
            eprintln!("svmap run: {e}");
            125
        }
    }
}

/// A size: decimal bytes with an optional binary suffix `K`, `M`, `G` or
/// `T` (`64M` is 64 MiB), at most 2^47.
fn bytes(name: &str, v: OsString) -> Result<u64, Stop> {
    let s = args::text(name, v)?;
    let bad = || {
        Stop::Usage(format!(
            "{name} {s:?}: expected a size in bytes (e.g. 67108864 or 64M), at most 128T"
        ))
    };
    let (num, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&s[..i], shift)
        }
        _ => (&s[..], 0),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift)
        .filter(|&b| b <= 1 << 47)
        .ok_or_else(bad)
}

fn usage_error(msg: &str) -> i32 {
    eprintln!(
        "svmap run: {msg}\nUsage: svmap run --va-bits N [OPTIONS] [--] CMD [ARGS...]  (see svmap run --help)"
    );
    2
}
