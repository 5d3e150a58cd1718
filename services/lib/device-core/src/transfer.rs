//! Receiving modules: chunks in order, resumable, verified by SHA-256 before anything runs.
//!
//! The gateway side opens (or resumes) a transfer with `ModuleBegin`; the device answers with
//! a `ModuleAck` saying how many bytes it already holds of that module, so a transfer cut by a
//! lost connection continues where it stopped. Each chunk is acknowledged. `ModuleCommit`
//! checks the digest: a match makes the module ready to run; a mismatch throws the bytes away.
//!
//! The module an app ran before its current one is kept while both fit in one module's room
//! (`max_module_len`), so going back to it is a `Deploy`, not a transfer: a `ModuleBegin` of its
//! digest is answered "verified". When they do not fit, the older one is dropped and a
//! `ModuleBegin` of it is answered with no bytes held, so the sender sends it again. Either way
//! the device never holds more than it did without the cache: at most one module's room for the
//! current and previous modules together, plus one transfer in progress.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use sha2::{Digest, Sha256 as Hasher};
use wasmbed_schemas::frame::{
    ErrorFrame, FrameErrorCode, ModuleAck, ModuleBegin, ModuleChunk, ModuleCommit,
};
use wasmbed_schemas::{AppId, Sha256};

/// A module whose digest matched, ready to be deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyModule {
    /// The application version it belongs to.
    pub version: u32,
    /// Its verified SHA-256.
    pub sha256: Sha256,
    /// The bytes.
    pub bytes: Vec<u8>,
}

struct Partial {
    version: u32,
    sha256: Sha256,
    total_len: u32,
    bytes: Vec<u8>,
}

/// What a transfer frame produced: an acknowledgement, an error, or both.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferReply {
    /// Progress to report.
    pub ack: Option<ModuleAck>,
    /// What went wrong.
    pub error: Option<ErrorFrame>,
}

/// Transfers in progress and modules received, per application.
pub struct Receiver {
    max_module_len: u32,
    partial: BTreeMap<AppId, Partial>,
    ready: BTreeMap<AppId, ReadyModule>,
    previous: BTreeMap<AppId, ReadyModule>,
}

fn error(code: FrameErrorCode, app: &AppId, message: String) -> Option<ErrorFrame> {
    Some(ErrorFrame {
        code,
        app_id: Some(app.clone()),
        message,
    })
}

impl Receiver {
    /// A receiver that refuses modules longer than `max_module_len` bytes.
    pub fn new(max_module_len: u32) -> Self {
        Self {
            max_module_len,
            partial: BTreeMap::new(),
            ready: BTreeMap::new(),
            previous: BTreeMap::new(),
        }
    }

    /// Opens or resumes a transfer. Bytes already held for the same module are kept.
    pub fn begin(&mut self, begin: ModuleBegin) -> TransferReply {
        let app = begin.app_id;
        if let Some(reply) = self.already_held(&app, &begin.sha256) {
            return reply;
        }
        if begin.total_len > self.max_module_len {
            let message = format!(
                "module of {} bytes exceeds this device's limit of {} bytes",
                begin.total_len, self.max_module_len
            );
            self.partial.remove(&app);
            return TransferReply {
                ack: None,
                error: error(FrameErrorCode::ResourceExhausted, &app, message),
            };
        }
        let keep = self
            .partial
            .get(&app)
            .is_some_and(|p| p.sha256 == begin.sha256 && p.total_len == begin.total_len);
        if !keep {
            self.partial.insert(
                app.clone(),
                Partial {
                    version: begin.version,
                    sha256: begin.sha256,
                    total_len: begin.total_len,
                    bytes: Vec::new(),
                },
            );
        }
        let held = self.partial.get(&app).map_or(0, |p| p.bytes.len() as u32);
        TransferReply {
            ack: Some(ModuleAck {
                app_id: app,
                next_offset: held,
                verified: false,
            }),
            error: None,
        }
    }

    /// Appends a chunk that continues the bytes held; anything else is answered with where
    /// the transfer really is.
    pub fn chunk(&mut self, chunk: ModuleChunk) -> TransferReply {
        let app = chunk.app_id;
        if !self.partial.contains_key(&app) && self.ready.contains_key(&app) {
            // A late copy of a transfer that already completed (the sender retried): nothing
            // to add and nothing to say.
            return TransferReply::default();
        }
        let Some(partial) = self.partial.get_mut(&app) else {
            return TransferReply {
                ack: None,
                error: error(
                    FrameErrorCode::UnknownApp,
                    &app,
                    String::from("chunk without a ModuleBegin"),
                ),
            };
        };
        let held = partial.bytes.len() as u32;
        let fits =
            u64::from(chunk.offset) + chunk.data.len() as u64 <= u64::from(partial.total_len);
        let reply_error = if chunk.offset != held {
            // A duplicate (already held) or a gap: either way, say where we are.
            (chunk.offset > held).then(|| ErrorFrame {
                code: FrameErrorCode::Unexpected,
                app_id: Some(app.clone()),
                message: format!("chunk at {} but {} bytes held", chunk.offset, held),
            })
        } else if !fits {
            Some(ErrorFrame {
                code: FrameErrorCode::Malformed,
                app_id: Some(app.clone()),
                message: format!(
                    "chunk at {} of {} bytes runs past the module's {} bytes",
                    chunk.offset,
                    chunk.data.len(),
                    partial.total_len
                ),
            })
        } else {
            partial.bytes.extend_from_slice(&chunk.data);
            None
        };
        TransferReply {
            ack: Some(ModuleAck {
                app_id: app,
                next_offset: partial.bytes.len() as u32,
                verified: false,
            }),
            error: reply_error,
        }
    }

    /// Checks the whole module against its digest. On a match it becomes ready; on a mismatch
    /// its bytes are dropped and the transfer must start over.
    pub fn commit(&mut self, commit: ModuleCommit) -> TransferReply {
        let app = commit.app_id;
        if let Some(reply) = self.already_held(&app, &commit.sha256) {
            return reply;
        }
        let Some(partial) = self.partial.remove(&app) else {
            return TransferReply {
                ack: None,
                error: error(
                    FrameErrorCode::UnknownApp,
                    &app,
                    String::from("commit without a transfer"),
                ),
            };
        };
        if partial.bytes.len() as u32 != partial.total_len {
            let message = format!(
                "commit with {} of {} bytes held",
                partial.bytes.len(),
                partial.total_len
            );
            let held = partial.bytes.len() as u32;
            self.partial.insert(app.clone(), partial);
            return TransferReply {
                ack: Some(ModuleAck {
                    app_id: app.clone(),
                    next_offset: held,
                    verified: false,
                }),
                error: error(FrameErrorCode::Unexpected, &app, message),
            };
        }
        let digest = Sha256(Hasher::digest(&partial.bytes).into());
        if digest != partial.sha256 || digest != commit.sha256 {
            return TransferReply {
                ack: Some(ModuleAck {
                    app_id: app.clone(),
                    next_offset: 0,
                    verified: false,
                }),
                error: error(
                    FrameErrorCode::DigestMismatch,
                    &app,
                    format!(
                        "module digest is {digest}, expected {}; bytes discarded",
                        partial.sha256
                    ),
                ),
            };
        }
        let next_offset = partial.bytes.len() as u32;
        let replaced = self.ready.insert(
            app.clone(),
            ReadyModule {
                version: partial.version,
                sha256: digest,
                bytes: partial.bytes,
            },
        );
        self.previous.remove(&app);
        if let Some(older) = replaced {
            self.keep_as_previous(&app, older);
        }
        TransferReply {
            ack: Some(ModuleAck {
                app_id: app,
                next_offset,
                verified: true,
            }),
            error: None,
        }
    }

    /// The verified module of `app` with digest `sha256`, if it is held (current or previous).
    pub fn ready(&self, app: &AppId, sha256: &Sha256) -> Option<&ReadyModule> {
        self.ready
            .get(app)
            .filter(|m| m.sha256 == *sha256)
            .or_else(|| self.previous.get(app).filter(|m| m.sha256 == *sha256))
    }

    /// "Verified, all of it" when the module of `app` with `sha256` is held (current or
    /// previous).
    fn already_held(&self, app: &AppId, sha256: &Sha256) -> Option<TransferReply> {
        let held = self.ready(app, sha256)?;
        Some(TransferReply {
            ack: Some(ModuleAck {
                app_id: app.clone(),
                next_offset: held.bytes.len() as u32,
                verified: true,
            }),
            error: None,
        })
    }

    /// Makes the held module of `app` with `sha256` the current one (a rollback to the previous
    /// module swaps the two); returns it.
    pub fn make_current(&mut self, app: &AppId, sha256: &Sha256) -> Option<&ReadyModule> {
        let is_previous = self.previous.get(app).is_some_and(|m| m.sha256 == *sha256);
        let newer = is_previous
            .then(|| self.previous.remove(app))
            .flatten()
            .and_then(|back| self.ready.insert(app.clone(), back));
        if let Some(newer) = newer {
            self.keep_as_previous(app, newer);
        }
        self.ready.get(app).filter(|m| m.sha256 == *sha256)
    }

    /// Forgets everything about `app` (it was stopped for good).
    pub fn forget(&mut self, app: &AppId) {
        self.partial.remove(app);
        self.ready.remove(app);
        self.previous.remove(app);
    }

    /// Keeps `older` beside the current module of `app` when both fit in one module's room.
    fn keep_as_previous(&mut self, app: &AppId, older: ReadyModule) {
        let current = self.ready.get(app).map_or(0, |m| m.bytes.len());
        if current + older.bytes.len() <= self.max_module_len as usize {
            self.previous.insert(app.clone(), older);
        }
    }
}
