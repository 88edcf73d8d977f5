//! Launching an unmodified program behind the address-space fence
//! (`libsvmap_fence.so`, crate `svmap-fence`): its later mappings land below
//! `2^va_bits`. See that crate for what the constructor does.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::error::Error;

/// File name of the preload library.
pub const LIB_NAME: &str = "libsvmap_fence.so";
/// Environment variable: the VA-bit limit (the fence does nothing without it).
pub const ENV_VA_BITS: &str = "SVMAP_FENCE_VA_BITS";
/// Environment variable: `1` prints the report to stderr.
pub const ENV_VERBOSE: &str = "SVMAP_FENCE_VERBOSE";
/// Environment variable: a file the report is appended to.
pub const ENV_REPORT: &str = "SVMAP_FENCE_REPORT";
/// Environment variable: overrides where the library is looked for.
pub const ENV_LIB: &str = "SVMAP_FENCE_LIB";

/// Where [`find_library`] looks, in order, for an executable in `exe_dir`:
/// `$SVMAP_FENCE_LIB`; `<exe dir>/`; `<exe dir>/../lib/`; `<exe dir>/../`
/// (a test binary in `target/<profile>/deps/`); and the other cargo profile
/// (`<exe dir>/../release/`, `<exe dir>/../debug/`), since cargo puts a
/// cdylib in `target/<profile>/` next to the `svmap` binary.
pub fn candidates(exe_dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os(ENV_LIB) {
        v.push(PathBuf::from(p));
    }
    v.push(exe_dir.join(LIB_NAME));
    if let Some(parent) = exe_dir.parent() {
        v.push(parent.join("lib").join(LIB_NAME));
        v.push(parent.join(LIB_NAME));
        v.push(parent.join("release").join(LIB_NAME));
        v.push(parent.join("debug").join(LIB_NAME));
    }
    v
}

/// Finds the preload library relative to the current executable.
pub fn find_library() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
    let tried = candidates(&dir);
    match tried.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.canonicalize().unwrap_or_else(|_| p.clone())),
        None => Err(Error::FenceLibraryNotFound { tried }),
    }
}

/// Environment variable: `1` makes a failure to fence a warning instead of
/// the end of the process (`--allow-partial`).
pub const ENV_ALLOW_PARTIAL: &str = "SVMAP_FENCE_ALLOW_PARTIAL";

/// How the fence gets into the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Under `ptrace`, in every new image before its first instruction
    /// ([`crate::launch`]); falls back to [`Method::Preload`] where ptrace
    /// is not permitted.
    Trace,
    /// The preload library's constructor, after the loader and the
    /// constructors of the libraries loaded before it; dynamically linked
    /// programs only.
    Preload,
}

/// How to run a fenced command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceOptions {
    /// The limit: later mappings land below `2^va_bits`.
    pub va_bits: u32,
    /// Print the fence's report to stderr.
    pub verbose: bool,
    /// Append the report to this file (made absolute and opened before the
    /// program starts).
    pub report: Option<PathBuf>,
    /// The library to preload (`None`: [`find_library`]).
    pub library: Option<PathBuf>,
    /// A failure to fence is a warning; the program runs partly fenced.
    pub allow_partial: bool,
    /// How the fence is put in.
    pub method: Method,
    /// Bytes kept free below the main stack for its growth (`None`: the
    /// process's hard `RLIMIT_STACK`; the guard gap comes on top). The
    /// traced method only; the preload library keeps the soft limit.
    pub stack_room: Option<u64>,
    /// Run the executable through its dynamic loader (`ld.so PROG ARGS`),
    /// so that the loader maps it like a library, below the limit, rather
    /// than the kernel above it ([`loader_command`]).
    pub via_loader: bool,
}

impl FenceOptions {
    /// Defaults: quiet, no report file, traced, failures fatal.
    pub fn new(va_bits: u32) -> FenceOptions {
        FenceOptions {
            va_bits,
            verbose: false,
            report: None,
            library: None,
            allow_partial: false,
            method: Method::Trace,
            stack_room: None,
            via_loader: false,
        }
    }
}

/// Checks that `path` is a 64-bit x86-64 ELF shared object, the only kind
/// the loader can preload here (anything else it skips with a warning,
/// and the program would run unfenced).
pub fn check_library(path: &Path) -> Result<(), Error> {
    let bad = |why: &str| Error::InvalidArgument {
        what: format!("the fence library {}: {why}", path.display()),
    };
    let mut head = [0u8; 20];
    let mut f = std::fs::File::open(path).map_err(|e| bad(&e.to_string()))?;
    std::io::Read::read_exact(&mut f, &mut head).map_err(|_| bad("not an ELF file"))?;
    if &head[..4] != b"\x7fELF" {
        return Err(bad("not an ELF file"));
    }
    if head[4] != 2 || head[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF file"));
    }
    if u16::from_le_bytes([head[16], head[17]]) != 3 {
        return Err(bad("not a shared object (ELF type is not ET_DYN)"));
    }
    if u16::from_le_bytes([head[18], head[19]]) != 62 {
        return Err(bad("not built for x86-64"));
    }
    Ok(())
}

/// Whether the ELF executable at `path` is statically linked (no
/// `PT_INTERP`): `None` if it is not a readable 64-bit ELF file (a script,
/// say).
pub fn is_static_executable(path: &Path) -> Option<bool> {
    elf_interpreter(path).map(|interp| interp.is_none())
}

/// The `PT_INTERP` path of the ELF executable at `path` (its dynamic
/// loader); `None` for a static executable or a file that is not a 64-bit
/// ELF file.
pub fn interpreter_of(path: &Path) -> Option<PathBuf> {
    elf_interpreter(path).flatten()
}

/// `Some(PT_INTERP path or None)` for a readable 64-bit ELF file, `None`
/// otherwise. Reads only the ELF header, the program headers and the
/// interpreter string (each bounded), never the whole file.
fn elf_interpreter(path: &Path) -> Option<Option<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileExt;
    /// The longest interpreter path read (PATH_MAX).
    const MAX_INTERP: u64 = 4096;
    let f = std::fs::File::open(path).ok()?;
    let read = |off: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off).ok()?;
        Some(buf)
    };
    let eh = read(0, 64)?;
    if eh.get(..4)? != b"\x7fELF" || *eh.get(4)? != 2 {
        return None;
    }
    let u16_at = |d: &[u8], o: usize| Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |d: &[u8], o: usize| Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |d: &[u8], o: usize| Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?));
    let phoff = u64_at(&eh, 32)?;
    let phentsize = usize::from(u16_at(&eh, 54)?);
    let phnum = usize::from(u16_at(&eh, 56)?);
    if phentsize < 56 {
        return if phnum == 0 { Some(None) } else { None };
    }
    // At most 65,535 entries of at most 65,535 bytes: bounded by the format.
    let phs = read(phoff, phnum.checked_mul(phentsize)?)?;
    for i in 0..phnum {
        let ph = &phs[i * phentsize..(i + 1) * phentsize];
        if u32_at(ph, 0)? == 3 {
            // PT_INTERP
            let off = u64_at(ph, 8)?;
            let len = u64_at(ph, 32)?.min(MAX_INTERP);
            let s = read(off, usize::try_from(len).ok()?)?;
            let s = &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())];
            return Some(Some(PathBuf::from(OsStr::from_bytes(s))));
        }
    }
    Some(None)
}

/// The command line that runs `cmd args...` through its dynamic loader:
/// `LOADER [--argv0 CMD] PROG ARGS...` (`--argv0` where the loader knows
/// it, glibc 2.33 and later, so that the program sees the `argv[0]` it was
/// given). The loader then maps the program with `mmap`, like a library:
/// under the fence, below the limit, where a JIT that must reach its own
/// code within 2 GiB (LuaJIT) finds room. `/proc/self/exe` names the
/// loader. A static executable, a script or a missing file is an error.
pub fn loader_command<S: AsRef<OsStr>>(
    cmd: &OsStr,
    args: &[S],
) -> Result<(PathBuf, Vec<OsString>), Error> {
    use std::os::unix::ffi::OsStrExt;
    let bad = |why: String| Error::InvalidArgument {
        what: format!("--via-loader: {why}"),
    };
    let exe =
        resolve_command(cmd).ok_or_else(|| bad(format!("{} not found", cmd.to_string_lossy())))?;
    let loader = interpreter_of(&exe).ok_or_else(|| {
        bad(format!(
            "{} has no dynamic loader (a static executable, a script, or not an ELF file)",
            exe.display()
        ))
    })?;
    let knows_argv0 = std::fs::read(&loader)
        .map_err(|e| bad(format!("{}: {e}", loader.display())))?
        .windows(b"--argv0".len())
        .any(|w| w == b"--argv0");
    let mut v = Vec::new();
    if knows_argv0 {
        v.push(OsString::from("--argv0"));
        v.push(cmd.to_os_string());
    }
    // The loader does not search $PATH: give it the file.
    let exe = if exe.as_os_str().as_bytes().contains(&b'/') {
        exe
    } else {
        PathBuf::from(".").join(exe)
    };
    v.push(exe.into_os_string());
    v.extend(args.iter().map(|a| a.as_ref().to_os_string()));
    Ok((loader, v))
}

/// The file `cmd` names: itself if it contains a `/`, else the first
/// executable file of that name on `$PATH`.
pub fn resolve_command(cmd: &OsStr) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if cmd.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(cmd));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(cmd)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// A `Command` for `cmd args...` with the fence preloaded (prepended to any
/// existing `LD_PRELOAD`) and its variables set. Spawn, wait or `exec` it.
pub fn command<S: AsRef<OsStr>>(
    opts: &FenceOptions,
    cmd: impl AsRef<OsStr>,
    args: &[S],
) -> Result<Command, Error> {
    if !(20..=56).contains(&opts.va_bits) {
        return Err(Error::InvalidArgument {
            what: format!("va_bits {} is not in 20..=56", opts.va_bits),
        });
    }
    let lib = match &opts.library {
        Some(l) => l.clone(),
        None => find_library()?,
    };
    check_library(&lib)?;
    let mut preload = OsString::from(lib.as_os_str());
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let mut c = Command::new(cmd.as_ref());
    c.args(args)
        .env("LD_PRELOAD", preload)
        .env(ENV_VA_BITS, opts.va_bits.to_string());
    if opts.verbose {
        c.env(ENV_VERBOSE, "1");
    }
    if let Some(r) = &opts.report {
        c.env(
            ENV_REPORT,
            std::path::absolute(r).unwrap_or_else(|_| r.clone()),
        );
    }
    if opts.allow_partial {
        c.env(ENV_ALLOW_PARTIAL, "1");
    }
    Ok(c)
}

/// Runs `cmd args...` fenced below `2^va_bits` and waits for it.
pub fn run_command<S: AsRef<OsStr>>(
    va_bits: u32,
    cmd: impl AsRef<OsStr>,
    args: &[S],
) -> Result<ExitStatus, Error> {
    run_with(&FenceOptions::new(va_bits), cmd, args)
}

/// How a fenced run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The program's exit status.
    pub status: ExitStatus,
    /// Every image was fully fenced (with the preload method: as far as the
    /// launcher can tell; the library itself ends a process it could not
    /// fence unless partial fences are allowed).
    pub fenced: bool,
    /// The method that ran (the traced one falls back to the preload one
    /// where ptrace is not permitted).
    pub method: Method,
}

/// [`run_command`] with options: [`run_fenced`], where a failure to fence
/// (without `allow_partial`) is an error.
pub fn run_with<S: AsRef<OsStr>>(
    opts: &FenceOptions,
    cmd: impl AsRef<OsStr>,
    args: &[S],
) -> Result<ExitStatus, Error> {
    let o = run_fenced(opts, cmd, args)?;
    if !o.fenced && !opts.allow_partial {
        return Err(Error::InvalidArgument {
            what: "the program could not be fenced and was killed".into(),
        });
    }
    Ok(o.status)
}

/// Runs `cmd args...` fenced and waits for it (with the traced method: for
/// every process it started). Signals the calling process receives from
/// other processes (`SIGTERM`, `SIGINT`, `SIGHUP`, `SIGQUIT`, `SIGUSR1/2`,
/// `SIGALRM`, `SIGWINCH`) are forwarded to the program meanwhile; the
/// program is killed if the caller dies.
pub fn run_fenced<S: AsRef<OsStr>>(
    opts: &FenceOptions,
    cmd: impl AsRef<OsStr>,
    args: &[S],
) -> Result<Outcome, Error> {
    if !(20..=56).contains(&opts.va_bits) {
        return Err(Error::InvalidArgument {
            what: format!("va_bits {} is not in 20..=56", opts.va_bits),
        });
    }
    let (loader, loader_args);
    let (cmd, args): (&OsStr, Vec<OsString>) = if opts.via_loader {
        (loader, loader_args) = loader_command(cmd.as_ref(), args)?;
        (loader.as_os_str(), loader_args)
    } else {
        let a = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        (cmd.as_ref(), a)
    };
    let args = &args[..];
    let mut opts = opts.clone();
    let mut file = None;
    if let Some(r) = &opts.report {
        let abs = std::path::absolute(r).map_err(|source| Error::Io {
            path: r.clone(),
            source,
        })?;
        file = Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&abs)
                .map_err(|source| Error::Io {
                    path: abs.clone(),
                    source,
                })?,
        );
        opts.report = Some(abs);
    }
    if opts.method == Method::Trace {
        let topts = crate::launch::TraceOptions {
            va_bits: opts.va_bits,
            allow_partial: opts.allow_partial,
            stack_room: opts.stack_room,
        };
        let mut rep = crate::launch::Reporter {
            verbose: opts.verbose,
            file: file.take(),
        };
        match crate::launch::run_traced(&topts, &mut rep, cmd, args)? {
            crate::launch::Traced::Done { status, failed } => {
                return Ok(Outcome {
                    status,
                    fenced: !failed,
                    method: Method::Trace,
                })
            }
            crate::launch::Traced::NotPermitted(e) => eprintln!(
                "svmap run: warning: ptrace is not permitted here ({e}); falling back to \
                 the preload library, which fences only dynamically linked programs and \
                 only after the constructors of the libraries loaded before it"
            ),
        }
    }
    drop(file);
    if let Some(exe) = resolve_command(cmd).filter(|_| !opts.via_loader) {
        if is_static_executable(&exe) == Some(true) {
            let msg = format!(
                "{} is statically linked: the preload library cannot reach it",
                exe.display()
            );
            if !opts.allow_partial {
                return Err(Error::InvalidArgument { what: msg });
            }
            eprintln!("svmap run: warning: {msg}; running it unfenced (--allow-partial)");
        }
    }
    let name = cmd.to_string_lossy().into_owned();
    let mut unfenced = false;
    if let Some(exe) = resolve_command(cmd) {
        if let Some(s) = sanitizer_of(&exe).filter(|s| 1u64 << opts.va_bits < s.needs) {
            let msg = sanitizer_refusal(&exe, &s, opts.va_bits);
            if !opts.allow_partial {
                return Err(Error::InvalidArgument { what: msg });
            }
            eprintln!("svmap run: warning: {msg}; running it unfenced (--allow-partial)");
            unfenced = true;
        }
    }
    let mut c = if unfenced {
        let mut c = Command::new(cmd);
        c.args(args);
        c
    } else {
        command(&opts, cmd, args)?
    };
    crate::trace_sys::kill_with_parent_on_spawn(&mut c);
    let mut child = c.spawn().map_err(|source| Error::Spawn {
        cmd: name.clone(),
        source,
    })?;
    crate::trace_sys::forward_signals_to(child.id() as i32);
    let status = child.wait();
    crate::trace_sys::forward_signals_to(0);
    let status = status.map_err(|source| Error::Spawn { cmd: name, source })?;
    Ok(Outcome {
        status,
        fenced: true,
        method: Method::Preload,
    })
}

/// One process's part of a fence report file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessReport {
    /// The pid.
    pub pid: u32,
    /// Lines of `/proc/self/maps` that were already above the limit.
    pub above: Vec<String>,
    /// Holes the fence could not reserve (`start-end errno=E`).
    pub uncovered: Vec<String>,
    /// The ranges the fence reserved, `(start, end)`.
    pub reserved_ranges: Vec<(u64, u64)>,
    /// The room left free below the main stack, `(start, end)`.
    pub stack_room: Option<(u64, u64)>,
    /// Number of reservations made (from the `done` line).
    pub reserved: u64,
    /// The `done` line was seen.
    pub done: bool,
    /// Error and warning lines.
    pub errors: Vec<String>,
}

/// Parses a report file (`svmap-fence[PID]: ...` lines, possibly from several
/// processes) into one entry per pid, in order of first appearance.
pub fn parse_report(text: &str) -> Vec<ProcessReport> {
    let mut out: Vec<ProcessReport> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("svmap-fence[") else {
            continue;
        };
        let Some((pid, msg)) = rest.split_once("]: ") else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let i = match out.iter().position(|r| r.pid == pid) {
            Some(i) => i,
            None => {
                out.push(ProcessReport {
                    pid,
                    ..ProcessReport::default()
                });
                out.len() - 1
            }
        };
        let r = &mut out[i];
        if let Some(a) = msg.strip_prefix("above ") {
            r.above.push(a.to_string());
        } else if let Some(x) = msg.strip_prefix("reserved ") {
            if let Some(rg) = range(x) {
                r.reserved_ranges.push(rg);
            }
        } else if let Some(x) = msg.strip_prefix("stack-room ") {
            r.stack_room = range(x);
        } else if let Some(u) = msg.strip_prefix("uncovered ") {
            r.uncovered.push(u.to_string());
        } else if let Some(d) = msg.strip_prefix("done ") {
            r.done = true;
            r.reserved = d
                .split_whitespace()
                .find_map(|f| f.strip_prefix("reserved="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if msg.starts_with("error") || msg.starts_with("warning") {
            r.errors.push(msg.to_string());
        }
    }
    out
}

/// `0xA-0xB` (followed by anything) as a pair.
fn range(s: &str) -> Option<(u64, u64)> {
    let s = s.split_whitespace().next()?;
    let (a, b) = s.split_once('-')?;
    let h = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok();
    Some((h(a)?, h(b)?))
}

/// The end of the user address space as the kernel sets it: `2^56 - PAGE`
/// with 5-level paging, else `2^47 - PAGE`.
///
/// [`crate::probe::user_va_bits`] takes `EEXIST` from a fixed reservation at
/// `2^47` as proof of 5-level paging; but a reservation placed elsewhere
/// (`MAP_FIXED_NOREPLACE` taken as a hint: a kernel before 4.17, or an
/// emulator such as valgrind, which places it where it likes) reads as
/// `EEXIST` too. Here that counts only if a mapping really lies at `2^47`.
pub fn user_top() -> u64 {
    use crate::sys::PAGE;
    let at = 1u64 << 47;
    if crate::probe::user_va_bits() == 47 {
        return at - PAGE;
    }
    match crate::sys::OwnedRange::reserve_at(at, PAGE) {
        Ok(r) => {
            drop(r);
            (1 << 56) - PAGE
        }
        Err(_) => {
            let mapped_there = crate::maps::read_view(crate::maps::Target::SelfProcess)
                .is_ok_and(|v| v.entries.iter().any(|e| e.start <= at && at < e.end));
            if mapped_there {
                (1 << 56) - PAGE
            } else {
                at - PAGE
            }
        }
    }
}

/// The fence as a library call, for programs that link svmap: reserves, in
/// the calling process, every free hole of the user address space at or
/// above `2^va_bits` (`PROT_NONE | MAP_NORESERVE | MAP_FIXED_NOREPLACE`, no
/// memory used), so that the kernel's own placement of later anonymous
/// mappings, `malloc`'s included, falls below the limit. Like the preload
/// library it leaves every grows-down VMA (the main stack) its room to grow
/// (`RLIMIT_STACK` plus the guard gap below its start; the rule is
/// [`svmap_core::fence_plan`], shared with the preload library) and covers the space after the program
/// break, so `brk` fails and `malloc` falls back to `mmap`. Dropping the
/// `Fence` removes it.
#[derive(Debug)]
pub struct Fence {
    pieces: Vec<crate::reserve::Reservation>,
    /// `2^va_bits`.
    pub limit: u64,
    /// What was already mapped at or above the limit when the fence went
    /// up: `(start, end, name)`.
    pub above: Vec<(u64, u64, String)>,
    /// Holes the fence could not take (another thread mapped them first in
    /// every round): `(start, end)`.
    pub uncovered: Vec<(u64, u64)>,
    /// The stack's room left free, if the stack is above the limit.
    pub stack_room: Option<(u64, u64)>,
}

impl Fence {
    /// Installs the fence (see [`Fence`]). `va_bits` in 20..=56; a limit at
    /// or above the top of the user address space fences nothing.
    pub fn install(va_bits: u32) -> Result<Fence, Error> {
        use crate::maps::{read_view, Kind, Target};
        use crate::reserve::{window_high, Reservation, STACK_GUARD_GAP};
        use crate::sys::PAGE;
        use svmap_core::fence_plan::{self, FenceParams, FenceStep, FenceVma};
        let limit = window_high(va_bits)?;
        let top = user_top();
        let mut fence = Fence {
            pieces: Vec::new(),
            limit,
            above: Vec::new(),
            uncovered: Vec::new(),
            stack_room: None,
        };
        if limit >= top {
            return Ok(fence);
        }
        let params = FenceParams {
            limit,
            top,
            stack_rlimit: crate::sys::stack_rlimit(),
            stack_guard_gap: STACK_GUARD_GAP,
            page_size: PAGE,
        };
        // Another thread may map into a hole between the snapshot and the
        // reservation (EEXIST): take a fresh snapshot and go again.
        for round in 0..4 {
            let view = read_view(Target::SelfProcess)?;
            if round == 0 {
                fence.above = view
                    .entries
                    .iter()
                    .filter(|e| e.end > limit)
                    .map(|e| (e.start, e.end, e.name_lossy()))
                    .collect();
            }
            let main_stack = view
                .entries
                .iter()
                .find(|e| e.kind() == Kind::Stack)
                .map(|e| e.start);
            let vmas = view.entries.iter().map(|e| FenceVma {
                start: e.start,
                end: e.end,
                grows_down: e.kind() == Kind::Stack || e.growsdown,
            });
            let mut raced = Vec::new();
            for step in fence_plan::plan(vmas, params) {
                match step {
                    FenceStep::StackRoom { start, end } => {
                        if Some(end) == main_stack {
                            fence.stack_room = Some((start, end));
                        }
                    }
                    FenceStep::Reserve { start, end } => {
                        match Reservation::at(start, end - start) {
                            Ok(r) => fence.pieces.push(r),
                            Err(_) => raced.push((start, end)),
                        }
                    }
                }
            }
            if raced.is_empty() {
                fence.uncovered.clear();
                break;
            }
            fence.uncovered = raced;
        }
        Ok(fence)
    }

    /// The reserved pieces `(start, end)`.
    pub fn pieces(&self) -> Vec<(u64, u64)> {
        self.pieces.iter().map(|r| (r.addr(), r.end())).collect()
    }

    /// Bytes reserved above the limit.
    pub fn reserved_bytes(&self) -> u64 {
        self.pieces.iter().map(|r| r.len()).sum()
    }
}

/// A sanitizer runtime that needs fixed mappings high in the address
/// space, which a fence below `2^N` cannot give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sanitizer {
    /// Its name, as its own messages give it.
    pub name: &'static str,
    /// What it maps at fixed addresses (x86-64 Linux).
    pub fixed: &'static str,
    /// The lowest limit under which all of that fits: one past the end of
    /// the highest fixed range.
    pub needs: u64,
}

/// Why `exe`, built with `s`, cannot run below `2^va_bits`.
pub fn sanitizer_refusal(exe: &Path, s: &Sanitizer, va_bits: u32) -> String {
    format!(
        "{} is built with {}, which needs fixed mappings high in the address space \
         ({}): it cannot run below 2^{va_bits}, only with a limit of at least {:#x} \
         (that is, unfenced in a 47-bit address space)",
        exe.display(),
        s.name,
        s.fixed,
        s.needs
    )
}

/// The sanitizers [`sanitizer_of`] recognises: the symbol that calls their
/// runtime's start-up, and the runtime library a program may load.
const SANITIZERS: [(&str, &str, Sanitizer); 4] = [
    (
        "__asan_init",
        "asan",
        Sanitizer {
            name: "AddressSanitizer",
            fixed: "shadow memory 0x7fff8000-0x10007fff8000, heap \
                    0x600000000000-0x640000000000",
            needs: 0x6400_0000_0000,
        },
    ),
    (
        "__tsan_init",
        "tsan",
        Sanitizer {
            name: "ThreadSanitizer",
            fixed: "shadow 0x100000000000-0x300000000000, metadata \
                    0x300000000000-0x380000000000, heap 0x720000000000-0x730000000000; \
                    application memory only in its own ranges",
            needs: 0x7300_0000_0000,
        },
    ),
    (
        "__msan_init",
        "msan",
        Sanitizer {
            name: "MemorySanitizer",
            fixed: "shadow and origin memory in ranges from 0x010000000000 to \
                    0x700000000000",
            needs: 0x7000_0000_0000,
        },
    ),
    (
        "__lsan_init",
        "lsan",
        Sanitizer {
            name: "LeakSanitizer",
            fixed: "heap 0x600000000000-0x640000000000",
            needs: 0x6400_0000_0000,
        },
    ),
];

/// The sanitizer the ELF executable at `path` is built with, if any: a
/// `__asan_init`-like symbol in its dynamic or static symbol table (the
/// runtime linked in, or called in a shared runtime), or the runtime
/// (`libasan.so`, `libclang_rt.asan…`) among the libraries it needs.
/// `None` also for a file that is not a 64-bit ELF file.
pub fn sanitizer_of(path: &Path) -> Option<Sanitizer> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    let read = |off: u64, len: u64| -> Option<Vec<u8>> {
        // Symbol tables of very large executables are not read.
        if len > 64 << 20 {
            return None;
        }
        let mut b = vec![0u8; usize::try_from(len).ok()?];
        f.read_exact_at(&mut b, off).ok()?;
        Some(b)
    };
    let eh = read(0, 64)?;
    if eh[..4] != *b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |b: &[u8], o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |b: &[u8], o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let shoff = u64_at(&eh, 40)?;
    let shentsize = u64::from(u16_at(&eh, 58)?);
    let shnum = u64::from(u16_at(&eh, 60)?);
    if shoff == 0 || shentsize < 64 || shnum == 0 {
        return None;
    }
    let sh = read(shoff, shentsize * shnum)?;
    // (type, offset, size, link, entsize) of each section.
    let sect = |i: u64| {
        let o = usize::try_from(i * shentsize).ok()?;
        Some((
            u32_at(&sh, o + 4)?,
            u64_at(&sh, o + 24)?,
            u64_at(&sh, o + 32)?,
            u32_at(&sh, o + 40)?,
            u64_at(&sh, o + 56)?,
        ))
    };
    let name_at = |strtab: &[u8], off: u64| -> Option<Vec<u8>> {
        let s = strtab.get(usize::try_from(off).ok()?..)?;
        Some(s[..s.iter().position(|&c| c == 0)?].to_vec())
    };
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut needed: Vec<Vec<u8>> = Vec::new();
    for i in 0..shnum {
        let Some((ty, off, size, link, entsize)) = sect(i) else {
            continue;
        };
        // SHT_SYMTAB 2, SHT_DYNSYM 11, SHT_DYNAMIC 6.
        if !matches!(ty, 2 | 6 | 11) {
            continue;
        }
        let Some((_, soff, ssize, _, _)) = sect(u64::from(link)) else {
            continue;
        };
        let (Some(data), Some(strtab)) = (read(off, size), read(soff, ssize)) else {
            continue;
        };
        if ty == 6 {
            for e in data.chunks_exact(16) {
                // DT_NEEDED 1.
                if u64_at(e, 0) == Some(1) {
                    needed.extend(u64_at(e, 8).and_then(|o| name_at(&strtab, o)));
                }
            }
        } else if entsize >= 24 {
            for e in data.chunks(entsize as usize) {
                let Some(n) = u32_at(e, 0) else { continue };
                if let Some(name) = name_at(&strtab, u64::from(n)) {
                    if name.starts_with(b"__") && name.ends_with(b"san_init") {
                        names.push(name);
                    }
                }
            }
        }
    }
    SANITIZERS.iter().find_map(|(sym, lib, s)| {
        let by_symbol = names.iter().any(|n| n == sym.as_bytes());
        let by_library = needed.iter().any(|n| {
            n.starts_with(format!("lib{lib}.so").as_bytes())
                || n.starts_with(format!("libclang_rt.{lib}").as_bytes())
        });
        (by_symbol || by_library).then_some(*s)
    })
}
