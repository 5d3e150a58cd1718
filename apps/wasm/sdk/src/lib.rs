//! The `wasmbed` host API for applications written in Rust (`no_std`, no allocator).
//!
//! An application exports `tick` (called every `tick_interval_ms`) and optionally `init`:
//!
//! ```ignore
//! #[unsafe(no_mangle)]
//! pub extern "C" fn tick() {
//!     wasmbed_app::publish("hello", b"world").ok();
//! }
//! ```
//!
//! The functions and their error codes are documented in `wasmbed_schemas::host_api`.

#![no_std]

mod sys {
    #[link(wasm_import_module = "wasmbed")]
    unsafe extern "C" {
        pub fn log(level: i32, ptr: *const u8, len: usize) -> i32;
        pub fn publish(topic: *const u8, topic_len: usize, payload: *const u8, len: usize)
        -> i32;
        pub fn now_ms() -> i64;
        pub fn device_id(ptr: *mut u8, cap: usize) -> i32;
        pub fn config(ptr: *mut u8, cap: usize) -> i32;
    }
}

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Errors.
    Error = 0,
    /// Warnings.
    Warn = 1,
    /// Information.
    Info = 2,
    /// Debugging detail.
    Debug = 3,
}

/// A host call refused: the negative code of `wasmbed_schemas::host_api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub i32);

fn check(code: i32) -> Result<(), HostError> {
    if code < 0 { Err(HostError(code)) } else { Ok(()) }
}

/// Sends a log line to the device's log subject.
pub fn log(level: Level, message: &str) -> Result<(), HostError> {
    // SAFETY: the pointer and length describe a live `&str` in this module's memory.
    check(unsafe { sys::log(level as i32, message.as_ptr(), message.len()) })
}

/// Publishes telemetry under `topic`.
pub fn publish(topic: &str, payload: &[u8]) -> Result<(), HostError> {
    // SAFETY: both pointers and lengths describe live slices in this module's memory.
    check(unsafe { sys::publish(topic.as_ptr(), topic.len(), payload.as_ptr(), payload.len()) })
}

/// Milliseconds on the device's monotonic clock.
pub fn now_ms() -> u64 {
    // SAFETY: no arguments.
    let now = unsafe { sys::now_ms() };
    u64::try_from(now).unwrap_or(0)
}

fn fill(buf: &mut [u8], call: unsafe extern "C" fn(*mut u8, usize) -> i32) -> Option<&[u8]> {
    // SAFETY: the host writes at most `buf.len()` bytes into `buf`.
    let len = unsafe { call(buf.as_mut_ptr(), buf.len()) };
    let len = usize::try_from(len).ok()?;
    buf.get(..len)
}

/// The device's id, written into `buf` (`None` if it does not fit).
pub fn device_id(buf: &mut [u8]) -> Option<&str> {
    fill(buf, sys::device_id).and_then(|b| core::str::from_utf8(b).ok())
}

/// The app's configuration bytes, written into `buf` (`None` if they do not fit).
pub fn config(buf: &mut [u8]) -> Option<&[u8]> {
    fill(buf, sys::config)
}

/// A fixed buffer that `core::fmt::write!` can format into, for building payloads without an
/// allocator. Output past its capacity is cut off.
pub struct Buf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Buf<N> {
    fn default() -> Self {
        Self { bytes: [0; N], len: 0 }
    }
}

impl<const N: usize> Buf<N> {
    /// What was written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> core::fmt::Write for Buf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = N - self.len;
        let take = s.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() { Err(core::fmt::Error) } else { Ok(()) }
    }
}

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
