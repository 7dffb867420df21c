//! What a fake's request handlers share: its options, and its state behind one lock.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub struct Shared<O, S> {
    pub opts: O,
    state: Mutex<S>,
}

impl<O, S> Shared<O, S> {
    pub fn new(opts: O, state: S) -> Self {
        Self {
            opts,
            state: Mutex::new(state),
        }
    }

    /// The state; a test that panicked while holding it does not break the fake.
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
