//! [`ColumnPool`]: column builders kept between the answers of one feature list.
//!
//! A 1 × 50 lookup made 50 [`ColumnBuilder`]s per request, each ~400 bytes written and
//! two or three small allocations (statuses, values, event times), and freed them all
//! after the answer was encoded: about 4 µs of a ~35 µs request. A node keeps one pool
//! per compiled plan; an answer gives its builders back when it is dropped (after tonic
//! has encoded it), and the next request of the plan resets them (lengths to zero,
//! capacities kept) instead of allocating.
//!
//! Memory is bounded twice: a pool keeps at most [`SETS_PER_POOL`] sets (more are in
//! flight only under concurrency, and then the extra ones are allocated and freed as
//! before), and every pool of a node draws on one [`PoolBudget`] of retained bytes, so
//! a caller inventing feature lists (thousands of plans) cannot make the pools grow past
//! it. A set that would pass the budget, or that a huge request grew past
//! [`MAX_SET_BYTES`], is freed instead of kept.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ColumnBuilder;
use crate::v1::FeatureType;

/// Most builder sets one pool keeps.
pub const SETS_PER_POOL: usize = 4;

/// Largest set kept (its builders' retained bytes and the set's own array): a request
/// that grew its builders past this gives them back to the allocator.
pub const MAX_SET_BYTES: usize = 1 << 20;

/// Retained bytes shared by every pool of a process part (a node's plan cache).
#[derive(Debug)]
pub struct PoolBudget {
    limit: usize,
    used: AtomicUsize,
}

impl PoolBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        PoolBudget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes held by sets in pools now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget, or nothing and `false` when they do not fit.
    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Builder sets of one column layout, for reuse (see the module comment). The default
/// pool has no budget and keeps nothing: `take` allocates, `give` frees.
#[derive(Debug, Default)]
pub struct ColumnPool {
    /// Kept sets, each with the bytes it holds of the budget.
    sets: Mutex<Vec<(Vec<ColumnBuilder>, usize)>>,
    budget: Option<Arc<PoolBudget>>,
}

impl ColumnPool {
    /// A pool drawing on `budget`.
    pub fn new(budget: Arc<PoolBudget>) -> Self {
        ColumnPool {
            sets: Mutex::new(Vec::new()),
            budget: Some(budget),
        }
    }

    /// Unnamed builders for columns of `types` with room for `rows` rows each: a kept
    /// set reset, or new builders.
    pub fn take(
        &self,
        types: &[FeatureType],
        rows: usize,
        event_times: bool,
    ) -> Vec<ColumnBuilder> {
        let kept = match &self.budget {
            Some(budget) => {
                let popped = self.lock().pop();
                popped.map(|(set, bytes)| {
                    budget.give_back(bytes);
                    set
                })
            }
            None => None,
        };
        let fresh = |&ty: &FeatureType| ColumnBuilder::new(String::new(), ty, rows, event_times);
        let Some(mut set) = kept else {
            return types.iter().map(fresh).collect();
        };
        set.truncate(types.len());
        for (b, &ty) in set.iter_mut().zip(types) {
            b.reset(ty, rows, event_times);
        }
        let have = set.len();
        set.extend(types[have..].iter().map(fresh));
        set
    }

    /// Keeps `set` for a later [`Self::take`] if the pool has room and the budget
    /// allows; frees it otherwise.
    pub fn give(&self, set: Vec<ColumnBuilder>) {
        let Some(budget) = &self.budget else {
            return;
        };
        if set.is_empty() {
            return;
        }
        let bytes = set.capacity() * std::mem::size_of::<ColumnBuilder>()
            + set.iter().map(ColumnBuilder::retained_bytes).sum::<usize>();
        if bytes > MAX_SET_BYTES {
            return;
        }
        let mut sets = self.lock();
        if sets.len() < SETS_PER_POOL && budget.try_take(bytes) {
            sets.push((set, bytes));
        }
    }

    /// Sets kept now.
    pub fn kept(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Vec<ColumnBuilder>, usize)>> {
        // A panic while holding the lock leaves only whole sets behind.
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ColumnPool {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            let sets = self.sets.get_mut().unwrap_or_else(|p| p.into_inner());
            for (_, bytes) in sets.drain(..) {
                budget.give_back(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::FeatureStatus;

    const TYPES: [FeatureType; 4] = [
        FeatureType::Float64,
        FeatureType::String,
        FeatureType::Float32Vector,
        FeatureType::StringList,
    ];

    /// Fills row after row of every builder, each column with values of its type.
    fn fill(set: &mut [ColumnBuilder], rows: usize, seed: u64) {
        for r in 0..rows {
            let t = (seed * 1000 + r as u64) as i64;
            for b in set.iter_mut() {
                match (b.feature_type(), r % 3) {
                    (_, 2) => b.push_missing(FeatureStatus::NotFound, t),
                    (_, 1) => b.push_null(t),
                    (FeatureType::Float64, _) => b.push_f64(t as f64 / 3.0, t),
                    (FeatureType::String, _) => b.push_blob(format!("s{t}").as_bytes(), t),
                    (FeatureType::Float32Vector, _) => {
                        b.push_f32s([t as f32, 1.5, -2.0], t);
                    }
                    (FeatureType::StringList, _) => {
                        b.push_strs([b"a".as_slice(), format!("{t}").as_bytes()], t);
                    }
                    (other, _) => panic!("untested type {other:?}"),
                }
            }
        }
    }

    fn finished(set: Vec<ColumnBuilder>) -> Vec<crate::v1::PackedColumn> {
        set.into_iter().map(ColumnBuilder::finish).collect()
    }

    #[test]
    fn a_reused_set_builds_what_new_builders_build() {
        let budget = Arc::new(PoolBudget::new(1 << 20));
        let pool = ColumnPool::new(budget.clone());
        // Used and sealed (a dense vector column), with event times, then given back.
        let mut first = pool.take(&TYPES, 7, true);
        fill(&mut first, 7, 1);
        for b in &mut first {
            b.seal();
        }
        pool.give(first);
        assert_eq!(pool.kept(), 1);
        assert!(budget.used() > 0);
        // Reused for other types, fewer rows and no event times.
        let types = [TYPES[3], TYPES[0], TYPES[2], TYPES[1], FeatureType::Int64];
        let mut again = pool.take(&types[..4], 4, false);
        assert_eq!(pool.kept(), 0);
        assert_eq!(budget.used(), 0);
        let mut fresh: Vec<ColumnBuilder> = types[..4]
            .iter()
            .map(|&ty| ColumnBuilder::new(String::new(), ty, 4, false))
            .collect();
        fill(&mut again, 4, 2);
        fill(&mut fresh, 4, 2);
        assert_eq!(finished(again), finished(fresh));
    }

    #[test]
    fn a_set_of_another_length_is_cut_or_grown() {
        let pool = ColumnPool::new(Arc::new(PoolBudget::new(1 << 20)));
        pool.give(pool.take(&TYPES, 2, false));
        let longer = [TYPES, TYPES].concat();
        let got = pool.take(&longer, 2, false);
        let types: Vec<_> = got.iter().map(ColumnBuilder::feature_type).collect();
        assert_eq!(types, longer);
        pool.give(got);
        let shorter = pool.take(&TYPES[..1], 2, false);
        assert_eq!(shorter.len(), 1);
        assert_eq!(shorter[0].feature_type(), TYPES[0]);
    }

    #[test]
    fn the_budget_and_the_pool_size_bound_what_is_kept() {
        let set_bytes = {
            let probe = ColumnPool::new(Arc::new(PoolBudget::new(usize::MAX)));
            let s = probe.take(&TYPES, 3, true);
            let b = probe.budget.as_ref().expect("budget").clone();
            probe.give(s);
            b.used()
        };
        assert!(set_bytes > 0);
        // Room for two sets in the budget, shared by two pools.
        let budget = Arc::new(PoolBudget::new(2 * set_bytes));
        let a = ColumnPool::new(budget.clone());
        let b = ColumnPool::new(budget.clone());
        a.give(a.take(&TYPES, 3, true));
        b.give(b.take(&TYPES, 3, true));
        // Pool `b` gets a second set only if the budget had room: it had not.
        let (x, y) = (b.take(&TYPES, 3, true), b.take(&TYPES, 3, true));
        assert_eq!(budget.used(), set_bytes);
        b.give(x);
        b.give(y);
        assert_eq!(b.kept(), 1);
        assert_eq!(budget.used(), 2 * set_bytes);
        drop(b);
        assert_eq!(budget.used(), set_bytes, "a dropped pool returns its bytes");
        // One pool keeps at most SETS_PER_POOL sets whatever the budget.
        let big = Arc::new(PoolBudget::new(usize::MAX));
        let c = ColumnPool::new(big);
        let sets: Vec<_> = (0..SETS_PER_POOL + 2)
            .map(|_| c.take(&TYPES, 3, true))
            .collect();
        for s in sets {
            c.give(s);
        }
        assert_eq!(c.kept(), SETS_PER_POOL);
    }

    #[test]
    fn a_huge_set_and_an_unbudgeted_pool_keep_nothing() {
        let budget = Arc::new(PoolBudget::new(usize::MAX));
        let pool = ColumnPool::new(budget.clone());
        let mut huge = pool.take(&[FeatureType::Float64], 1, false);
        for r in 0..(MAX_SET_BYTES / 8 + 1) {
            huge[0].push_f64(r as f64, 0);
        }
        pool.give(huge);
        assert_eq!((pool.kept(), budget.used()), (0, 0));
        let none = ColumnPool::default();
        none.give(none.take(&TYPES, 3, false));
        assert_eq!(none.kept(), 0);
    }
}
