//! The device's application agent: module transfers, the runtime, and what it reports.
//!
//! Sans-IO like [`crate::Session`]: the driver hands it the frames the session received and
//! the time, and sends the frames it queues. It outlives sessions, so a transfer cut by a lost
//! connection resumes and apps keep running while the device reconnects.

use alloc::string::String;
use alloc::vec::Vec;

use wasmbed_schemas::frame::{
    AppState, AppStatus, Deploy, DeviceInfo, ErrorFrame, Frame, FrameErrorCode,
};
use wasmbed_schemas::{AppId, DeviceId, host_api};

use crate::runtime::{Runtime, StartRequest};
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
    /// How often every running app's status is reported.
    pub status_interval_ms: u64,
}

/// Module transfers and running apps of one device.
pub struct Agent {
    config: AgentConfig,
    receiver: Receiver,
    runtime: Runtime,
    outbox: Vec<Frame>,
    next_status_ms: u64,
}

impl Agent {
    /// An agent with no modules and no apps.
    pub fn new(config: AgentConfig) -> Self {
        Self {
            receiver: Receiver::new(config.max_module_len),
            runtime: Runtime::new(),
            outbox: Vec::new(),
            next_status_ms: 0,
            config,
        }
    }

    /// A session opened: tell the gateway what the device is and which apps run.
    pub fn on_established(&mut self, device_id: &DeviceId) {
        self.runtime.set_device_id(device_id.as_str());
        self.outbox.push(Frame::DeviceInfo(DeviceInfo {
            mcu: self.config.mcu.clone(),
            firmware: self.config.firmware.clone(),
            app_ram_bytes: self.config.app_ram_bytes,
            host_api_version: host_api::VERSION,
        }));
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
        let request = StartRequest {
            app_id: app_id.clone(),
            version,
            sha256,
            module: &module.bytes,
            limits,
            config: config.0,
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
            Err(reason) => {
                self.outbox
                    .push(status(app_id, version, AppState::Failed, Some(reason)));
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
    })
}
