//! Pairing windows: while one is open, a device presenting its token may enroll without being
//! registered first. Each window is a `PairingWindowOpened` event carrying the token's digest,
//! so every enrollment instance (and one restarted) accepts its token until it closes.
//!
//! Only each token's SHA-256 is kept, and a presented token is compared with every open
//! window's digest in constant time: neither the time an answer takes nor a memory dump says
//! anything about a token.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Open pairing windows.
#[derive(Debug, Default)]
pub struct PairingWindows {
    open: Vec<([u8; 32], DateTime<Utc>)>,
}

/// The digest of `token` the log keeps.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl PairingWindows {
    /// Opens a window with `token` until `expires_at`.
    pub fn open(&mut self, token: &str, expires_at: DateTime<Utc>) {
        self.open_digest(digest(token), expires_at);
    }

    /// Opens a window whose token has `digest` (from the log) until `expires_at`.
    pub fn open_digest(&mut self, digest: [u8; 32], expires_at: DateTime<Utc>) {
        if !self.open.contains(&(digest, expires_at)) {
            self.open.push((digest, expires_at));
        }
    }

    /// Whether `token` belongs to a window open at `now`. Expired windows are dropped.
    pub fn accepts(&mut self, token: &str, now: DateTime<Utc>) -> bool {
        self.open.retain(|(_, expires)| *expires > now);
        let presented = digest(token);
        // Every window is compared, whether or not an earlier one matched.
        self.open
            .iter()
            .fold(subtle::Choice::from(0), |found, (window, _)| {
                found | window.ct_eq(&presented)
            })
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_accepted_only_while_their_window_is_open() {
        let now = Utc::now();
        let mut windows = PairingWindows::default();
        windows.open("abc", now + chrono::Duration::seconds(10));
        windows.open("xyz", now + chrono::Duration::seconds(20));
        assert!(windows.accepts("abc", now));
        assert!(windows.accepts("xyz", now));
        assert!(!windows.accepts("abd", now));
        assert!(!windows.accepts("", now));
        assert!(!windows.accepts("abc", now + chrono::Duration::seconds(10)));
        assert!(!windows.accepts("abc", now));
        assert!(windows.accepts("xyz", now));
    }

    #[test]
    fn no_token_is_kept_in_the_clear() {
        let token = "5f2b9c0e4d1a7e3f8b6c2d9a0e1f4b7c";
        let mut windows = PairingWindows::default();
        windows.open(token, Utc::now() + chrono::Duration::seconds(10));
        let kept = format!("{windows:?}");
        assert!(!kept.contains(token), "{kept}");
        assert!(windows.accepts(token, Utc::now()));
    }
}
