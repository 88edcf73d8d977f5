//! A minimal trace executor for tests: runs the trace operations of a
//! JSON Lines text through [`SvmSpace`] and compares every `expect`.

#![allow(dead_code)]

use serde_json::{Map, Value};
use svmap_core::linux::{Errno, Fixed, Layout, MmConfig, MmapRequest};
use svmap_core::UnmappedAreaInfo;
use svmap_svm::{CpuPolicy, DeviceConfig, MirrorMode, Populate, Prot, SvmError, SvmSpace};

fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().expect("u64"),
        Value::String(s) => {
            if let Some(h) = s.strip_prefix("0x") {
                u64::from_str_radix(h, 16).expect("hex")
            } else {
                s.parse().expect("decimal")
            }
        }
        _ => panic!("not a number: {v}"),
    }
}

fn get(o: &Map<String, Value>, k: &str) -> Option<u64> {
    o.get(k).map(num)
}

fn errv(e: &SvmError) -> Value {
    let errno = e.trace_errno().unwrap_or_else(|| panic!("bad line: {e}"));
    serde_json::json!({ "err": errno.name().to_string() })
}

fn errno_v(e: Errno) -> Value {
    serde_json::json!({ "err": e.name().to_string() })
}

/// Compares numerically where both sides are addresses.
fn same(got: &Value, want: &Value) -> bool {
    match (got.get("addr"), want.get("addr")) {
        (Some(a), Some(b)) => num(a) == num(b),
        _ => got == want,
    }
}

/// Runs `text`; every device gets `populate`. Returns (results, mismatches).
/// After every operation it checks the invariants and that every
/// `device_access` answer equals the rule oracle.
pub fn run_trace(text: &str, populate: Populate) -> (usize, Vec<String>) {
    let mut sp: SvmSpace = SvmSpace::default();
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let v: Value = serde_json::from_str(t).expect("json");
        let o = v.as_object().expect("object");
        let op = o["op"].as_str().expect("op");
        let result: Option<Value> = match op {
            "reset" => {
                let mut cfg = MmConfig::default();
                if let Some(x) = get(o, "task_size") {
                    cfg.task_size = x;
                }
                if let Some(x) = get(o, "mmap_min_addr") {
                    cfg.mmap_min_addr = x;
                }
                if let Some(x) = get(o, "stack_guard_gap") {
                    cfg.stack_guard_gap = x;
                }
                if let Some(x) = get(o, "mmap_base") {
                    cfg.mmap_base = x;
                }
                if o.get("layout").and_then(Value::as_str) == Some("legacy") {
                    cfg.layout = Layout::Legacy;
                }
                if let Some(b) = o.get("thp_align").and_then(Value::as_bool) {
                    cfg.thp_align = b;
                }
                sp.reset(cfg);
                None
            }
            "map" => {
                let gd = o.get("flags").and_then(Value::as_str) == Some("growsdown");
                sp.cpu_map(get(o, "start").unwrap(), get(o, "end").unwrap(), gd)
                    .err()
                    .map(|e| errv(&e))
            }
            "unmap" => {
                sp.cpu_unmap(get(o, "start").unwrap(), get(o, "length").unwrap())
                    .expect("bad line");
                None
            }
            "find" => {
                let info = UnmappedAreaInfo {
                    topdown: o.get("topdown").and_then(Value::as_bool).unwrap_or(false),
                    length: get(o, "length").unwrap(),
                    low_limit: get(o, "low_limit").unwrap(),
                    high_limit: get(o, "high_limit").unwrap(),
                    align_mask: get(o, "align_mask").unwrap_or(0),
                    align_offset: get(o, "align_offset").unwrap_or(0),
                    start_gap: get(o, "start_gap").unwrap_or(0),
                };
                Some(match sp.find(&info) {
                    Ok(a) => serde_json::json!({ "addr": format!("{a:#x}") }),
                    Err(_) => errno_v(Errno::ENOMEM),
                })
            }
            "mmap" => {
                let req = MmapRequest {
                    length: get(o, "length").unwrap(),
                    hint: get(o, "hint").unwrap_or(0),
                    fixed: match o.get("fixed").and_then(Value::as_str) {
                        Some("fixed") => Fixed::Fixed,
                        Some("noreplace") => Fixed::NoReplace,
                        _ => Fixed::No,
                    },
                    growsdown: o.get("growsdown").and_then(Value::as_bool).unwrap_or(false),
                    map32bit: o.get("map32bit").and_then(Value::as_bool).unwrap_or(false),
                };
                Some(match sp.cpu_mmap(&req) {
                    Ok(a) => serde_json::json!({ "addr": format!("{a:#x}") }),
                    Err(e) => errv(&e),
                })
            }
            "device" => {
                let mut cfg = DeviceConfig::new(
                    o["name"].as_str().unwrap(),
                    o["va_bits"].as_u64().unwrap() as u32,
                );
                cfg.base = get(o, "base").unwrap_or(0);
                cfg.page_size = get(o, "page_size").unwrap_or(0x1000);
                if o.get("mirror").and_then(Value::as_str) == Some("system") {
                    cfg.mirror = MirrorMode::System;
                }
                cfg.populate = populate;
                cfg.tlb_entries = 4;
                sp.add_device(cfg).err().map(|e| errv(&e))
            }
            "device_map" => {
                let cpu = match o.get("cpu").and_then(Value::as_str) {
                    Some("dummy_page") => CpuPolicy::DummyPage,
                    _ => CpuPolicy::Fault,
                };
                sp.device_map(
                    o["device"].as_str().unwrap(),
                    get(o, "start").unwrap(),
                    get(o, "end").unwrap(),
                    cpu,
                )
                .err()
                .map(|e| errv(&e))
            }
            "svm_alloc" => {
                let devs: Vec<&str> = o
                    .get("devices")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|d| d.as_str().unwrap()).collect())
                    .unwrap_or_default();
                let r = sp.svm_alloc(
                    get(o, "length").unwrap(),
                    get(o, "align"),
                    &devs,
                    o.get("topdown").and_then(Value::as_bool).unwrap_or(true),
                );
                Some(match r {
                    Ok(a) => serde_json::json!({ "addr": format!("{a:#x}") }),
                    Err(e) => errv(&e),
                })
            }
            "svm_free" => Some(match sp.svm_free(get(o, "addr").unwrap()) {
                Ok(()) => serde_json::json!({ "ok": true }),
                Err(e) => errv(&e),
            }),
            "protect" => {
                let prot = match o["prot"].as_str().unwrap() {
                    "none" => Prot::None,
                    "r" => Prot::Read,
                    "rw" => Prot::ReadWrite,
                    p => panic!("prot {p}"),
                };
                Some(
                    match sp.protect(get(o, "start").unwrap(), get(o, "length").unwrap(), prot) {
                        Ok(()) => serde_json::json!({ "ok": true }),
                        Err(e) => errv(&e),
                    },
                )
            }
            "device_access" => {
                let dev = o["device"].as_str().unwrap();
                let addr = get(o, "addr").unwrap();
                let write = o["write"].as_bool().unwrap();
                let oracle = sp.access_rule(dev, addr, write).unwrap();
                let r = sp.device_access(dev, addr, write).unwrap();
                assert_eq!(r, oracle, "line {lineno}: mirror disagrees with the rule");
                Some(match r {
                    Ok(()) => serde_json::json!({ "ok": true }),
                    Err(f) => serde_json::json!({ "fault": f.name() }),
                })
            }
            other => panic!("line {lineno}: unknown op {other}"),
        };
        sp.check_invariants();
        if let Some(want) = o.get("expect") {
            checked += 1;
            let ok = result.as_ref().is_some_and(|g| same(g, want));
            if !ok {
                mismatches.push(format!("line {lineno}: got {result:?}, expected {want}"));
            }
        }
    }
    (checked, mismatches)
}
