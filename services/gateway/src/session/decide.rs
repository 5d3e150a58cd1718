//! What an open session does next: a pure function of the session's state, one input (a frame,
//! a bus message, a timer, a signal) and the time. The loop in `super` only waits for inputs and
//! carries out the actions; every transition is here and in the table test below.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::frame::codec::decode;
use wasmbed_schemas::frame::{
    ErrorFrame, Frame, FrameErrorCode, GoAway, MAX_FRAME_LEN, RejectReason, Rejected, Welcome,
};

use crate::rate::Allowance;
use crate::sessions::Ended;

/// The settings every session of a gateway is decided by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// How often the device is told to send a heartbeat.
    pub heartbeat_interval: Duration,
    /// Heartbeat intervals without a frame before the session ends.
    pub missed_heartbeats: u32,
    /// How long a device told to go away should wait before reconnecting.
    pub reconnect_after: Duration,
    /// The uplink budget, for the message that tells a device it went over it.
    pub uplink_bytes_per_second: u64,
    /// The uplink burst, likewise.
    pub uplink_burst_bytes: u64,
}

impl Rules {
    /// How long a device may stay silent.
    pub(crate) fn silence(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats
    }

    /// The first frame of every session.
    pub(crate) fn welcome(&self, device: &DeviceId) -> Frame {
        Frame::Welcome(Welcome {
            device_id: device.clone(),
            heartbeat_interval_ms: millis(self.heartbeat_interval),
            max_frame_len: MAX_FRAME_LEN as u32,
        })
    }
}

/// What one open session remembers between inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionState {
    /// When the device last sent a frame (only its own frames are a sign of life).
    pub last_heard: Instant,
}

impl SessionState {
    pub(crate) fn opened(now: Instant) -> Self {
        Self { last_heard: now }
    }
}

/// Something that happened to an open session.
#[derive(Debug)]
pub(crate) enum Input {
    /// The gateway is shutting down and asks its sessions to end.
    StopAsked,
    /// The gateway has been cut off from the bus: nothing the device sends gets anywhere.
    BusLost,
    /// The sessions table ended this session; `None` when the table let go of it unasked.
    Ended(Option<Ended>),
    /// The silence timer fired.
    SilenceTimer,
    /// A whole frame from the device, `len` bytes on the wire.
    Frame { frame: Frame, len: usize },
    /// The device closed the connection between frames.
    Closed,
    /// The connection failed (or ended inside a frame).
    ConnectionLost(String),
    /// The device sent bytes that are not a frame.
    Undecodable(String),
    /// The bridge refused a device frame (not a device frame, a bad topic, the bus down).
    UplinkRefused(String),
    /// A message for the device from the bus.
    Downlink(Bytes),
    /// The device's downlink subscription ended.
    DownlinkEnded,
    /// Writing to the device failed or timed out.
    WriteFailed(String),
}

/// What the loop does about an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Bridge the device's frame onto the bus.
    Forward(Frame),
    /// Write these bytes (exactly one frame) to the device.
    Deliver(Bytes),
    /// Set the silence timer to fire at this instant.
    Rearm(Instant),
    /// Drop a bus message; it is logged with this reason.
    Drop(&'static str),
    /// End the session.
    End(Ending),
}

/// How a session ends: what the device is told (best effort) and the reason on record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ending {
    pub tell: Option<Frame>,
    pub reason: String,
}

impl Ending {
    /// The device went over its uplink budget (counted apart from other endings).
    pub(crate) fn over_budget(&self) -> bool {
        matches!(
            &self.tell,
            Some(Frame::Error(ErrorFrame {
                code: FrameErrorCode::ResourceExhausted,
                ..
            }))
        )
    }

    fn silently(reason: impl Into<String>) -> Action {
        Action::End(Self {
            tell: None,
            reason: reason.into(),
        })
    }

    fn with_error(code: FrameErrorCode, reason: String) -> Action {
        Action::End(Self {
            tell: Some(Frame::Error(ErrorFrame {
                code,
                app_id: None,
                message: reason.clone(),
            })),
            reason,
        })
    }
}

/// The next action of a session in `state` on `input` at `now`. A device frame is paid for from
/// `allowance` (shared by the device's sessions on this gateway).
pub(crate) fn decide(
    state: &mut SessionState,
    rules: &Rules,
    allowance: &mut Allowance,
    input: Input,
    now: Instant,
) -> Action {
    match input {
        Input::StopAsked => Action::End(Ending {
            tell: Some(Frame::GoAway(GoAway {
                reason: "gateway shutting down".into(),
                reconnect_after_ms: millis(rules.reconnect_after),
            })),
            reason: "gateway shutdown".into(),
        }),
        Input::BusLost => Action::End(Ending {
            tell: Some(Frame::GoAway(GoAway {
                reason: "gateway cut off from the bus; try another".into(),
                reconnect_after_ms: millis(rules.reconnect_after),
            })),
            reason: "gateway cut off from the bus".into(),
        }),
        Input::Ended(Some(Ended::Revoked(why))) => Action::End(Ending {
            tell: Some(Frame::Rejected(Rejected {
                reason: RejectReason::Decommissioned,
                message: "device is decommissioned".into(),
            })),
            reason: format!("decommissioned: {why}"),
        }),
        Input::Ended(Some(Ended::Replaced) | None) => {
            Ending::silently("replaced by a newer session of the device")
        }
        Input::SilenceTimer => {
            // The timer was set for the silence as it stood when armed; frames since then
            // move the deadline on.
            let deadline = state.last_heard + rules.silence();
            if now >= deadline {
                Ending::silently(format!(
                    "heartbeat timeout: silent for {:?}",
                    rules.silence()
                ))
            } else {
                Action::Rearm(deadline)
            }
        }
        Input::Frame { frame, len } => {
            state.last_heard = now;
            if allowance.spend(len, now) {
                Action::Forward(frame)
            } else {
                let reason = format!(
                    "uplink rate limit exceeded: over {} bytes/s (burst {})",
                    rules.uplink_bytes_per_second, rules.uplink_burst_bytes
                );
                Ending::with_error(FrameErrorCode::ResourceExhausted, reason)
            }
        }
        Input::Closed => Ending::silently("closed by the device"),
        Input::ConnectionLost(e) => Ending::silently(format!("connection lost: {e}")),
        Input::Undecodable(e) => Ending::with_error(
            FrameErrorCode::Malformed,
            format!("protocol violation: {e}"),
        ),
        Input::UplinkRefused(reason) => Ending::with_error(FrameErrorCode::Malformed, reason),
        // Only whole, valid frames reach a device.
        Input::Downlink(bytes) => match decode(&bytes) {
            Ok((_, used)) if used == bytes.len() => Action::Deliver(bytes),
            _ => Action::Drop("downlink message is not exactly one frame"),
        },
        Input::DownlinkEnded => Ending::silently("bus subscription ended"),
        Input::WriteFailed(e) => Ending::silently(e),
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::{FRAME_OVERHEAD, Limits};
    use wasmbed_schemas::AppId;
    use wasmbed_schemas::frame::codec::encode_to_vec;
    use wasmbed_schemas::frame::{Heartbeat, Telemetry};

    const RULES: Rules = Rules {
        heartbeat_interval: Duration::from_secs(5),
        missed_heartbeats: 3,
        reconnect_after: Duration::from_millis(500),
        uplink_bytes_per_second: 1000,
        uplink_burst_bytes: 4000,
    };

    fn allowance(now: Instant) -> Allowance {
        Allowance::new(
            Limits {
                bytes_per_second: RULES.uplink_bytes_per_second,
                burst_bytes: RULES.uplink_burst_bytes,
                sessions_per_second: 1.0,
                session_burst: 1,
            },
            now,
        )
    }

    fn heartbeat() -> Frame {
        Frame::Heartbeat(Heartbeat {
            seq: 7,
            uptime_ms: 1,
        })
    }

    fn encoded(frame: &Frame) -> Bytes {
        Bytes::from(encode_to_vec(frame).expect("encodes"))
    }

    fn ends(tell: Option<Frame>, reason: &str) -> Action {
        Action::End(Ending {
            tell,
            reason: reason.into(),
        })
    }

    fn error(code: FrameErrorCode, message: &str) -> Option<Frame> {
        Some(Frame::Error(ErrorFrame {
            code,
            app_id: None,
            message: message.into(),
        }))
    }

    /// Runs `input` `after` a session opened at `opened`, on a full allowance.
    fn check(opened: Instant, input: Input, after: Duration, expected: Action) {
        let mut state = SessionState::opened(opened);
        let mut budget = allowance(opened);
        let shown = format!("{input:?}");
        let action = decide(&mut state, &RULES, &mut budget, input, opened + after);
        assert_eq!(action, expected, "{shown}");
    }

    #[test]
    fn every_input_of_an_open_session() {
        let opened = Instant::now();
        let soon = Duration::from_secs(1);
        let silence = RULES.silence();
        let one_frame = encoded(&heartbeat());
        let mut two_frames = one_frame.to_vec();
        two_frames.extend_from_slice(&one_frame);
        let mut trailing = one_frame.to_vec();
        trailing.push(0);
        let table: Vec<(Input, Duration, Action)> = vec![
            (
                Input::StopAsked,
                soon,
                ends(
                    Some(Frame::GoAway(GoAway {
                        reason: "gateway shutting down".into(),
                        reconnect_after_ms: 500,
                    })),
                    "gateway shutdown",
                ),
            ),
            (
                Input::BusLost,
                soon,
                ends(
                    Some(Frame::GoAway(GoAway {
                        reason: "gateway cut off from the bus; try another".into(),
                        reconnect_after_ms: 500,
                    })),
                    "gateway cut off from the bus",
                ),
            ),
            (
                Input::Ended(Some(Ended::Revoked("stolen".into()))),
                soon,
                ends(
                    Some(Frame::Rejected(Rejected {
                        reason: RejectReason::Decommissioned,
                        message: "device is decommissioned".into(),
                    })),
                    "decommissioned: stolen",
                ),
            ),
            (
                Input::Ended(Some(Ended::Replaced)),
                soon,
                ends(None, "replaced by a newer session of the device"),
            ),
            (
                Input::Ended(None),
                soon,
                ends(None, "replaced by a newer session of the device"),
            ),
            (
                Input::SilenceTimer,
                silence - Duration::from_millis(1),
                Action::Rearm(opened + silence),
            ),
            (
                Input::SilenceTimer,
                silence,
                ends(None, "heartbeat timeout: silent for 15s"),
            ),
            (
                Input::Frame {
                    frame: heartbeat(),
                    len: one_frame.len(),
                },
                soon,
                Action::Forward(heartbeat()),
            ),
            (
                Input::Frame {
                    frame: heartbeat(),
                    len: 4000,
                },
                soon,
                ends(
                    error(
                        FrameErrorCode::ResourceExhausted,
                        "uplink rate limit exceeded: over 1000 bytes/s (burst 4000)",
                    ),
                    "uplink rate limit exceeded: over 1000 bytes/s (burst 4000)",
                ),
            ),
            (Input::Closed, soon, ends(None, "closed by the device")),
            (
                Input::ConnectionLost("reset".into()),
                soon,
                ends(None, "connection lost: reset"),
            ),
            (
                Input::Undecodable("bad length".into()),
                soon,
                ends(
                    error(FrameErrorCode::Malformed, "protocol violation: bad length"),
                    "protocol violation: bad length",
                ),
            ),
            (
                Input::UplinkRefused("bad topic".into()),
                soon,
                ends(error(FrameErrorCode::Malformed, "bad topic"), "bad topic"),
            ),
            (
                Input::Downlink(one_frame.clone()),
                soon,
                Action::Deliver(one_frame.clone()),
            ),
            (
                Input::Downlink(Bytes::from(two_frames)),
                soon,
                Action::Drop("downlink message is not exactly one frame"),
            ),
            (
                Input::Downlink(Bytes::from(trailing)),
                soon,
                Action::Drop("downlink message is not exactly one frame"),
            ),
            (
                Input::Downlink(Bytes::from_static(&[0, 0, 0, 1])),
                soon,
                Action::Drop("downlink message is not exactly one frame"),
            ),
            (
                Input::DownlinkEnded,
                soon,
                ends(None, "bus subscription ended"),
            ),
            (
                Input::WriteFailed("write timed out after 5s".into()),
                soon,
                ends(None, "write timed out after 5s"),
            ),
        ];
        for (input, after, expected) in table {
            check(opened, input, after, expected);
        }
    }

    #[test]
    fn only_the_devices_own_frames_move_the_silence_deadline() {
        let opened = Instant::now();
        let mut state = SessionState::opened(opened);
        let mut budget = allowance(opened);
        let silence = RULES.silence();
        let frame = Input::Frame {
            frame: heartbeat(),
            len: 16,
        };
        let heard = opened + Duration::from_secs(10);
        assert_eq!(
            decide(&mut state, &RULES, &mut budget, frame, heard),
            Action::Forward(heartbeat())
        );
        // The timer armed at the open fires: the frame at 10 s moved the deadline to 25 s.
        assert_eq!(
            decide(
                &mut state,
                &RULES,
                &mut budget,
                Input::SilenceTimer,
                opened + silence
            ),
            Action::Rearm(heard + silence)
        );
        // A downlink message is not a sign of life.
        let downlink = Input::Downlink(encoded(&heartbeat()));
        assert!(matches!(
            decide(&mut state, &RULES, &mut budget, downlink, heard + silence),
            Action::Deliver(_)
        ));
        assert_eq!(
            decide(
                &mut state,
                &RULES,
                &mut budget,
                Input::SilenceTimer,
                heard + silence
            ),
            ends(None, "heartbeat timeout: silent for 15s")
        );
    }

    #[test]
    fn the_budget_is_spent_per_frame_and_refills_with_time() {
        let opened = Instant::now();
        let mut state = SessionState::opened(opened);
        let mut budget = allowance(opened);
        let len = 1000 - FRAME_OVERHEAD; // one second of budget per frame
        let frame = || Input::Frame {
            frame: Frame::Telemetry(Telemetry {
                app_id: AppId::new("sensor").expect("valid id"),
                seq: 1,
                topic: "t".into(),
                payload: vec![0; 8],
            }),
            len,
        };
        // The burst holds four frames; the fifth at the same instant is over it.
        for _ in 0..4 {
            assert!(matches!(
                decide(&mut state, &RULES, &mut budget, frame(), opened),
                Action::Forward(_)
            ));
        }
        assert!(matches!(
            decide(&mut state, &RULES, &mut budget, frame(), opened),
            Action::End(Ending {
                tell: Some(Frame::Error(_)),
                ..
            })
        ));
        // A second later one frame's worth has come back.
        let later = opened + Duration::from_secs(1);
        assert!(matches!(
            decide(&mut state, &RULES, &mut budget, frame(), later),
            Action::Forward(_)
        ));
    }

    #[test]
    fn only_an_ending_over_the_uplink_budget_counts_as_over_budget() {
        let opened = Instant::now();
        let end = |input: Input| {
            let mut state = SessionState::opened(opened);
            let mut budget = allowance(opened);
            match decide(&mut state, &RULES, &mut budget, input, opened) {
                Action::End(ending) => ending.over_budget(),
                other => panic!("not an ending: {other:?}"),
            }
        };
        let over = Input::Frame {
            frame: heartbeat(),
            len: 4000,
        };
        assert!(end(over));
        assert!(!end(Input::Undecodable("bad length".into())));
        assert!(!end(Input::StopAsked));
        assert!(!end(Input::Closed));
    }

    #[test]
    fn the_welcome_carries_the_heartbeat_interval() {
        let device = DeviceId::new("dev-1").expect("valid id");
        let Frame::Welcome(welcome) = RULES.welcome(&device) else {
            panic!("not a welcome");
        };
        assert_eq!(welcome.device_id, device);
        assert_eq!(welcome.heartbeat_interval_ms, 5000);
        assert_eq!(welcome.max_frame_len, MAX_FRAME_LEN as u32);
    }
}
