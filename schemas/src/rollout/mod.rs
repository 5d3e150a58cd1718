//! Staged rollouts: how one is asked for ([`spec`]: waves and failure thresholds as the CLI
//! writes them), the commands that drive one ([`command`]) and what the log records of it
//! ([`event`]: the rollout aggregate's events), and how it is shown ([`view`]).

pub mod command;
pub mod event;
pub mod spec;
pub mod view;

pub use command::*;
pub use event::*;
pub use spec::*;
pub use view::*;
