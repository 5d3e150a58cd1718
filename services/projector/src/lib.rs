//! The Kubernetes projection of the event log: `Device`, `Application` and `Gateway` custom
//! resources in `wasmbed.io/v1alpha1`. They are views, never the source of truth.
//!
//! - [`crd`]: the resource types; their YAML in `k8s/crds/` is generated from them.
//! - [`projection`]: events folded into the api's read model, rendered as desired resources.
//! - [`applier`]: server-side apply (spec and status) and deletes, with retryable errors.
//! - [`run`]: the service, a durable consumer on the log that resumes where it left off.

pub mod applier;
pub mod crd;
pub mod projection;
mod service;

pub use service::{ProjectorConfig, ProjectorError, run};
