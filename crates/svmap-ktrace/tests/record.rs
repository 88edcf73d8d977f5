//! The recorder through its library API, against the running kernel, without svmap.
//!
//! This binary has no test harness: run plainly, it records a short trace in each of the
//! four layouts by re-executing itself through [`spawn_recorder`], then checks every trace
//! on its own terms (header, one `expect` per `mmap`, and that the `map`/`unmap` lines keep a
//! model in which no kernel-placed mapping lands on memory the trace says is taken). Run
//! by [`spawn_recorder`], it is the recorder child and writes the trace to the path it got.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;
use svmap_ktrace::kernel_trace::{
    is_recorder_child, mmap_base, record, spawn_recorder, Config, Layout, CHILD_ENV, PAGE,
    TASK_SIZE,
};

/// `mmap` operations per layout: past the first fill phase (ops 300 to 360).
const OPS: u64 = 700;

fn main() -> ExitCode {
    if is_recorder_child() {
        return child();
    }
    // `cargo test` may pass harness options (`--quiet`, filters): nothing here takes any.
    refuses_to_record_outside_its_layout();
    for (seed, layout) in Layout::ALL.into_iter().enumerate() {
        record_and_check(layout, seed as u64 + 11);
        println!("record: layout {} ok", layout.name());
    }
    println!("record: all layouts ok");
    ExitCode::SUCCESS
}

/// The re-executed process: `record PATH`, with the layout in [`CHILD_ENV`].
fn child() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let name = std::env::var(CHILD_ENV).expect("CHILD_ENV is set");
    let layout = Layout::from_name(&name).expect("a layout name in CHILD_ENV");
    let [_, cmd, path, seed] = &args[..] else {
        eprintln!("recorder child: unexpected arguments {args:?}");
        return ExitCode::from(3);
    };
    assert_eq!(cmd, "record");
    let config = Config {
        layout,
        seed: seed.parse().expect("seed"),
        ops: OPS,
    };
    let file = std::fs::File::create(path).expect("create the trace file");
    match record(&config, file) {
        Ok(stats) if stats.total.ops == OPS => {
            let per_kind: u64 = stats.kinds.iter().map(|(_, c)| c.ops).sum();
            let t = stats.total;
            if per_kind != OPS || t.addr + t.enomem + t.einval + t.eexist != OPS {
                eprintln!("recorder child: counts do not add up:\n{stats}");
                return ExitCode::from(4);
            }
            if stats.fill_phases == 0 {
                eprintln!("recorder child: no fill phase in {OPS} ops");
                return ExitCode::from(5);
            }
            ExitCode::SUCCESS
        }
        Ok(stats) => {
            eprintln!(
                "recorder child: recorded {} ops, not {OPS}",
                stats.total.ops
            );
            ExitCode::from(6)
        }
        Err(e) => {
            eprintln!("recorder child: {e}");
            ExitCode::from(1)
        }
    }
}

/// The soft stack rlimit of this process, from `/proc/self/limits` (`u64::MAX` unlimited).
fn current_stack_rlimit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max stack size"))
        .expect("a stack line");
    let soft = line["Max stack size".len()..]
        .split_whitespace()
        .next()
        .expect("a soft limit");
    if soft == "unlimited" {
        u64::MAX
    } else {
        soft.parse().expect("a number")
    }
}

/// `record` in a process whose stack rlimit is not the layout's fails with a typed error
/// before it writes anything.
fn refuses_to_record_outside_its_layout() {
    let current = current_stack_rlimit();
    let layout = [Layout::Stack8M, Layout::Stack1G]
        .into_iter()
        .find(|l| l.stack_rlimit() != current)
        .expect("8 MiB and 1 GiB differ");
    let mut out = Vec::new();
    let config = Config {
        layout,
        seed: 1,
        ops: 10,
    };
    let err = record(&config, &mut out).expect_err("record outside the recorder's layout");
    assert!(
        err.to_string().contains("personality") || err.to_string().contains("RLIMIT_STACK"),
        "{err}"
    );
    assert!(out.is_empty(), "wrote {} bytes before failing", out.len());
}

fn hex(v: &Value, key: &str) -> u64 {
    let s = v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn record_and_check(layout: Layout, seed: u64) {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "svmap-ktrace-record-{}-{}.jsonl",
        layout.name(),
        std::process::id()
    ));
    let args: Vec<OsString> = vec![
        "record".into(),
        path.clone().into(),
        seed.to_string().into(),
    ];
    let status = spawn_recorder(layout, &args).expect("spawn the recorder");
    assert!(status.success(), "layout {}: {status}", layout.name());
    check_trace(layout, &path);
    std::fs::remove_file(&path).ok();
}

/// Sorted, disjoint `[start, end)` ranges: what the trace says is mapped.
#[derive(Default)]
struct Model(Vec<(u64, u64)>);

impl Model {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.0.iter().any(|&(s, e)| s < end && start < e)
    }

    fn map(&mut self, start: u64, end: u64) {
        assert!(
            !self.overlaps(start, end),
            "map [{start:#x}, {end:#x}) over the model"
        );
        self.0.push((start, end));
        self.0.sort_unstable();
    }

    fn unmap(&mut self, start: u64, end: u64) {
        let mut next = Vec::with_capacity(self.0.len() + 1);
        for &(s, e) in &self.0 {
            if s < start {
                next.push((s, e.min(start)));
            }
            if e > end {
                next.push((s.max(end), e));
            }
        }
        self.0 = next;
    }
}

fn check_trace(layout: Layout, path: &Path) {
    let text = std::fs::read_to_string(path).expect("read the trace");
    let mut lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l}: {e}")));
    let reset = lines.next().expect("a reset line");
    assert_eq!(reset["op"], "reset");
    assert_eq!(hex(&reset, "task_size"), TASK_SIZE);
    assert_eq!(hex(&reset, "page_size"), PAGE);
    if layout.is_legacy() {
        assert_eq!(reset["layout"], "legacy");
        assert!(reset.get("mmap_base").is_none());
    } else {
        assert_eq!(reset["layout"], "topdown");
        assert_eq!(hex(&reset, "mmap_base"), mmap_base(layout.stack_rlimit()));
    }
    let mut model = Model::default();
    let (mut mmaps, mut placed) = (0, 0);
    for v in lines {
        match v["op"].as_str() {
            Some("map") => model.map(hex(&v, "start"), hex(&v, "end")),
            Some("unmap") => {
                let start = hex(&v, "start");
                model.unmap(start, start + hex(&v, "length"));
            }
            Some("mmap") => {
                mmaps += 1;
                let expect = &v["expect"];
                if let Some(err) = expect.get("err") {
                    let err = err.as_str().expect("an errno name");
                    assert!(["ENOMEM", "EINVAL", "EEXIST"].contains(&err), "{v}");
                    continue;
                }
                let addr = hex(expect, "addr");
                let len = hex(&v, "length");
                let end = addr + len.div_ceil(PAGE) * PAGE;
                assert_eq!(addr % PAGE, 0, "{v}");
                assert!(end <= TASK_SIZE, "{v}");
                match v["fixed"].as_str() {
                    Some("fixed") => {
                        assert_eq!(addr, hex(&v, "hint"), "{v}");
                        model.unmap(addr, end);
                    }
                    Some("noreplace") => assert_eq!(addr, hex(&v, "hint"), "{v}"),
                    _ => {}
                }
                // No kernel answer lands on memory the model says is mapped.
                model.map(addr, end);
                placed += 1;
            }
            other => panic!("unexpected op {other:?} in {v}"),
        }
    }
    assert_eq!(mmaps, OPS, "layout {}", layout.name());
    assert!(placed > 0, "layout {}: no mmap was placed", layout.name());
}
