//! Staged rollouts, as pure decisions: which devices go in which wave ([`plan`]), whether a
//! device and a wave passed their health gate ([`gate`]), and what a rollout records next
//! ([`drive`]). The commands that start and steer one are in [`commands`]; the reconciler
//! records the steps.

pub(crate) mod commands;
pub mod drive;
pub mod gate;
pub mod plan;
