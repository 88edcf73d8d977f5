//! Until a grows-down VMA, a device-only region or a window needs them, the
//! space searches the CPU map itself instead of its cover maps. This test
//! runs the same random operations on two spaces, one that never needs the
//! covers and one that has them from the start (a grows-down VMA far above
//! every device limit, so its guard gap changes no answer), and checks
//! after every operation that both answer alike and hold the same state.

use proptest::prelude::*;
use svmap_svm::{DeviceConfig, Prot, SvmSpace};

const PG: u64 = 0x1000;
/// The grows-down VMA of the covered space: far above 2^44.
const STACK: u64 = 1 << 45;
const DEVS: [(&str, u32, u64); 3] = [("a", 40, PG), ("b", 44, PG), ("c", 40, 0x10000)];

#[derive(Clone, Debug)]
enum Op {
    Alloc(u64, u8, u8, bool),
    Free(usize),
    Map(u64, u64),
    Unmap(u64, u64),
    Protect(u64, u64, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..0x30000, 0u8..5, 0u8..8, any::<bool>())
            .prop_map(|(l, a, m, t)| Op::Alloc(l, a, m, t)),
        4 => (0usize..24).prop_map(Op::Free),
        2 => (16u64..400, 1u64..16).prop_map(|(s, n)| Op::Map(s * PG, (s + n) * PG)),
        2 => (16u64..400, 1u64..24).prop_map(|(s, n)| Op::Unmap(s * PG, n * PG)),
        1 => (16u64..400, 1u64..24, 0u8..3).prop_map(|(s, n, p)| Op::Protect(s * PG, n * PG, p)),
    ]
}

fn space(stack: bool) -> SvmSpace {
    let mut sp = SvmSpace::default();
    if stack {
        sp.cpu_map(STACK, STACK + 16 * PG, true).unwrap();
    }
    for (name, bits, page) in DEVS {
        sp.add_device(DeviceConfig {
            page_size: page,
            ..DeviceConfig::new(name, bits)
        })
        .unwrap();
    }
    sp
}

fn names(mask: u8) -> Vec<&'static str> {
    (0..3)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| DEVS[i].0)
        .collect()
}

/// The CPU VMAs below the covered space's grows-down VMA.
fn vmas(sp: &SvmSpace) -> Vec<(u64, u64, u8)> {
    sp.mm()
        .space()
        .iter()
        .filter(|v| v.start < STACK)
        .map(|v| (v.start, v.end, v.flags.0))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn searching_the_cpu_map_answers_as_the_covers_do(ops in proptest::collection::vec(op(), 1..60)) {
        let mut direct = space(false);
        let mut covered = space(true);
        // The direct space answers from the CPU map.
        prop_assert!(std::ptr::eq(direct.combined_index(), direct.mm().space()));
        prop_assert!(!std::ptr::eq(covered.combined_index(), covered.mm().space()));
        let mut live: Vec<u64> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc(len, a, mask, top) => {
                    let align = Some(PG << (4 * u64::from(a)));
                    let devs = names(mask);
                    let x = direct.svm_alloc(len, align, &devs, top);
                    let y = covered.svm_alloc(len, align, &devs, top);
                    prop_assert_eq!(&x, &y, "svm_alloc({:#x}, {:?}, {:?}, {})", len, align, devs, top);
                    prop_assert_eq!(direct.stats().last_iterations, covered.stats().last_iterations);
                    if let Ok(addr) = x {
                        live.push(addr);
                    }
                }
                Op::Free(i) => {
                    if live.is_empty() {
                        continue;
                    }
                    let addr = live.swap_remove(i % live.len());
                    prop_assert_eq!(direct.svm_free(addr), covered.svm_free(addr));
                }
                Op::Map(s, e) => {
                    prop_assert_eq!(direct.cpu_map(s, e, false), covered.cpu_map(s, e, false));
                }
                Op::Unmap(s, len) => {
                    prop_assert_eq!(direct.cpu_unmap(s, len), covered.cpu_unmap(s, len));
                }
                Op::Protect(s, len, p) => {
                    let p = [Prot::None, Prot::Read, Prot::ReadWrite][usize::from(p)];
                    prop_assert_eq!(direct.protect(s, len, p), covered.protect(s, len, p));
                }
            }
            direct.check_invariants();
            covered.check_invariants();
            prop_assert!(std::ptr::eq(direct.combined_index(), direct.mm().space()));
            prop_assert_eq!(vmas(&direct), vmas(&covered));
            prop_assert_eq!(direct.svm_ranges(), covered.svm_ranges());
            for (name, _, _) in DEVS {
                let a: Vec<_> = direct.device_occupancy(name).unwrap().iter().collect();
                let b: Vec<_> = covered.device_occupancy(name).unwrap().iter().collect();
                prop_assert_eq!(a, b);
            }
        }
    }
}
