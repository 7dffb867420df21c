//! Fakes and fixtures shared by the integration tests. Each test crate uses a
//! different subset, hence the blanket `dead_code` allowance.
#![allow(dead_code)]

pub mod directory;
pub mod fake_gateway;
pub mod fake_idp;
