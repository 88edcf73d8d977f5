//! The repository stands on its own: no tracked file points outside it
//! (a sibling folder, a path on one developer's machine), and none cites
//! documents that are not part of it or work items by number. The project's
//! own documents are `docs/trace-format.md`, `docs/design.md` and
//! `docs/linux-semantics.md`.
//!
//! The files are those `git ls-files` lists when git and a `.git` are
//! present, otherwise every file under the workspace except build output.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root: two levels above this crate.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lies two levels below the workspace")
        .to_path_buf()
}

/// Folders (relative to the root) that hold build output or fuzzer state,
/// skipped when there is no git to ask.
const UNTRACKED_DIRS: [&str; 6] = [
    "target",
    ".git",
    "fuzz/target",
    "fuzz/corpus",
    "fuzz/artifacts",
    "fuzz/coverage",
];

/// Tracked files, relative to `root`.
fn files(root: &Path) -> Vec<PathBuf> {
    if root.join(".git").exists() {
        if let Ok(out) = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["ls-files", "-z"])
            .output()
        {
            if out.status.success() {
                return out
                    .stdout
                    .split(|&b| b == 0)
                    .filter(|p| !p.is_empty())
                    .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
                    // A file deleted in the work tree but not yet in git.
                    .filter(|p| root.join(p).is_file())
                    .collect();
            }
        }
    }
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(root.join(&dir))
            .unwrap_or_else(|e| panic!("{}: {e}", root.join(&dir).display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let rel = dir.join(entry.file_name());
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                if !UNTRACKED_DIRS.iter().any(|d| rel == Path::new(d)) {
                    stack.push(rel);
                }
            } else if kind.is_file() {
                found.push(rel);
            }
        }
    }
    found.sort();
    found
}

/// What `line` must not contain, with the reason; `forbidden` holds the
/// literal strings (built from pieces so that this file does not hold them).
fn problem(line: &str, forbidden: &[(String, &'static str)]) -> Option<String> {
    for (needle, why) in forbidden {
        if line.contains(needle.as_str()) {
            return Some(format!("{why} ({needle:?})"));
        }
    }
    // "issue" or "issues" (any case) followed by blanks, '-', ':' or '#',
    // and a digit.
    let lower = line.to_ascii_lowercase();
    let word = ["is", "sue"].concat();
    let mut from = 0;
    while let Some(i) = lower[from..].find(&word) {
        let at = from + i;
        let before_ok = at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric();
        let rest = &lower[at + word.len()..];
        let rest = rest.strip_prefix('s').unwrap_or(rest);
        let rest = rest.trim_start_matches([' ', '\t', '-', ':', '#']);
        if before_ok && rest.starts_with(|c: char| c.is_ascii_digit()) {
            return Some("cites a work item by number".to_string());
        }
        from = at + word.len();
    }
    None
}

fn forbidden(root: &Path) -> Vec<(String, &'static str)> {
    let mut v: Vec<(String, &'static str)> = vec![(
        ["..", "shared"].join("/"),
        "points to a folder outside the repository",
    )];
    for dir in ["work", "home", "Users", "root"] {
        v.push((
            format!("/{dir}/"),
            "an absolute path outside the repository",
        ));
    }
    for old in ["TRACE", "DESIGN", "LINUX-SEMANTICS", "STYLE"] {
        v.push((
            format!("{old}.md"),
            "cites a document that is not part of the repository (see docs/)",
        ));
    }
    // This checkout's own location, wherever it is.
    let abs = root.to_string_lossy().into_owned();
    if root.components().count() > 2 {
        v.push((abs, "the absolute path of this checkout"));
    }
    v
}

#[test]
fn no_file_points_outside_the_repository_or_cites_missing_documents() {
    let root = workspace();
    let forbidden = forbidden(&root);
    let files = files(&root);
    assert!(
        files.iter().any(|f| f == Path::new("Cargo.toml")),
        "no Cargo.toml among {} files under {}",
        files.len(),
        root.display()
    );
    let mut bad = Vec::new();
    for rel in &files {
        let Ok(bytes) = std::fs::read(root.join(rel)) else {
            continue;
        };
        // Binary files (pictures) hold no references.
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            if let Some(why) = problem(line, &forbidden) {
                bad.push(format!(
                    "{}:{}: {why}: {}",
                    rel.display(),
                    i + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} line(s) in {} file(s):\n{}",
        bad.len(),
        {
            let mut f: Vec<&str> = bad.iter().map(|l| l.split(':').next().unwrap()).collect();
            f.dedup();
            f.len()
        },
        bad.join("\n")
    );
}

#[test]
fn the_checker_finds_what_it_must() {
    let root = Path::new("/nowhere/checkout/svmap");
    let f = forbidden(root);
    let hits = |line: &str| problem(line, &f).is_some();
    assert!(hits(&format!("see ../{}/examples", "shared")));
    assert!(hits(&format!("read /{}/main/README.md", "work")));
    assert!(hits(&format!("in {}.md, section 3", "TRACE")));
    assert!(hits(&format!("{}.md says", "LINUX-SEMANTICS")));
    assert!(hits(&format!("fixes {} 12", ["Is", "sue"].concat())));
    assert!(hits(&format!("({} #7)", ["is", "sue"].concat())));
    for form in ["s 12", "-12", ": 12", "s: 3"] {
        assert!(
            hits(&format!("see {}{form}", ["is", "sue"].concat())),
            "{form}"
        );
    }
    assert!(hits("/nowhere/checkout/svmap/crates"));
    assert!(!hits("docs/trace-format.md and docs/design.md"));
    assert!(!hits("/proc/self/maps and /sys/kernel/mm"));
    assert!(!hits(&format!(
        "a known {} with 2 cases",
        ["is", "sue"].concat()
    )));
    assert!(!hits(&format!("tissue {}", 3)));
}
