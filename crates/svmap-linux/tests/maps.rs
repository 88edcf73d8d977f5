//! `/proc/PID/maps` / `smaps` reader against hand-written text and real
//! processes (python3 maps files with odd names; the test binary re-executes
//! itself as `nobody` for the permission test).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use svmap_linux::error::Error;
use svmap_linux::maps::{self, Kind, MapsReader, Source, Target, View};

fn parse_text(text: &str, source: Source) -> Result<View, Error> {
    View::from_reader(MapsReader::from_reader(text.as_bytes(), "test", source))
}

#[test]
fn kernel_padding_and_names() {
    let text = "\
55eb2f631000-55eb2f633000 r--p 00000000 fe:00 247030                     /usr/bin/cat\n\
7fa4447b4000-7fa4447b7000 rw-p 00000000 00:00 0 \n\
7fa4447b7000-7fa4447ba000 rw-s 0001a000 fe:00 3                            two  spaces (deleted)\n\
7fa4447ba000-7fa4447bb000 r--p 00000000 fe:00 3                          /a\\012b c\n\
7ffcfcadd000-7ffcfcafe000 rw-p 00000000 00:00 0                          [stack]\n\
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";
    let v = parse_text(text, Source::Maps).unwrap();
    assert_eq!(v.entries.len(), 5);
    assert_eq!(v.map.len(), 5);
    assert_eq!(v.beyond_user.len(), 1);
    assert_eq!(v.beyond_user[0].kind(), Kind::Vsyscall);
    let e = &v.entries[0];
    assert_eq!(
        (e.start, e.end, e.inode),
        (0x55eb2f631000, 0x55eb2f633000, 247030)
    );
    assert_eq!(e.kind(), Kind::File);
    assert_eq!(v.entries[1].kind(), Kind::Anonymous);
    assert!(v.entries[1].name.is_empty(), "{:?}", v.entries[1]);
    // A name that starts with spaces: the column rule keeps them.
    assert_eq!(v.entries[2].name, b"  two  spaces (deleted)");
    assert!(v.entries[2].perms.shared && v.entries[2].offset == 0x1a000);
    assert_eq!(
        v.entries[3].path().unwrap().as_os_str().as_encoded_bytes(),
        b"/a\nb c"
    );
    assert_eq!(v.entries[4].kind(), Kind::Stack);
}

#[test]
fn malformed_lines_have_line_numbers() {
    let good = "00400000-00401000 r-xp 00000000 00:00 0\n";
    for (bad, reason) in [
        (
            "0040000g-00401000 r-xp 00000000 00:00 0",
            "bad start address",
        ),
        (
            "00401000-00400000 r-xp 00000000 00:00 0",
            "end address not above start",
        ),
        ("00500000-00501000 rwzp 00000000 00:00 0", "bad permissions"),
        ("00500000-00501000 r-xp 00000000 0000 0", "bad device"),
        ("00500000-00501000 r-xp 00000000 00:00 x", "bad inode"),
    ] {
        let text = format!("{good}{bad}\n");
        match parse_text(&text, Source::Maps) {
            Err(Error::Malformed {
                line: 2, reason: r, ..
            }) => assert_eq!(r, reason, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Cut short (no final newline).
    assert!(matches!(
        parse_text("00400000-00401000 r-xp 00000000 00:00 0", Source::Maps),
        Err(Error::Malformed { line: 1, .. })
    ));
    // Overlap is inconsistent.
    let text = "00400000-00402000 r-xp 00000000 00:00 0\n00401000-00403000 r-xp 00000000 00:00 0\n";
    assert!(matches!(
        parse_text(text, Source::Maps),
        Err(Error::Inconsistent { line: 2, .. })
    ));
    // smaps: field before header, and the gd flag.
    assert!(matches!(
        parse_text("Size: 4 kB\n", Source::Smaps),
        Err(Error::Malformed { line: 1, .. })
    ));
    let v = parse_text(
        "7ffcfcadd000-7ffcfcafe000 rw-p 00000000 00:00 0                          [stack]\nSize: 132 kB\nVmFlags: rd wr mr mw me gd ac\n00400000-00401000 r-xp 00000000 00:00 0\nVmFlags: rd ex\n",
        Source::Smaps,
    );
    // Out of order is inconsistent too.
    assert!(
        matches!(v, Err(Error::Inconsistent { line: 4, .. })),
        "{v:?}"
    );
    let v = parse_text(
        "00400000-00401000 r-xp 00000000 00:00 0\nVmFlags: rd ex\n7ffcfcadd000-7ffcfcafe000 rw-p 00000000 00:00 0                          [stack]\nSize: 132 kB\nVmFlags: rd wr mr mw me gd ac\n",
        Source::Smaps,
    )
    .unwrap();
    assert!(!v.entries[0].growsdown && v.entries[1].growsdown);
    assert!(v
        .map
        .last()
        .unwrap()
        .flags
        .contains(svmap_core::VmaFlags::GROWSDOWN));
}

#[test]
fn self_view_has_a_grows_down_stack() {
    let v = maps::read_view(Target::SelfProcess).unwrap();
    let stack = v.entries.iter().find(|e| e.kind() == Kind::Stack).unwrap();
    assert!(stack.growsdown);
    assert!(v.beyond_user.iter().all(|e| e.start >= maps::KERNEL_HALF));
    assert_eq!(v.map.len(), v.entries.len());
    let fast = maps::read_view_fast(Target::SelfProcess).unwrap();
    assert!(fast
        .entries
        .iter()
        .any(|e| e.kind() == Kind::Stack && e.growsdown));
}

#[test]
fn nonexistent_pid() {
    // pid_max is at most 2^22.
    match maps::read_view(Target::Pid(4_194_304 + 17)) {
        Err(Error::NoSuchProcess { pid }) => assert_eq!(pid, 4_194_321),
        other => panic!("{other:?}"),
    }
}

const PY_MAPPER: &str = r#"
import mmap, os, sys
d, n = sys.argv[1], int(sys.argv[2])
keep = []
for nm in [' spaced name', 'new\nline', 'gone', '  lead']:
    p = os.path.join(d, nm)
    with open(p, 'wb') as f: f.write(b'x' * 4096)
    fd = os.open(p, os.O_RDONLY); keep.append(mmap.mmap(fd, 4096, prot=mmap.PROT_READ)); os.close(fd)
os.unlink(os.path.join(d, 'gone'))
p = os.path.join(d, 'many')
with open(p, 'wb') as f: f.write(b'y' * 4096)
fd = os.open(p, os.O_RDONLY)
for i in range(n): keep.append(mmap.mmap(fd, 4096, prot=mmap.PROT_READ))
print('ready', flush=True)
sys.stdin.read()
"#;

/// The real python3 executable (not a pyenv shim script, whose pid would
/// not be python's).
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A python3 child with odd file names and `n` extra file mappings.
fn mapper(tag: &str, n: usize) -> (Child, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("svmap-maps-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(python())
        .args(["-c", PY_MAPPER])
        .arg(&dir)
        .arg(n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    (child, dir)
}

fn finish(mut child: Child, dir: std::path::PathBuf) {
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn odd_names_deleted_and_a_large_smaps() {
    // python's mmap dups the fd per mapping: stay under RLIMIT_NOFILE.
    let n = 15_000;
    let (child, dir) = mapper("names", n);
    let t = std::time::Instant::now();
    let v = maps::read_view(Target::Pid(child.id())).unwrap();
    let took = t.elapsed();
    let d = dir.to_str().unwrap().as_bytes();
    let named = |suffix: &[u8]| {
        v.entries
            .iter()
            .find(|e| e.name.starts_with(d) && e.name.ends_with(suffix))
            .unwrap_or_else(|| {
                panic!(
                    "{:?} not found in {:?}",
                    String::from_utf8_lossy(suffix),
                    v.entries
                        .iter()
                        .filter(|e| e.name.starts_with(d))
                        .take(6)
                        .map(|e| e.name_lossy())
                        .collect::<Vec<_>>()
                )
            })
    };
    assert!(named(b"/ spaced name")
        .path()
        .unwrap()
        .ends_with(" spaced name"));
    assert!(named(b"/  lead").path().unwrap().ends_with("  lead"));
    // This kernel escapes the newline as \012.
    let nl = named(b"/new\\012line");
    assert!(nl.path().unwrap().to_str().unwrap().ends_with("/new\nline"));
    let gone = named(b"/gone (deleted)");
    assert!(gone.is_deleted() && gone.path().unwrap().ends_with("gone"));
    let many = v
        .entries
        .iter()
        .filter(|e| e.name.ends_with(b"/many"))
        .count();
    assert_eq!(many, n);
    eprintln!("smaps of {} VMAs read in {took:?}", v.entries.len());
    finish(child, dir);
}

#[test]
fn process_exiting_while_read_is_a_typed_error() {
    let (mut child, dir) = mapper("exit", 15_000);
    let pid = child.id();
    let mut r = maps::open(Target::Pid(pid), Source::Maps).unwrap();
    assert!(r.next().unwrap().is_ok());
    child.kill().unwrap();
    child.wait().unwrap();
    let mut n = 1;
    let end = loop {
        match r.next() {
            Some(Ok(_)) => n += 1,
            Some(Err(e)) => break e,
            None => panic!("a silently truncated view after {n} entries"),
        }
    };
    assert!(n < 15_000, "read {n} entries");
    assert!(
        matches!(end, Error::ProcessExited { pid: p, .. } if p == pid),
        "{end:?}"
    );
    finish(child, dir);
}

/// Run as `nobody` by `another_users_process` (does nothing otherwise).
#[test]
fn child_reads_a_root_process() {
    let Ok(pid) = std::env::var("SVMAP_TEST_READ_PID") else {
        return;
    };
    let pid: u32 = pid.parse().unwrap();
    match maps::read_view(Target::Pid(pid)) {
        Err(e @ Error::PermissionDenied { .. }) => {
            println!("SVMAP-CHILD-OK {e}");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

#[test]
fn another_users_process() {
    // The privilege drop needs no unsafe code: the child is this test binary,
    // started by Command with setgid/setuid to nobody (65534).
    if euid_is_root() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_reads_a_root_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SVMAP_TEST_READ_PID", std::process::id().to_string())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("SVMAP-CHILD-OK"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let msg = stdout
            .lines()
            .find(|l| l.contains("SVMAP-CHILD-OK"))
            .unwrap();
        assert!(msg.contains("another user"), "{msg}");
    } else {
        // Not root: reading pid 1 (root's init) must be refused.
        assert!(matches!(
            maps::read_view(Target::Pid(1)),
            Err(Error::PermissionDenied { .. }) | Err(Error::NoSuchProcess { .. })
        ));
    }
}

fn euid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        .unwrap_or(false)
}
