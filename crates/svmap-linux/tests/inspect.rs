//! `inspect::report` on this process.

use svmap_linux::inspect::{self, Visibility};
use svmap_linux::maps::Target;

#[test]
fn report_of_self() {
    let r = inspect::report(Target::SelfProcess, 40).unwrap();
    assert_eq!(r.limit, 1 << 40);
    let stack = r.vmas.iter().find(|v| v.name == "[stack]").unwrap();
    assert_eq!(stack.visibility, Visibility::Invisible);
    assert!(stack.growsdown);
    assert!(r.beyond_user.iter().any(|v| v.name == "[vsyscall]"));
    assert!(r.free_bytes > 0 && !r.largest_free.is_empty());
    let (s, e) = r.largest_free[0];
    assert!(s >= r.floor && e <= r.limit);
    assert!((0.0..=1.0).contains(&r.fragmentation));
    // The largest window first, and no window larger than all free space.
    assert!(r
        .largest_free
        .windows(2)
        .all(|w| w[0].1 - w[0].0 >= w[1].1 - w[1].0));
    assert!(e - s <= r.free_bytes);
    assert!(matches!(
        inspect::report(Target::Pid(4_194_321), 40),
        Err(svmap_linux::error::Error::NoSuchProcess { .. })
    ));
}
