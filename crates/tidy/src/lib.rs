//! Checks over the source tree that keep `ARCHITECTURE.md` true; they live in this
//! crate's tests (`cargo test -p atrest-tidy`). See the "Boundaries" section there.
#![forbid(unsafe_code)]
