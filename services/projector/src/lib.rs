//! The Kubernetes projection of the event log: `Device`, `Application` and `Gateway` custom
//! resources in `wasmbed.io/v1alpha1`. They are views, never the source of truth.

pub mod crd;
