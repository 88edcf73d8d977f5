//! The engine on real memory (the Linux CPU backend, model devices) and
//! the model engine run the same random operations: every answer agrees,
//! bytes written at an SVM address are read back there, and a freed range
//! is either unmapped or reads zeros.

#![allow(unsafe_code)]

use proptest::prelude::*;
use svmap_core::linux::MmConfig;
use svmap_runtime::{seed_from_self, LinuxCpu};
use svmap_svm::{DeviceConfig, Engine, ModelCpu, ModelDevice, Prot};

const DEVS: [(&str, u32); 2] = [("gpu40", 40), ("gpu44", 44)];

#[derive(Clone, Debug)]
enum Op {
    Alloc(u64, u8, bool),
    Free(usize),
    Protect(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1u64..0x40000, 1u8..4, any::<bool>()).prop_map(|(l, m, t)| Op::Alloc(l, m, t)),
        3 => (0usize..32).prop_map(Op::Free),
        1 => (0usize..32, any::<bool>()).prop_map(|(i, r)| Op::Protect(i, r)),
    ]
}

fn names(m: u8) -> Vec<&'static str> {
    (0..2)
        .filter(|i| m & (1 << i) != 0)
        .map(|i| DEVS[i].0)
        .collect()
}

/// The permissions of the VMA of this process at `addr`, if mapped.
fn perms_at(addr: u64) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (s, e) = f.next()?.split_once('-')?;
        let (s, e) = (
            u64::from_str_radix(s, 16).ok()?,
            u64::from_str_radix(e, 16).ok()?,
        );
        (s <= addr && addr < e).then(|| f.next().unwrap().to_owned())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn real_and_model_engines_agree(ops in proptest::collection::vec(op(), 1..60), window in any::<bool>()) {
        let mut real: Engine<LinuxCpu, ModelDevice> = Engine::new(MmConfig::default(), LinuxCpu::new(false));
        seed_from_self(&mut real).unwrap();
        // The model starts from the same CPU space.
        let mut model: Engine<ModelCpu, ModelDevice> = Engine::new(MmConfig::default(), ModelCpu);
        for v in real.mm().space().iter() {
            model.cpu_map(v.start, v.end, v.flags.contains(svmap_core::VmaFlags::GROWSDOWN)).unwrap();
        }
        for (n, b) in DEVS {
            real.add_device(DeviceConfig::new(n, b)).unwrap();
            model.add_device(DeviceConfig::new(n, b)).unwrap();
        }
        if window {
            let a = real.reserve_window(&["gpu40", "gpu44"]);
            let b = model.reserve_window(&["gpu40", "gpu44"]);
            prop_assert_eq!(a, b);
        }
        let mut live: Vec<(u64, u64, u64)> = Vec::new(); // start, end, tag
        for (k, op) in ops.iter().enumerate() {
            match *op {
                Op::Alloc(len, m, top) => {
                    let a = real.svm_alloc(len, None, &names(m), top);
                    let b = model.svm_alloc(len, None, &names(m), top);
                    prop_assert_eq!(&a, &b);
                    let a = a.unwrap();
                    let end = real.alloc_at(a).unwrap().end;
                    for &(s, e, _) in &live { prop_assert!(e <= a || end <= s); }
                    let tag = 0x9e37_79b9_0000_0000 | k as u64;
                    // SAFETY: [a, end) is a live read-write SVM range of the
                    // real engine, referred to by nothing else.
                    unsafe {
                        prop_assert_eq!(std::ptr::read_volatile(a as *const u64), 0, "fresh range not zero");
                        std::ptr::write_volatile(a as *mut u64, tag);
                        std::ptr::write_volatile((end - 8) as *mut u64, !tag);
                    }
                    live.push((a, end, tag));
                }
                Op::Free(i) if !live.is_empty() => {
                    let (a, end, tag) = live.remove(i % live.len());
                    // SAFETY: still live (read-write or read-only).
                    unsafe {
                        prop_assert_eq!(std::ptr::read_volatile(a as *const u64), tag);
                        prop_assert_eq!(std::ptr::read_volatile((end - 8) as *const u64), !tag);
                    }
                    prop_assert_eq!(real.svm_free(a), model.svm_free(a));
                    match perms_at(a) {
                        None => {}
                        Some(p) if p.starts_with("rw") => {
                            // A free page of a window heap: its punch may
                            // wait in the heap's bounded batch; once the
                            // batch is flushed it reads zeros.
                            let pending = real.cpu_backend().pending_bytes();
                            prop_assert!(pending <= real.cpu_backend().regions() as u64 * svmap_runtime::sparse::DEFAULT_PUNCH_BATCH);
                            real.cpu_backend_mut().flush().unwrap();
                            prop_assert_eq!(real.cpu_backend().pending_bytes(), 0);
                            // SAFETY: mapped read-write (a free page of a
                            // window heap, owned by the real engine).
                            prop_assert_eq!(unsafe { std::ptr::read_volatile(a as *const u64) }, 0);
                        }
                        Some(p) => prop_assert!(p.starts_with("---"), "freed range is {p}"),
                    }
                }
                Op::Free(_) => {}
                Op::Protect(i, ro) if !live.is_empty() => {
                    let (a, end, _) = live[i % live.len()];
                    let p = if ro { Prot::Read } else { Prot::ReadWrite };
                    prop_assert_eq!(real.protect(a, end - a, p), model.protect(a, end - a, p));
                    let want = if ro { "r-" } else { "rw" };
                    prop_assert!(perms_at(a).unwrap().starts_with(want));
                    if !ro {
                        continue;
                    }
                    // Writes come back after a read-only spell.
                    prop_assert_eq!(real.protect(a, end - a, Prot::ReadWrite), model.protect(a, end - a, Prot::ReadWrite));
                }
                Op::Protect(..) => {}
            }
            prop_assert_eq!(real.svm_ranges(), model.svm_ranges());
        }
    }
}
