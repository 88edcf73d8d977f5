//! One adapter per implementation under test, all behind
//! [`crate::workload::Churn`].

#[cfg(feature = "peers")]
pub mod gaptree;
pub mod holelist;
#[cfg(feature = "peers")]
pub mod holetree;
pub mod kernel;
#[cfg(feature = "peers")]
pub mod offsetalloc;
#[cfg(feature = "peers")]
pub mod rangealloc;
pub mod svmap;
pub mod svmapheap;
#[cfg(feature = "peers")]
pub mod vmalloc;

/// Placement order of an address-ordered implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Lowest fitting address first.
    Lowest,
    /// Highest fitting address first.
    Highest,
    /// Smallest fitting hole (range-alloc's only policy).
    BestFit,
    /// No address order at all (offset-allocator's bins).
    Unordered,
}

impl Order {
    /// The label used in the table and the JSON output.
    pub fn label(self) -> &'static str {
        match self {
            Order::Lowest => "lowest",
            Order::Highest => "highest",
            Order::BestFit => "best-fit",
            Order::Unordered => "unordered",
        }
    }
}
