//! A table read from the store once and kept in memory until a change drops it.

use std::sync::{Arc, RwLock};

use atrest_store::StoreError;

#[derive(Debug)]
struct State<T> {
    /// Bumped by every change, so a load that raced a change is not kept.
    generation: u64,
    value: Option<Arc<T>>,
}

/// Every change goes through this service (one server per data directory), which calls
/// [`Snapshot::forget`] after writing; the next read loads afresh.
#[derive(Debug)]
pub(crate) struct Snapshot<T>(RwLock<State<T>>);

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Snapshot(RwLock::new(State {
            generation: 0,
            value: None,
        }))
    }
}

impl<T> Snapshot<T> {
    /// The kept value, or `load`'s, which is kept unless a change happened meanwhile.
    pub(crate) fn get(
        &self,
        load: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<Arc<T>, StoreError> {
        let generation = {
            let state = self.0.read().unwrap_or_else(|p| p.into_inner());
            if let Some(value) = &state.value {
                return Ok(value.clone());
            }
            state.generation
        };
        let value = Arc::new(load()?);
        let mut state = self.0.write().unwrap_or_else(|p| p.into_inner());
        if state.generation == generation {
            state.value = Some(value.clone());
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
