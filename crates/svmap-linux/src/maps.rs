//! A streaming reader of `/proc/PID/maps` and `/proc/PID/smaps` into the core
//! [`AddressMap`] plus per-VMA details.
//!
//! # The format, as this kernel (6.18) writes it
//!
//! ```text
//! 7ff03760b000-7ff03760d000 rw-p 00033000 fe:00 325843                     /usr/lib/ld.so
//! ^start       ^end         perm offset   dev   inode  pad to column 72, one space, name
//! ```
//!
//! - Fields are separated by one space; after the inode the kernel pads with
//!   spaces up to column 72 (`25 + 6 * sizeof(void *) - 1`) and writes one
//!   more space, then the name (`seq_pad`). A line that is already longer
//!   gets just the one space. So the name starts at `max(end of inode, 72) +
//!   1`, which keeps names that themselves start with spaces intact. Lines
//!   without a name have no padding.
//! - In path names the kernel escapes only the newline, as the four bytes
//!   `\012` (`seq_file_path(m, file, "\n")`); a backslash is not escaped, so
//!   a file literally named `a\012b` reads the same as `a<newline>b`.
//!   [`MapsEntry::name`] keeps the raw bytes; [`MapsEntry::path`] decodes.
//! - A file unlinked while mapped gets ` (deleted)` appended (by `d_path`),
//!   which is again indistinguishable from a file whose name ends so.
//! - `[vsyscall]` (`ffffffffff600000`) lies in the kernel half, above every
//!   user address: it goes to [`View::beyond_user`], never into the map.
//! - In `smaps` every header line is followed by field lines that start with
//!   an uppercase letter; `VmFlags: ... gd ...` marks `VM_GROWSDOWN`, the
//!   only flag the gap search needs. `maps` alone does not show it.
//!
//! # Streaming and consistency
//!
//! The file is read with a small buffer line by line, never whole: a process
//! with 65530 VMAs has a 6 MiB `maps` and a 70 MiB `smaps`. The kernel
//! produces the text one buffer at a time and resumes after the last address
//! shown, so a view of a process that changes meanwhile is ordered but may
//! mix states; two entries that overlap are reported as
//! [`Error::Inconsistent`] and the caller may read again.
//!
//! If the process exits while being read, the kernel simply ends the file
//! early. The reader holds a pidfd opened before the file and, at the end,
//! asks it whether the process is gone: if so, the result is
//! [`Error::ProcessExited`], never a silently truncated view.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use svmap_core::{AddressMap, VmaFlags};

use crate::error::{Errno, Error};
use crate::sys;

/// Access bits of a VMA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms {
    /// `r`
    pub read: bool,
    /// `w`
    pub write: bool,
    /// `x`
    pub exec: bool,
    /// `s` (shared) rather than `p` (private).
    pub shared: bool,
}

impl std::fmt::Display for Perms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = |b: bool, ch: char| if b { ch } else { '-' };
        write!(
            f,
            "{}{}{}{}",
            c(self.read, 'r'),
            c(self.write, 'w'),
            c(self.exec, 'x'),
            if self.shared { 's' } else { 'p' }
        )
    }
}

/// One line (VMA) of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsEntry {
    /// First address.
    pub start: u64,
    /// One past the last address (`> start`).
    pub end: u64,
    /// Access bits.
    pub perms: Perms,
    /// File offset in bytes (`vm_pgoff << PAGE_SHIFT`).
    pub offset: u64,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Inode number (0 for anonymous memory).
    pub inode: u64,
    /// The name field exactly as the kernel wrote it (escapes kept), empty
    /// for anonymous memory without a name.
    pub name: Vec<u8>,
    /// `VM_GROWSDOWN` (from `smaps`' `VmFlags`; always false when read from
    /// plain `maps`).
    pub growsdown: bool,
}

/// What kind of mapping an entry is, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No name: anonymous memory.
    Anonymous,
    /// A file (the name starts with `/`).
    File,
    /// `[stack]`.
    Stack,
    /// `[heap]` (the program break area).
    Heap,
    /// `[vdso]`.
    Vdso,
    /// `[vvar]` or `[vvar_vclock]`.
    Vvar,
    /// `[vsyscall]`.
    Vsyscall,
    /// Any other name (`[anon:...]`, `[anon_shmem:...]`, `[uprobes]`, a
    /// memfd's `/memfd:...` is a [`Kind::File`]).
    Other,
}

impl MapsEntry {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Always false (a VMA is never empty); for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The kind of mapping.
    pub fn kind(&self) -> Kind {
        match &self.name[..] {
            b"" => Kind::Anonymous,
            b"[stack]" => Kind::Stack,
            b"[heap]" => Kind::Heap,
            b"[vdso]" => Kind::Vdso,
            b"[vvar]" | b"[vvar_vclock]" => Kind::Vvar,
            b"[vsyscall]" => Kind::Vsyscall,
            n if n.starts_with(b"/") => Kind::File,
            _ => Kind::Other,
        }
    }

    /// True if the kernel marked the file as unlinked (the name ends with
    /// ` (deleted)`; see the module documentation for the ambiguity).
    pub fn is_deleted(&self) -> bool {
        self.kind() == Kind::File && self.name.ends_with(b" (deleted)")
    }

    /// The file's path with `\012` decoded to a newline and a trailing
    /// ` (deleted)` removed; `None` for non-file mappings.
    pub fn path(&self) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        if self.kind() != Kind::File {
            return None;
        }
        let raw = if self.is_deleted() {
            &self.name[..self.name.len() - b" (deleted)".len()]
        } else {
            &self.name[..]
        };
        Some(PathBuf::from(std::ffi::OsString::from_vec(unescape(raw))))
    }

    /// The name, lossily decoded for display (escapes kept).
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Decodes the kernel's `\ooo` octal escapes (only `\012` is produced).
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\'
            && i + 4 <= raw.len()
            && raw[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (raw[i + 1] - b'0') as u32 * 64
                + (raw[i + 2] - b'0') as u32 * 8
                + (raw[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// The column after which the kernel writes the name (see the module docs).
const NAME_COLUMN: usize = 72;

fn hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = (c as char).to_digit(16)?;
        v = v << 4 | d as u64;
    }
    Some(v)
}

fn dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = (c as char).to_digit(10)?;
        v = v.checked_mul(10)?.checked_add(d as u64)?;
    }
    Some(v)
}

/// Parses one header line (without its newline). The error is the reason.
pub fn parse_line(line: &[u8]) -> Result<MapsEntry, &'static str> {
    let mut pos = 0;
    let field = |pos: &mut usize, sep: u8| -> Option<&[u8]> {
        let rest = &line[*pos..];
        let n = rest.iter().position(|&c| c == sep).unwrap_or(rest.len());
        let f = &rest[..n];
        *pos += n + usize::from(n < rest.len());
        Some(f)
    };
    let start = field(&mut pos, b'-')
        .and_then(hex)
        .ok_or("bad start address")?;
    let end = field(&mut pos, b' ')
        .and_then(hex)
        .ok_or("bad end address")?;
    if end <= start {
        return Err("end address not above start");
    }
    let p = field(&mut pos, b' ').ok_or("missing permissions")?;
    let perms = match p {
        [r, w, x, s]
            if matches!(r, b'r' | b'-')
                && matches!(w, b'w' | b'-')
                && matches!(x, b'x' | b'-')
                && matches!(s, b's' | b'p') =>
        {
            Perms {
                read: *r == b'r',
                write: *w == b'w',
                exec: *x == b'x',
                shared: *s == b's',
            }
        }
        _ => return Err("bad permissions"),
    };
    let offset = field(&mut pos, b' ').and_then(hex).ok_or("bad offset")?;
    let dev = field(&mut pos, b' ').ok_or("missing device")?;
    let colon = dev.iter().position(|&c| c == b':').ok_or("bad device")?;
    let dev_major = hex(&dev[..colon])
        .and_then(|v| u32::try_from(v).ok())
        .ok_or("bad device")?;
    let dev_minor = hex(&dev[colon + 1..])
        .and_then(|v| u32::try_from(v).ok())
        .ok_or("bad device")?;
    // The inode ends at the first space (or the end of the line).
    let rest = &line[pos..];
    let n = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
    let inode = dec(&rest[..n]).ok_or("bad inode")?;
    let inode_end = pos + n;
    let name = if inode_end >= line.len() {
        Vec::new()
    } else {
        let col = inode_end.max(NAME_COLUMN) + 1;
        let padded = col <= line.len() && line[inode_end..col].iter().all(|&c| c == b' ');
        let from = if padded {
            col
        } else {
            // Not the kernel's padding (hand-written text): skip all spaces.
            inode_end + line[inode_end..].iter().take_while(|&&c| c == b' ').count()
        };
        line[from..].to_vec()
    };
    Ok(MapsEntry {
        start,
        end,
        perms,
        offset,
        dev_major,
        dev_minor,
        inode,
        name,
        growsdown: false,
    })
}

/// Which process to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The calling process (`/proc/self`).
    SelfProcess,
    /// Another process (or this one by number).
    Pid(u32),
}

impl Target {
    fn dir(self) -> PathBuf {
        match self {
            Target::SelfProcess => PathBuf::from("/proc/self"),
            Target::Pid(p) => PathBuf::from(format!("/proc/{p}")),
        }
    }

    fn pid(self) -> u32 {
        match self {
            Target::SelfProcess => std::process::id(),
            Target::Pid(p) => p,
        }
    }
}

/// Which file to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `maps`: fast, but without the grows-down flag.
    Maps,
    /// `smaps`: about ten times the text (the kernel also walks page tables
    /// to count resident pages), with `VmFlags`.
    Smaps,
}

/// A streaming reader of one maps/smaps file: an iterator of entries.
pub struct MapsReader<R> {
    reader: R,
    path: PathBuf,
    pid: u32,
    /// Held from before the open, to tell an exit from a normal end.
    pidfd: Option<OwnedFd>,
    source: Source,
    line_no: usize,
    buf: Vec<u8>,
    pending: Option<(usize, MapsEntry)>,
    entry_line: usize,
    done: bool,
}

fn open_error(target: Target, path: &Path, e: std::io::Error) -> Error {
    let errno = Errno::of(&e);
    match errno {
        Errno::ENOENT | Errno::ESRCH => Error::NoSuchProcess { pid: target.pid() },
        Errno::EACCES | Errno::EPERM => Error::PermissionDenied {
            pid: target.pid(),
            path: path.to_path_buf(),
            errno,
        },
        _ => Error::Io {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// Opens the maps (or smaps) file of a process for streaming.
pub fn open(target: Target, source: Source) -> Result<MapsReader<BufReader<File>>, Error> {
    let pidfd = match target {
        Target::SelfProcess => None,
        Target::Pid(p) if p == std::process::id() => None,
        Target::Pid(p) => match sys::pidfd_open(p) {
            Ok(fd) => Some(fd),
            Err(Errno::ESRCH) | Err(Errno::EINVAL) => return Err(Error::NoSuchProcess { pid: p }),
            // No pidfd support: fall back to checking /proc/PID at the end.
            Err(_) => None,
        },
    };
    let path = target.dir().join(match source {
        Source::Maps => "maps",
        Source::Smaps => "smaps",
    });
    let file = File::open(&path).map_err(|e| open_error(target, &path, e))?;
    Ok(MapsReader {
        reader: BufReader::with_capacity(64 * 1024, file),
        path,
        pid: target.pid(),
        pidfd,
        source,
        line_no: 0,
        buf: Vec::with_capacity(256),
        pending: None,
        entry_line: 0,
        done: false,
    })
}

impl<R: BufRead> MapsReader<R> {
    /// A reader over any text (for tests and for saved files); no exit check.
    pub fn from_reader(reader: R, path: impl Into<PathBuf>, source: Source) -> Self {
        MapsReader {
            reader,
            path: path.into(),
            pid: 0,
            pidfd: None,
            source,
            line_no: 0,
            buf: Vec::with_capacity(256),
            pending: None,
            entry_line: 0,
            done: false,
        }
    }

    fn malformed(&self, line: usize, reason: &'static str, text: &[u8]) -> Error {
        let cut = &text[..text.len().min(200)];
        Error::Malformed {
            path: self.path.clone(),
            line,
            reason,
            text: String::from_utf8_lossy(cut).into_owned(),
        }
    }

    fn exited(&self) -> bool {
        match &self.pidfd {
            Some(fd) => sys::pidfd_exited(fd.as_fd()),
            None => false,
        }
    }

    fn next_entry(&mut self) -> Result<Option<MapsEntry>, Error> {
        loop {
            self.buf.clear();
            let n = match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(n) => n,
                Err(e) => {
                    if self.exited() {
                        return Err(Error::ProcessExited {
                            pid: self.pid,
                            lines_read: self.line_no,
                        });
                    }
                    let errno = Errno::of(&e);
                    return Err(if errno == Errno::EACCES || errno == Errno::EPERM {
                        Error::PermissionDenied {
                            pid: self.pid,
                            path: self.path.clone(),
                            errno,
                        }
                    } else {
                        Error::Io {
                            path: self.path.clone(),
                            source: e,
                        }
                    });
                }
            };
            if n == 0 {
                if self.exited() {
                    return Err(Error::ProcessExited {
                        pid: self.pid,
                        lines_read: self.line_no,
                    });
                }
                return Ok(self.pending.take().map(|(l, e)| {
                    self.entry_line = l;
                    e
                }));
            }
            self.line_no += 1;
            let line_no = self.line_no;
            if self.buf.last() != Some(&b'\n') {
                // The kernel ends every line with a newline; a missing one
                // means the file was cut short.
                if self.exited() {
                    return Err(Error::ProcessExited {
                        pid: self.pid,
                        lines_read: self.line_no,
                    });
                }
                let b = std::mem::take(&mut self.buf);
                let e = self.malformed(line_no, "line without a newline (truncated file)", &b);
                self.buf = b;
                return Err(e);
            }
            let line = &self.buf[..self.buf.len() - 1];
            let first = line.first().copied().unwrap_or(b' ');
            let is_header = first.is_ascii_digit() || (b'a'..=b'f').contains(&first);
            match self.source {
                Source::Maps => {
                    return match parse_line(line) {
                        Ok(e) => {
                            self.entry_line = line_no;
                            Ok(Some(e))
                        }
                        Err(reason) => {
                            let b = std::mem::take(&mut self.buf);
                            let e = self.malformed(line_no, reason, &b[..b.len() - 1]);
                            self.buf = b;
                            Err(e)
                        }
                    };
                }
                Source::Smaps if is_header => {
                    let entry = match parse_line(line) {
                        Ok(e) => e,
                        Err(reason) => {
                            let b = std::mem::take(&mut self.buf);
                            let e = self.malformed(line_no, reason, &b[..b.len() - 1]);
                            self.buf = b;
                            return Err(e);
                        }
                    };
                    if let Some((l, prev)) = self.pending.replace((line_no, entry)) {
                        self.entry_line = l;
                        return Ok(Some(prev));
                    }
                }
                Source::Smaps if first.is_ascii_uppercase() => {
                    let Some((_, cur)) = self.pending.as_mut() else {
                        let b = std::mem::take(&mut self.buf);
                        let e = self.malformed(line_no, "field line before any VMA line", &b);
                        self.buf = b;
                        return Err(e);
                    };
                    if let Some(flags) = line.strip_prefix(b"VmFlags:") {
                        cur.growsdown = flags.split(|&c| c == b' ').any(|f| f == b"gd");
                    }
                }
                Source::Smaps => {
                    let b = std::mem::take(&mut self.buf);
                    let e = self.malformed(
                        line_no,
                        "neither a VMA line nor a field line",
                        &b[..b.len() - 1],
                    );
                    self.buf = b;
                    return Err(e);
                }
            }
        }
    }

    /// Line number of the last line read.
    pub fn line_no(&self) -> usize {
        self.line_no
    }

    /// Line number of the header line of the entry returned last.
    pub fn entry_line(&self) -> usize {
        self.entry_line
    }
}

impl<R: BufRead> Iterator for MapsReader<R> {
    type Item = Result<MapsEntry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_entry().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

/// First address of the kernel half on 64-bit Linux: no user VMA reaches it.
pub const KERNEL_HALF: u64 = 1 << 63;

/// A whole address space: the core map of every user VMA plus the details.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Every user VMA (grows-down ones flagged), for the gap search.
    pub map: AddressMap,
    /// The entries of `map`, in address order.
    pub entries: Vec<MapsEntry>,
    /// Entries in the kernel half (`[vsyscall]`): shown by the kernel but not
    /// part of the user address space; kept out of `map`.
    pub beyond_user: Vec<MapsEntry>,
}

impl View {
    /// Builds a view from a reader, checking order and overlap.
    pub fn from_reader<R: BufRead>(mut r: MapsReader<R>) -> Result<View, Error> {
        let mut v = View::default();
        while let Some(e) = r.next() {
            let e = e?;
            if e.start >= KERNEL_HALF {
                v.beyond_user.push(e);
                continue;
            }
            let flags = if e.growsdown {
                VmaFlags::GROWSDOWN
            } else {
                VmaFlags::NONE
            };
            if let Some(prev) = v.entries.last() {
                if e.start < prev.end {
                    return Err(Error::Inconsistent {
                        line: r.entry_line(),
                        source: svmap_core::MapError::Overlap {
                            start: e.start,
                            end: e.end,
                            existing: svmap_core::Vma {
                                start: prev.start,
                                end: prev.end,
                                flags: VmaFlags::NONE,
                            },
                        },
                    });
                }
            }
            v.map
                .insert(e.start, e.end, flags)
                .map_err(|source| Error::Inconsistent {
                    line: r.entry_line(),
                    source,
                })?;
            v.entries.push(e);
        }
        Ok(v)
    }

    /// The entry containing `addr`, if any (O(log n)).
    pub fn entry_at(&self, addr: u64) -> Option<&MapsEntry> {
        let i = self.entries.partition_point(|e| e.end <= addr);
        self.entries.get(i).filter(|e| e.start <= addr)
    }
}

/// Reads the whole address space of a process from `smaps` (with the
/// grows-down flags), streaming.
pub fn read_view(target: Target) -> Result<View, Error> {
    View::from_reader(open(target, Source::Smaps)?)
}

/// Reads `maps` (fast, no grows-down flags; `[stack]` is flagged grows-down
/// by name, which is right for the main stack but misses other
/// `MAP_GROWSDOWN` mappings).
pub fn read_view_fast(target: Target) -> Result<View, Error> {
    let mut v = View::from_reader(open(target, Source::Maps)?)?;
    let stacks: Vec<(u64, u64)> = v
        .entries
        .iter_mut()
        .filter(|e| e.kind() == Kind::Stack)
        .map(|e| {
            e.growsdown = true;
            (e.start, e.end)
        })
        .collect();
    for (s, e) in stacks {
        let _ = v.map.unmap(s, e);
        let _ = v.map.insert(s, e, VmaFlags::GROWSDOWN);
    }
    Ok(v)
}
