//! Staged rollouts, as pure decisions: which devices go in which wave ([`plan`]), and whether a
//! device and a wave passed their health gate ([`gate`]).
//!
//! Not yet driven by the reconciler: the rollout aggregate, its commands and the rollback are
//! still to come; these are the decisions they will call.

pub mod gate;
pub mod plan;
