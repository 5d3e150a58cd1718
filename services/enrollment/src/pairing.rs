//! Pairing windows: while one is open, a device presenting its token may enroll without being
//! registered first. Windows live in memory: a restart of enrollment closes them (the safe side).

use chrono::{DateTime, Utc};

/// Open pairing windows.
#[derive(Debug, Default)]
pub struct PairingWindows {
    open: Vec<(String, DateTime<Utc>)>,
}

impl PairingWindows {
    /// Opens a window with `token` until `expires_at`.
    pub fn open(&mut self, token: String, expires_at: DateTime<Utc>) {
        self.open.push((token, expires_at));
    }

    /// Whether `token` belongs to a window open at `now`. Expired windows are dropped.
    pub fn accepts(&mut self, token: &str, now: DateTime<Utc>) -> bool {
        self.open.retain(|(_, expires)| *expires > now);
        self.open.iter().any(|(t, _)| t == token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_accepted_only_while_their_window_is_open() {
        let now = Utc::now();
        let mut windows = PairingWindows::default();
        windows.open("abc".into(), now + chrono::Duration::seconds(10));
        assert!(windows.accepts("abc", now));
        assert!(!windows.accepts("abd", now));
        assert!(!windows.accepts("abc", now + chrono::Duration::seconds(10)));
        assert!(!windows.accepts("abc", now));
    }
}
