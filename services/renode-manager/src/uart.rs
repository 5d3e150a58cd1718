//! An emulated device's UART output as lines: the recent past kept, the present broadcast.

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{Notify, broadcast};

/// Lines kept per device for [`UartLog::lines`] and the waits.
const KEPT_LINES: usize = 4096;

/// The awaited UART line did not come.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no UART line containing {needle:?} within {timeout:?}")]
pub struct LineTimeout {
    /// What was awaited.
    pub needle: String,
    /// How long.
    pub timeout: Duration,
}

/// One device's UART.
pub struct UartLog {
    lines: Mutex<Vec<String>>,
    changed: Notify,
    live: broadcast::Sender<String>,
}

impl Default for UartLog {
    fn default() -> Self {
        Self {
            lines: Mutex::default(),
            changed: Notify::new(),
            live: broadcast::channel(256).0,
        }
    }
}

impl UartLog {
    /// Records one line.
    pub fn push(&self, line: String) {
        tracing::debug!(target: "uart", "{line}");
        let _ = self.live.send(line.clone());
        if let Ok(mut all) = self.lines.lock() {
            // A board runs for days: keep the recent past, not all of it.
            if all.len() >= KEPT_LINES {
                all.drain(..KEPT_LINES / 2);
            }
            all.push(line);
        }
        self.changed.notify_waiters();
    }

    /// Records every line `reader` yields, `prefix`ed, until it ends.
    pub async fn collect<R: AsyncRead + Unpin>(&self, reader: R, prefix: &str) {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            self.push(format!("{prefix}{}", line.trim_end_matches('\r')));
        }
    }

    /// The lines so far (the most recent few thousand).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The last `n` lines.
    pub fn last(&self, n: usize) -> Vec<String> {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// Lines from now on, as they come (a slow reader loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.live.subscribe()
    }

    /// Waits until `n` lines contain `needle`; returns the n-th.
    pub async fn wait_for_nth_line(
        &self,
        needle: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<String, LineTimeout> {
        let search = async {
            loop {
                let changed = self.changed.notified();
                if let Some(line) = self
                    .lines()
                    .into_iter()
                    .filter(|l| l.contains(needle))
                    .nth(n.saturating_sub(1))
                {
                    return line;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, search)
            .await
            .map_err(|_| LineTimeout {
                needle: needle.to_owned(),
                timeout,
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn keeps_lines_and_finds_the_nth() {
        let uart = UartLog::default();
        uart.collect(&b"boot\r\nenrolled: a\nenrolled: b\n"[..], "")
            .await;
        assert_eq!(uart.lines(), ["boot", "enrolled: a", "enrolled: b"]);
        assert_eq!(uart.last(1), ["enrolled: b"]);
        let second = uart
            .wait_for_nth_line("enrolled", 2, Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(second, "enrolled: b");
        assert!(
            uart.wait_for_nth_line("enrolled", 3, Duration::from_millis(10))
                .await
                .is_err()
        );
        for n in 0..KEPT_LINES {
            uart.push(format!("{n}"));
        }
        assert!(uart.lines().len() <= KEPT_LINES);
        assert_eq!(uart.last(1), [format!("{}", KEPT_LINES - 1)]);
    }
}
