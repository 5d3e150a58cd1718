//! The fleet's trusted publisher keys, folded from the `trust` aggregate.
//!
//! The aggregate's events form the rotation chain devices apply: event number `n` (its serial)
//! trusts or revokes one key. The first key comes without a rotation (the operator vouches for
//! it); every later change carries the signed rotation devices verify themselves.
//!
//! The fold verifies the chain the way a device does: a change is folded in only when it is the
//! next serial and its rotation is signed by a key trusted before it. An event appended past the
//! deployer's checks (by anyone allowed to write the `trust` subject) changes no reader's view:
//! not the keys new boards are provisioned with, not what the deployer accepts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use wasmbed_device_core::release::verify_rotation;
use wasmbed_schemas::PublicKey;
use wasmbed_schemas::event::Event;
use wasmbed_schemas::release::rotation::{SignedRotation, TrustChange};

/// One publisher key the fleet knows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Publisher {
    /// A name for people.
    pub name: String,
    /// The serial of the change that trusted it.
    pub trusted_at: u32,
    /// When that was recorded.
    pub since: DateTime<Utc>,
    /// Set once it is revoked: the serial of that change and why.
    pub revoked: Option<(u32, String)>,
}

/// The trust chain as the fleet holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Publishers {
    /// The serial of the last change (0: no key was ever trusted).
    pub serial: u32,
    /// Every key ever trusted, revoked ones included.
    pub keys: BTreeMap<PublicKey, Publisher>,
    /// The signed rotations by serial, for devices that are behind.
    pub rotations: BTreeMap<u32, Box<SignedRotation>>,
}

impl Publishers {
    /// Whether `rotation` is the next change of the chain: serial, change and key as the event
    /// says, signed by a key trusted now.
    fn follows(
        &self,
        rotation: &SignedRotation,
        serial: u32,
        change: TrustChange,
        key: &PublicKey,
    ) -> bool {
        let r = &rotation.rotation;
        r.serial == serial
            && r.change == change
            && r.key == *key
            && self.trusted().contains(&rotation.signer)
            && verify_rotation(rotation).is_ok()
    }

    /// Folds one event of the `trust` aggregate; others are ignored, and so is a change that
    /// does not follow the chain. Returns whether it was folded in.
    pub fn apply(&mut self, event: &Event, at: DateTime<Utc>) -> bool {
        match event {
            Event::PublisherTrusted(e) => {
                let next = self.serial + 1;
                let valid = e.serial == next
                    && match &e.rotation {
                        None => self.serial == 0,
                        Some(r) => self.follows(r, next, TrustChange::Trust, &e.public_key),
                    };
                if !valid {
                    return false;
                }
                self.serial = next;
                self.keys.insert(
                    e.public_key,
                    Publisher {
                        name: e.name.clone(),
                        trusted_at: e.serial,
                        since: at,
                        revoked: None,
                    },
                );
                if let Some(rotation) = &e.rotation {
                    self.rotations.insert(e.serial, rotation.clone());
                }
                true
            }
            Event::PublisherRevoked(e) => {
                let next = self.serial + 1;
                if e.serial != next
                    || !self.follows(&e.rotation, next, TrustChange::Revoke, &e.public_key)
                {
                    return false;
                }
                self.serial = next;
                if let Some(publisher) = self.keys.get_mut(&e.public_key) {
                    publisher.revoked = Some((e.serial, e.reason.clone()));
                }
                self.rotations.insert(e.serial, e.rotation.clone());
                true
            }
            _ => false,
        }
    }

    /// The keys trusted now.
    pub fn trusted(&self) -> Vec<PublicKey> {
        self.keys
            .iter()
            .filter(|(_, p)| p.revoked.is_none())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Whether `key` was trusted once and is revoked now.
    pub fn is_revoked(&self, key: &PublicKey) -> bool {
        self.keys.get(key).is_some_and(|p| p.revoked.is_some())
    }

    /// The rotations a device holding `serial` lacks, in order (none for an open device: it
    /// can verify no rotation).
    pub fn missing_after(&self, serial: u32) -> Vec<&SignedRotation> {
        if serial == 0 {
            return Vec::new();
        }
        self.rotations
            .range(serial + 1..)
            .map(|(_, r)| &**r)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use wasmbed_device_core::release::sign_rotation;
    use wasmbed_schemas::event::{PublisherRevoked, PublisherTrusted};
    use wasmbed_schemas::release::rotation::TrustRotation;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn public(k: &SigningKey) -> PublicKey {
        PublicKey(k.verifying_key().to_bytes())
    }

    fn rotation(serial: u32, change: TrustChange, of: u8, by: u8) -> Box<SignedRotation> {
        Box::new(sign_rotation(
            TrustRotation {
                serial,
                change,
                key: public(&key(of)),
                issued_at: 1,
            },
            &key(by),
        ))
    }

    fn trusted(of: u8, serial: u32, rotation: Option<Box<SignedRotation>>) -> Event {
        PublisherTrusted {
            public_key: public(&key(of)),
            name: format!("key {of}"),
            serial,
            rotation,
        }
        .into()
    }

    /// Only changes that follow the chain are folded in, whoever appended the event.
    #[test]
    fn the_fold_follows_only_a_signed_chain() {
        let mut p = Publishers::default();
        let revoked = |of, serial, by| -> Event {
            PublisherRevoked {
                public_key: public(&key(of)),
                reason: String::new(),
                serial,
                rotation: rotation(serial, TrustChange::Revoke, of, by),
            }
            .into()
        };
        let steps: Vec<(&str, Event, bool)> = vec![
            ("a later serial first", trusted(1, 2, None), false),
            ("the first key", trusted(1, 1, None), true),
            (
                "a second key without a rotation",
                trusted(2, 2, None),
                false,
            ),
            (
                "signed by an untrusted key",
                trusted(2, 2, Some(rotation(2, TrustChange::Trust, 2, 2))),
                false,
            ),
            (
                "a rotation for another key",
                trusted(2, 2, Some(rotation(2, TrustChange::Trust, 3, 1))),
                false,
            ),
            (
                "signed by the first key",
                trusted(2, 2, Some(rotation(2, TrustChange::Trust, 2, 1))),
                true,
            ),
            (
                "a repeat",
                trusted(2, 2, Some(rotation(2, TrustChange::Trust, 2, 1))),
                false,
            ),
            ("a revocation", revoked(1, 3, 2), true),
            ("signed by the revoked key", revoked(2, 4, 1), false),
        ];
        for (name, event, folded) in steps {
            assert_eq!(p.apply(&event, Utc::now()), folded, "{name}");
        }
        assert_eq!(p.serial, 3);
        assert_eq!(p.trusted(), [public(&key(2))]);
        assert!(p.is_revoked(&public(&key(1))));
        assert_eq!(p.missing_after(1).len(), 2);
        assert!(p.missing_after(0).is_empty(), "an open device gets none");
    }
}
