//! A table read from the store once and kept in memory until a change drops it: one made
//! through this service, or one by another replica, which moves the store's generation.

use std::sync::{Arc, RwLock};

use atrest_store::StoreError;

#[derive(Debug)]
struct State<T> {
    /// Bumped by every change, so a load that raced a change is not kept.
    generation: u64,
    /// The store's generation the kept value was read at.
    store_generation: u64,
    value: Option<Arc<T>>,
}

/// Changes through this service call [`Snapshot::forget`] after writing; changes by other
/// replicas show as a newer store generation. Either way the next read loads afresh.
#[derive(Debug)]
pub(crate) struct Snapshot<T>(RwLock<State<T>>);

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Snapshot(RwLock::new(State {
            generation: 0,
            store_generation: 0,
            value: None,
        }))
    }
}

impl<T> Snapshot<T> {
    /// The kept value if it was read at the store's generation `current`, else `load`'s,
    /// which is kept unless a change happened meanwhile.
    pub(crate) fn get(
        &self,
        current: u64,
        load: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<Arc<T>, StoreError> {
        let generation = {
            let state = self.0.read().unwrap_or_else(|p| p.into_inner());
            if let Some(value) = state
                .value
                .as_ref()
                .filter(|_| state.store_generation == current)
            {
                return Ok(value.clone());
            }
            state.generation
        };
        let value = Arc::new(load()?);
        let mut state = self.0.write().unwrap_or_else(|p| p.into_inner());
        if state.generation == generation && current >= state.store_generation {
            state.value = Some(value.clone());
            state.store_generation = current;
        }
        Ok(value)
    }

    /// Drops the kept value after a change.
    pub(crate) fn forget(&self) {
        let mut state = self.0.write().unwrap_or_else(|p| p.into_inner());
        state.generation += 1;
        state.value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_until_forgotten_and_a_raced_load_is_not_kept() {
        let snapshot = Snapshot::<u32>::default();
        let loads = std::cell::Cell::new(0);
        let load = |value| {
            loads.set(loads.get() + 1);
            Ok(value)
        };
        assert_eq!(*snapshot.get(0, || load(1)).unwrap(), 1);
        assert_eq!(*snapshot.get(0, || load(2)).unwrap(), 1, "kept");
        assert_eq!(loads.get(), 1);
        snapshot.forget();
        assert_eq!(
            *snapshot.get(0, || load(3)).unwrap(),
            3,
            "reloaded after a change"
        );
        snapshot.forget();
        // A change lands while a load is under way: its result serves that caller only.
        let raced = snapshot
            .get(0, || {
                snapshot.forget();
                load(4)
            })
            .unwrap();
        assert_eq!(*raced, 4);
        assert_eq!(
            *snapshot.get(0, || load(5)).unwrap(),
            5,
            "the raced load was not kept"
        );
        snapshot.forget();
        let failed: Result<Arc<u32>, StoreError> =
            snapshot.get(0, || Err(StoreError::DamagedAuditBlock(0)));
        assert!(failed.is_err());
        assert_eq!(
            *snapshot.get(0, || load(6)).unwrap(),
            6,
            "a failed load keeps nothing"
        );
        assert_eq!(
            *snapshot.get(1, || load(7)).unwrap(),
            7,
            "another replica's change reloads"
        );
        assert_eq!(*snapshot.get(1, || load(8)).unwrap(), 7, "kept");
        assert_eq!(
            *snapshot.get(0, || load(9)).unwrap(),
            9,
            "a reader behind the kept value loads its own"
        );
        assert_eq!(
            *snapshot.get(1, || load(10)).unwrap(),
            7,
            "and keeps the newer"
        );
    }
}
