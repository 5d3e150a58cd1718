//! A running emulated device, whatever runs it: its UART, a way to stop it, and its end.

use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use crate::uart::UartLog;

/// How an emulator ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The process or container exit code, when there was one.
    pub code: Option<i32>,
    /// It ended because it was asked to.
    pub requested: bool,
    /// What else is known (a signal, a lost container, a daemon error).
    pub note: Option<String>,
}

impl Exit {
    /// It ended by itself in failure (non-zero code, signal, lost).
    pub fn failed(&self) -> bool {
        !self.requested && self.code != Some(0)
    }
}

/// One running emulator. Dropping it does not stop it: call [`Emulator::stop`].
pub struct Emulator {
    uart: Arc<UartLog>,
    instance: String,
    stop: Option<oneshot::Sender<()>>,
    exit: watch::Receiver<Option<Exit>>,
}

/// The backend's side of an [`Emulator`]: learn of a stop request, report the end.
pub struct Control {
    /// Completes when a stop is requested (or the emulator handle is gone).
    pub stop: oneshot::Receiver<()>,
    /// Where the end is reported.
    pub exit: watch::Sender<Option<Exit>>,
}

impl Emulator {
    /// A handle for an emulator known as `instance` writing to `uart`, and its backend side.
    pub fn new(uart: Arc<UartLog>, instance: String) -> (Self, Control) {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        (
            Self {
                uart,
                instance,
                stop: Some(stop_tx),
                exit: exit_rx,
            },
            Control {
                stop: stop_rx,
                exit: exit_tx,
            },
        )
    }

    /// Its UART.
    pub fn uart(&self) -> &Arc<UartLog> {
        &self.uart
    }

    /// What runs it (process id, container id, task).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Waits until it has ended. Cancel-safe.
    pub async fn exited(&mut self) -> Exit {
        match self.exit.wait_for(Option::is_some).await {
            Ok(exit) => exit.clone().unwrap_or_else(lost),
            Err(_) => lost(),
        }
    }

    /// Asks it to stop and waits until it has.
    pub async fn stop(&mut self) -> Exit {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.exited().await
    }
}

/// The end of an emulator whose backend task vanished without a word.
fn lost() -> Exit {
    Exit {
        code: None,
        requested: false,
        note: Some("the backend task ended without reporting".into()),
    }
}
