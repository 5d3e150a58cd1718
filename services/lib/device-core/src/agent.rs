//! The device's application agent: module transfers, the runtime, and what it reports.
//!
//! Sans-IO like [`crate::Session`]: the driver hands it the frames the session received and
//! the time, and sends the frames it queues. It outlives sessions, so a transfer cut by a lost
//! connection resumes and apps keep running while the device reconnects.

use alloc::string::String;
use alloc::vec::Vec;

use wasmbed_schemas::frame::{
    AppState, AppStatus, Deploy, DeviceInfo, ErrorFrame, Frame, FrameErrorCode, Log, LogLevel,
};
use wasmbed_schemas::release::Refusal;
use wasmbed_schemas::{AppId, DeviceId, PublicKey, host_api};

use crate::release::TrustStore;
use crate::runtime::{Runtime, StartFailure, StartRequest};
use crate::transfer::{Receiver, TransferReply};

/// What the device is and how much it accepts.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// MCU type as named in the catalogue.
    pub mcu: String,
    /// Firmware name and version.
    pub firmware: String,
    /// RAM the device gives to applications, bytes.
    pub app_ram_bytes: u32,
    /// The largest module it accepts, bytes.
    pub max_module_len: u32,
    /// How much heap one call's wasm value stack may take, bytes: deeper calls trap (a stack
    /// overflow) before they could run the device out of memory.
    pub value_stack_bytes: u32,
    /// How often every running app's status is reported.
    pub status_interval_ms: u64,
    /// The publisher keys it was provisioned to trust; empty: it runs unsigned modules.
    pub publishers: Vec<PublicKey>,
    /// The serial of the last trust rotation `publishers` includes.
    pub trust_serial: u32,
}

/// Module transfers and running apps of one device.
pub struct Agent {
    config: AgentConfig,
    receiver: Receiver,
    runtime: Runtime,
    trust: TrustStore,
    outbox: Vec<Frame>,
    next_status_ms: u64,
}

impl Agent {
    /// An agent with no modules and no apps.
    pub fn new(config: AgentConfig) -> Self {
        Self {
            receiver: Receiver::new(config.max_module_len),
            runtime: Runtime::with_budget(
                u64::from(config.app_ram_bytes),
                config.value_stack_bytes as usize,
            ),
            trust: TrustStore::new(config.trust_serial, config.publishers.clone()),
            outbox: Vec::new(),
            next_status_ms: 0,
            config,
        }
    }

    /// A session opened: tell the gateway what the device is and which apps run.
    pub fn on_established(&mut self, device_id: &DeviceId) {
        self.runtime.set_device_id(device_id.as_str());
        self.queue_info();
        let statuses = self.runtime.statuses();
        self.outbox
            .extend(statuses.into_iter().map(Frame::AppStatus));
    }

    /// Handles a frame the gateway sent. Frames that are not for the agent are ignored.
    pub fn handle_frame(&mut self, frame: Frame, now_ms: u64) {
        match frame {
            Frame::ModuleBegin(begin) => {
                let reply = self.receiver.begin(begin);
                self.queue_reply(reply);
            }
            Frame::ModuleChunk(chunk) => {
                let reply = self.receiver.chunk(chunk);
                self.queue_reply(reply);
            }
            Frame::ModuleCommit(commit) => {
                let reply = self.receiver.commit(commit);
                self.queue_reply(reply);
            }
            Frame::Deploy(deploy) => self.deploy(deploy, now_ms),
            Frame::TrustUpdate(rotation) => {
                if let Err(refusal) = self.trust.apply(&rotation) {
                    self.outbox.push(Frame::Log(Log {
                        level: LogLevel::Warn,
                        app_id: None,
                        message: alloc::format!("trust rotation not applied: {refusal}"),
                    }));
                }
                // Whatever happened, the gateway learns the serial the device holds, so what
                // is missing can be sent in order.
                self.queue_info();
            }
            Frame::Stop(stop) => {
                let version = self.runtime.status(&stop.app_id).map_or(0, |s| s.version);
                self.runtime.stop(&stop.app_id);
                self.receiver.forget(&stop.app_id);
                self.outbox
                    .push(status(stop.app_id, version, AppState::Stopped, None));
            }
            _ => {}
        }
    }

    /// Runs the apps that are due and reports statuses when it is time.
    pub fn poll(&mut self, now_ms: u64) {
        self.runtime.run_due(now_ms, &mut self.outbox);
        if now_ms >= self.next_status_ms {
            self.next_status_ms = now_ms + self.config.status_interval_ms.max(1);
            let statuses = self.runtime.statuses();
            self.outbox
                .extend(statuses.into_iter().map(Frame::AppStatus));
        }
    }

    /// When [`Agent::poll`] wants to run next.
    pub fn next_wake(&self) -> u64 {
        self.runtime
            .next_due()
            .map_or(self.next_status_ms, |due| due.min(self.next_status_ms))
    }

    /// Whether frames are waiting to be sent.
    pub fn has_frames(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Frames to send, oldest first.
    pub fn take_frames(&mut self) -> Vec<Frame> {
        core::mem::take(&mut self.outbox)
    }

    /// The publisher keys trusted now.
    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    fn queue_info(&mut self) {
        self.outbox.push(Frame::DeviceInfo(DeviceInfo {
            mcu: self.config.mcu.clone(),
            firmware: self.config.firmware.clone(),
            app_ram_bytes: self.config.app_ram_bytes,
            host_api_version: host_api::VERSION,
            trust_serial: self.trust.serial(),
        }));
    }

    /// Whether `app` is running.
    pub fn is_running(&self, app: &AppId) -> bool {
        self.runtime.status(app).is_some()
    }

    fn deploy(&mut self, deploy: Deploy, now_ms: u64) {
        let Deploy {
            app_id,
            version,
            sha256,
            limits,
            config,
            release,
        } = deploy;
        if self.runtime.is_running(&app_id, version, &sha256) {
            if let Some(s) = self.runtime.status(&app_id) {
                self.outbox.push(Frame::AppStatus(s));
            }
            return;
        }
        let Some(module) = self.receiver.make_current(&app_id, &sha256) else {
            self.outbox.push(Frame::Error(ErrorFrame {
                code: FrameErrorCode::UnknownApp,
                app_id: Some(app_id),
                message: alloc::format!("module {sha256} has not been transferred"),
            }));
            return;
        };
        let grants =
            match self
                .trust
                .admit(release.as_deref(), &app_id, version, &module.bytes, &limits)
            {
                Ok(grants) => grants,
                Err(refusal) => {
                    self.outbox.push(refused(app_id, version, refusal));
                    return;
                }
            };
        let request = StartRequest {
            app_id: app_id.clone(),
            version,
            sha256,
            module: &module.bytes,
            limits,
            config: config.0,
            grants,
        };
        let mut sent = Vec::new();
        let started = self.runtime.start(request, now_ms, &mut sent);
        self.outbox.append(&mut sent);
        match started {
            Ok(()) => {
                if let Some(s) = self.runtime.status(&app_id) {
                    self.outbox.push(Frame::AppStatus(s));
                }
            }
            Err(StartFailure { detail, refusal }) => {
                let mut failed = status(app_id, version, AppState::Failed, Some(detail));
                if let Frame::AppStatus(s) = &mut failed {
                    s.refusal = refusal;
                }
                self.outbox.push(failed);
            }
        }
    }

    fn queue_reply(&mut self, reply: TransferReply) {
        if let Some(error) = reply.error {
            self.outbox.push(Frame::Error(error));
        }
        if let Some(ack) = reply.ack {
            self.outbox.push(Frame::ModuleAck(ack));
        }
    }
}

fn status(app_id: AppId, version: u32, state: AppState, detail: Option<String>) -> Frame {
    Frame::AppStatus(AppStatus {
        app_id,
        version,
        state,
        fuel_used: 0,
        memory_pages: 0,
        detail,
        refusal: None,
        denied_publishes: 0,
    })
}

/// The release of `version` was refused: nothing of it runs.
fn refused(app_id: AppId, version: u32, refusal: Refusal) -> Frame {
    Frame::AppStatus(AppStatus {
        app_id,
        version,
        state: AppState::Failed,
        fuel_used: 0,
        memory_pages: 0,
        detail: Some(alloc::format!("release refused: {refusal}")),
        refusal: Some(refusal),
        denied_publishes: 0,
    })
}
