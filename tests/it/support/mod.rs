//! Helpers shared by the integration tests: stand-ins for the systems fwd2loki talks to.

// Each test module uses only some of these helpers, so unused ones must not warn.
#![allow(dead_code, reason = "every test module uses a different subset of the helpers")]

pub(crate) mod loki;
pub(crate) mod pki;
pub(crate) mod shipper;
