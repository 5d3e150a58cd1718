//! One task per running emulator: records its lifecycle, forwards its UART to the bus,
//! carries out stop and restart requests, and restarts it per the policy when it ends by
//! itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::command::{Accepted, CommandError, ErrorCode};
use wasmbed_schemas::event::{EmulatorExited, EmulatorStarted, ExitReason};
use wasmbed_schemas::subject;

use crate::catalogue::Mcu;
use crate::emulator::{Emulator, Exit};
use crate::service::{Emulation, Inbox, Manager, Reply, RestartMode, refuse};
use crate::uart::UartLog;

/// UART lines an exit event carries.
const LAST_LINES: usize = 20;

/// What a command asks of a running emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// End it.
    Stop,
    /// End it and start it again.
    Restart,
}

/// A running emulator as the manager's table holds it.
pub(crate) struct Supervised {
    pub(crate) mcu: String,
    pub(crate) control: Inbox,
    started: Arc<AtomicU64>,
    generation: u64,
}

impl Supervised {
    /// The sequence of its latest `EmulatorStarted`.
    pub(crate) fn started_sequence(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Records the start of `emulator` and supervises it; returns the event's sequence.
pub(crate) async fn supervise(
    state: Arc<Manager>,
    device: DeviceId,
    mcu: Mcu,
    how: Emulation,
    emulator: Emulator,
) -> Result<u64, CommandError> {
    let sequence = match record_started(&state, &device, &mcu, &how, &emulator, 1).await {
        Ok(sequence) => sequence,
        Err(e) => {
            let mut emulator = emulator;
            emulator.stop().await;
            return Err(e);
        }
    };
    let (control, inbox) = mpsc::channel(8);
    let started = Arc::new(AtomicU64::new(sequence));
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    state.running().insert(
        device.clone(),
        Supervised {
            mcu: mcu.name.clone(),
            control,
            started: started.clone(),
            generation,
        },
    );
    let span = info_span!("emulator", device = %device, mcu = %mcu.name);
    let supervisor = Supervisor {
        state,
        device,
        mcu,
        how,
        started,
        generation,
    };
    tokio::spawn(supervisor.run(emulator, inbox).instrument(span));
    Ok(sequence)
}

/// Hands `request` to a supervisor and waits for its answer.
pub(crate) async fn ask(control: &Inbox, request: Request) -> Result<Accepted, CommandError> {
    let (reply, answer) = oneshot::channel();
    control
        .send((request, reply))
        .await
        .map_err(|_| refuse(ErrorCode::NotFound, "the emulator has just ended"))?;
    answer.await.map_err(|_| {
        refuse(
            ErrorCode::Internal,
            "the supervisor ended without answering",
        )
    })?
}

struct Supervisor {
    state: Arc<Manager>,
    device: DeviceId,
    mcu: Mcu,
    how: Emulation,
    started: Arc<AtomicU64>,
    generation: u64,
}

impl Supervisor {
    async fn run(self, mut emulator: Emulator, mut inbox: mpsc::Receiver<(Request, Reply)>) {
        let policy = self.state.config.restart.clone();
        let mut attempt = 1;
        let mut in_a_row = 0;
        loop {
            forward_uart(
                self.state.client.clone(),
                &self.device,
                emulator.uart().clone(),
            );
            let since = Instant::now();
            tokio::select! {
                request = inbox.recv() => {
                    let Some((request, reply)) = request else {
                        emulator.stop().await;
                        return self.forget();
                    };
                    let exit = emulator.stop().await;
                    let stopped = self.record_exited(&emulator, &exit, None).await;
                    if request == Request::Stop {
                        self.forget();
                        let _ = reply.send(stopped.map(|sequence| Accepted { sequence }));
                        return;
                    }
                    match self.relaunch(attempt + 1).await {
                        Ok((next, sequence)) => {
                            emulator = next;
                            attempt += 1;
                            let _ = reply.send(Ok(Accepted { sequence }));
                        }
                        Err(e) => {
                            self.forget();
                            let _ = reply.send(Err(e));
                            return;
                        }
                    }
                }
                exit = emulator.exited() => {
                    let restart = match policy.mode {
                        RestartMode::Never => false,
                        RestartMode::OnFailure => exit.failed(),
                        RestartMode::Always => true,
                    };
                    if since.elapsed() >= policy.stable_after {
                        in_a_row = 0;
                    }
                    loop {
                        in_a_row += 1;
                        let delay = policy.delay(in_a_row);
                        let exited = self
                            .record_exited(&emulator, &exit, restart.then_some(delay))
                            .await;
                        if !restart {
                            return self.forget();
                        }
                        info!(?delay, code = ?exit.code, "emulator ended; restarting");
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            request = inbox.recv() => match request {
                                Some((Request::Stop, reply)) => {
                                    self.forget();
                                    let _ = reply.send(exited.map(|sequence| Accepted { sequence }));
                                    return;
                                }
                                Some((Request::Restart, reply)) => {
                                    // Restart now instead of after the delay.
                                    let _ = reply.send(exited.map(|sequence| Accepted { sequence }));
                                }
                                None => return self.forget(),
                            },
                        }
                        match self.relaunch(attempt + 1).await {
                            Ok((next, _)) => {
                                emulator = next;
                                attempt += 1;
                                break;
                            }
                            // The refusal is recorded; try again after a longer delay.
                            Err(e) => warn!(error = %e, "restart failed"),
                        }
                    }
                }
            }
        }
    }

    /// Starts the device again with fresh gateways and block.
    async fn relaunch(&self, attempt: u32) -> Result<(Emulator, u64), CommandError> {
        let state = &self.state;
        let prepared = state.prepare(&self.device, &self.mcu, &self.how).await?;
        let emulator = match self
            .how
            .backend
            .start(&prepared.launch(state, &self.device, &self.mcu))
            .await
        {
            Ok(emulator) => emulator,
            Err(e) => {
                let error = refuse(ErrorCode::Unavailable, e.to_string());
                let refused = wasmbed_schemas::event::EmulatorStartRefused {
                    device_id: self.device.clone(),
                    mcu: self.mcu.name.clone(),
                    backend: self.how.backend.name().to_owned(),
                    reason: error.message.clone(),
                };
                let _ = state.record(refused.into()).await;
                return Err(error);
            }
        };
        let sequence = record_started(
            state,
            &self.device,
            &self.mcu,
            &self.how,
            &emulator,
            attempt,
        )
        .await?;
        self.started.store(sequence, Ordering::Relaxed);
        Ok((emulator, sequence))
    }

    async fn record_exited(
        &self,
        emulator: &Emulator,
        exit: &Exit,
        restart_in: Option<Duration>,
    ) -> Result<u64, CommandError> {
        let reason = if exit.requested {
            ExitReason::Stopped
        } else if exit.code == Some(0) {
            ExitReason::Exited
        } else {
            ExitReason::Crashed
        };
        let mut last_uart_lines = emulator.uart().last(LAST_LINES);
        if let Some(note) = &exit.note {
            last_uart_lines.push(format!("[{}] {note}", self.how.backend.name()));
        }
        let event = EmulatorExited {
            device_id: self.device.clone(),
            exit_code: exit.code,
            last_uart_lines,
            reason,
            restart_in_ms: restart_in.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        let recorded = self.state.record(event.into()).await;
        if let Err(e) = &recorded {
            warn!(error = %e, "the exit was not recorded");
        }
        recorded
    }

    /// Takes this emulator out of the table (unless a newer one for the device is there).
    fn forget(&self) {
        let mut running = self.state.running();
        if running
            .get(&self.device)
            .is_some_and(|s| s.generation == self.generation)
        {
            running.remove(&self.device);
        }
    }
}

async fn record_started(
    state: &Manager,
    device: &DeviceId,
    mcu: &Mcu,
    how: &Emulation,
    emulator: &Emulator,
    attempt: u32,
) -> Result<u64, CommandError> {
    let event = EmulatorStarted {
        device_id: device.clone(),
        backend: how.backend.name().to_owned(),
        mcu: mcu.name.clone(),
        instance: emulator.instance().to_owned(),
        attempt,
    };
    state.record(event.into()).await
}

/// Publishes `uart`'s lines on the device's UART subject until the emulator is gone.
fn forward_uart(client: async_nats::Client, device: &DeviceId, uart: Arc<UartLog>) {
    let subject = subject::emulator_uart(device);
    let mut live = uart.subscribe();
    let earlier = uart.lines();
    drop(uart);
    tokio::spawn(async move {
        for line in earlier {
            let _ = client.publish(subject.clone(), line.into()).await;
        }
        loop {
            match live.recv().await {
                Ok(line) => {
                    let _ = client.publish(subject.clone(), line.into()).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::RestartPolicy;

    #[test]
    fn restart_delays_double_up_to_the_ceiling() {
        let policy = RestartPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..RestartPolicy::default()
        };
        let delays: Vec<u128> = (1..=6).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(1));
    }
}
