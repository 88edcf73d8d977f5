//! `svmap run --va-bits N [--verbose] [--report FILE] -- CMD [ARGS...]`:
//! runs an unmodified program behind the address-space fence
//! ([`svmap_linux::fence`]), so that its later mappings land below `2^N`.

use std::io::ErrorKind;
use std::path::PathBuf;

use svmap_linux::error::Error;
use svmap_linux::fence::{self, FenceOptions};

/// Help text of `svmap run`.
pub const HELP: &str = r##"svmap run: run a program with its address space fenced below 2^N

Usage: svmap run --va-bits N [--verbose] [--report FILE] [--fence-lib PATH] [--] CMD [ARGS...]

Starts CMD with the preload library libsvmap_fence.so. Before the program's
main(), the library reserves every free part of the address space at and
above 2^N (cheap PROT_NONE | MAP_NORESERVE reservations, never over existing
mappings), leaving only the main stack room to grow, so that the kernel
places the program's later anonymous mappings (and malloc's, which falls
back to mmap when brk fails) below 2^N: memory a device with N address bits
can reach. What was already above 2^N at start (stack, vDSO, the program and
the libraries the loader mapped) cannot move; the report names it.

The library is found next to the svmap executable (target/<profile>/, its
../lib/ or a sibling profile), or at $SVMAP_FENCE_LIB, from any working
directory. `cargo build --release` at the workspace root builds both.

Options:
  --va-bits N        the device's address bits, 20..=56 (required)
  --verbose          the fence prints its report on standard error
  --report FILE      the fence appends its report to FILE (one block per
                     process, lines "svmap-fence[PID]: ...")
  --fence-lib PATH   preload this library instead of looking for it
  -h, --help         print this help
  --                 end of options: CMD and its arguments follow

Exit status:
  the exit status of CMD; 128+SIG if a signal killed it
  2    a usage error
  125  svmap could not set the fence up (library not found, bad option)
  126  CMD was found but could not be run
  127  CMD was not found

Examples:
  svmap run --va-bits 40 -- python3 -c 'import mmap; print(mmap.mmap(-1, 1 << 20))'
  svmap run --va-bits 44 --verbose -- sort large.txt
  svmap run --va-bits 40 --report fence.log -- ./my-gpu-app --size 8G
"##;

/// Runs `svmap run` with the arguments after `run`; returns the exit status.
pub fn run(args: &[String]) -> i32 {
    let mut opts = FenceOptions::new(0);
    let mut va_bits: Option<u32> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (name, inline) = crate::args::split_option(a);
        let mut value = |what: &str| -> Result<String, i32> {
            crate::args::option_value(args, &mut i, inline)
                .ok_or_else(|| usage_error(&format!("{name} needs {what}")))
        };
        match name {
            "-h" | "--help" => {
                print!("{HELP}");
                return 0;
            }
            "--va-bits" => {
                let v = match value("a number of bits") {
                    Ok(v) => v,
                    Err(code) => return code,
                };
                match v.parse::<u32>() {
                    Ok(n) if (20..=56).contains(&n) => va_bits = Some(n),
                    _ => {
                        return usage_error(&format!(
                            "--va-bits {v:?}: expected a number of address bits in 20..=56"
                        ))
                    }
                }
            }
            "--verbose" if inline.is_none() => opts.verbose = true,
            "--report" => match value("a FILE") {
                Ok(v) => opts.report = Some(PathBuf::from(v)),
                Err(code) => return code,
            },
            "--fence-lib" => match value("a PATH") {
                Ok(v) => opts.library = Some(PathBuf::from(v)),
                Err(code) => return code,
            },
            "--" => {
                i += 1;
                break;
            }
            _ if a.starts_with('-') => return usage_error(&format!("unknown option {a:?}")),
            _ => break,
        }
        i += 1;
    }
    let Some(va_bits) = va_bits else {
        return usage_error("missing --va-bits N");
    };
    opts.va_bits = va_bits;
    if let Some(lib) = &opts.library {
        // The loader would only warn and run the program unfenced.
        if !lib.is_file() {
            eprintln!(
                "svmap run: the fence library {} does not exist",
                lib.display()
            );
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
    let Some((cmd, cmd_args)) = args.get(i..).and_then(|r| r.split_first()) else {
        return usage_error("missing the command to run (after --)");
    };
    match fence::run_with(&opts, cmd, cmd_args) {
        Ok(status) => {
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

fn usage_error(msg: &str) -> i32 {
    eprintln!(
        "svmap run: {msg}\nUsage: svmap run --va-bits N [--verbose] [--report FILE] [--] CMD [ARGS...]  (see svmap run --help)"
    );
    2
}
