//! `workload::max_align`: the alignment bound `svmap bench churn` enforces
//! keeps every churn step placeable, and the next power of two breaks the
//! guarantee it rests on.

use svmap_bench::peers::svmap::Svmap;
use svmap_bench::workload::{max_align, measure, Plan, MAX_LIVE, MAX_PAGES, PAGE, WINDOW};

#[test]
fn the_bound_is_the_largest_power_of_two_of_the_inequality() {
    let max = MAX_PAGES * PAGE;
    assert_eq!(max_align(0), None);
    assert_eq!(max_align(MAX_LIVE + 1), None);
    for n in [
        1usize, 2, 3, 4, 1000, 65_536, 1_000_000, 7_000_000, MAX_LIVE,
    ] {
        let a = max_align(n).unwrap();
        assert!(a.is_power_of_two() && a >= 2 << 20, "{n}: {a:#x}");
        let need = |a: u64| u128::from(a + 2 * max) * n as u128;
        assert!(need(a) <= u128::from(WINDOW), "{n}: {a:#x}");
        assert!(
            need(2 * a) > u128::from(WINDOW),
            "{n}: {a:#x} is not the largest"
        );
    }
    assert_eq!(max_align(1), Some(1 << 46));
}

#[test]
fn churn_at_the_bound_places_every_range() {
    // The measurement panics if an allocation finds no room; at the bound
    // it must not, lowest or highest first.
    for n in [1usize, 3, 5, 1000] {
        let align = max_align(n).unwrap();
        for highest in [false, true] {
            let mut plan = Plan::quick(n);
            plan.reps = 1;
            plan.steps_per_rep = 3_000;
            let m = measure(|| Svmap::new(align, highest), &plan);
            assert_eq!(m.reps_ns.len(), 1);
            assert!(m.ns_per_pair > 0.0, "{n} {align:#x}");
        }
    }
}
