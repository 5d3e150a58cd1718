//! The fleet read model: devices, applications, deployments, rollouts, gateways and emulators,
//! folded once from the event log.
//!
//! Every reader of the fleet (the api, the projector, the CLI, the deployer) folds the same
//! events through [`Fleet::apply`]; the REST bodies are rendered from it ([`render`]). The fold
//! is idempotent per aggregate: applying an event twice, or an older one after a newer, changes
//! nothing, so a service may feed it both from the log follower and from its own appends.

mod fold;
mod model;
mod render;
mod rollout;
mod trust;

pub use fold::Touched;
pub use model::{App, Deployment, Device, Fleet, ModuleVersion, Pair, REHEARSAL_LABEL, in_target};
pub use rollout::{Rollout, RolloutPhase, Verdict};
pub use trust::{Publisher, Publishers};
