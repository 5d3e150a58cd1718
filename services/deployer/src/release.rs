//! The deployer's check of a release before it records the module: the same verification the
//! device does (so a bad release fails at the door, not on a thousand devices), plus what only
//! the deployer knows — the fleet's policy, the version this upload becomes, and what the
//! module really imports.
//!
//! The device checks again whatever the deployer decided: this check is for the operator's
//! sake, the device's is the one that protects it.

use wasmbed_device_core::release::verify_release;
use wasmbed_fleet::Publishers;
use wasmbed_schemas::AppId;
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::host_api;
use wasmbed_schemas::release::{Refusal, SignedRelease};

use crate::ModuleFacts;

/// A module about to be recorded as a version of an application.
pub(crate) struct Upload<'a> {
    /// The application.
    pub(crate) app: &'a AppId,
    /// The version it will be.
    pub(crate) version: u32,
    /// Its bytes.
    pub(crate) module: &'a [u8],
    /// What validation found in it.
    pub(crate) facts: &'a ModuleFacts,
    /// The limits it will run under.
    pub(crate) limits: &'a Limits,
    /// Its signed release, if it has one.
    pub(crate) release: Option<&'a SignedRelease>,
}

/// A release the deployer will not record: the typed reason and what to tell the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) refusal: Refusal,
    pub(crate) message: String,
}

fn refused(refusal: Refusal, message: impl Into<String>) -> Refused {
    Refused {
        refusal,
        message: message.into(),
    }
}

/// Whether `upload` may be recorded under the fleet's `publishers` and policy.
pub(crate) fn judge(
    upload: &Upload<'_>,
    publishers: &Publishers,
    require_signed: bool,
) -> Result<(), Refused> {
    let Some(release) = upload.release else {
        return if require_signed {
            Err(refused(
                Refusal::Unsigned,
                "this fleet runs only signed releases (require_signed); sign the module with \
                 `wasmbed release sign` and send the release with it",
            ))
        } else {
            Ok(())
        };
    };
    if publishers.is_revoked(&release.publisher) {
        return Err(refused(
            Refusal::RevokedKey,
            format!("publisher key {} was revoked", release.publisher),
        ));
    }
    verify_release(release, &publishers.trusted(), upload.app, upload.module).map_err(|r| {
        let detail = match r {
            Refusal::UntrustedKey => format!(
                "publisher key {} is not trusted by this fleet (wasmbed release trust)",
                release.publisher
            ),
            Refusal::OtherRelease => format!(
                "the release is for application {}, not {}",
                release.manifest.app_id, upload.app
            ),
            other => other.to_string(),
        };
        refused(r, detail)
    })?;
    let manifest = &release.manifest;
    if manifest.version != upload.version {
        return Err(refused(
            Refusal::OtherRelease,
            format!(
                "the release is signed for version {}; this module becomes version {} of {} \
                 (sign it again with --version {})",
                manifest.version, upload.version, upload.app, upload.version
            ),
        ));
    }
    let caps = &manifest.capabilities;
    if let Some(name) = upload.facts.imports.difference(&caps.imports).next() {
        return Err(refused(
            Refusal::Capability,
            format!("the module imports {name}, which its release does not grant"),
        ));
    }
    if let Some(name) = caps
        .imports
        .iter()
        .find(|name| host_api::function(name).is_none())
    {
        return Err(refused(
            Refusal::Capability,
            format!("the release grants {name}, which is no host function"),
        ));
    }
    if let Some(topic) = caps.topics.iter().find(|t| !host_api::is_valid_topic(t)) {
        return Err(refused(
            Refusal::Manifest,
            format!("the release grants topic {topic:?}, which is no valid topic"),
        ));
    }
    let limits = upload.limits;
    if limits.max_memory_pages > caps.max_memory_pages
        || limits.fuel_per_invocation > caps.max_fuel_per_tick
    {
        return Err(refused(
            Refusal::Limits,
            format!(
                "limits ({} pages, {} fuel per call) exceed what the release allows ({} pages, \
                 {} fuel per tick)",
                limits.max_memory_pages,
                limits.fuel_per_invocation,
                caps.max_memory_pages,
                caps.max_fuel_per_tick
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use ed25519_dalek::SigningKey;
    use wasmbed_device_core::release::{manifest_for, sign_release, sign_rotation};
    use wasmbed_example_apps::COUNTER;
    use wasmbed_schemas::event::{Event, PublisherRevoked, PublisherTrusted};
    use wasmbed_schemas::release::Capabilities;
    use wasmbed_schemas::release::rotation::{TrustChange, TrustRotation};
    use wasmbed_schemas::{PublicKey, host_api::FUNCTIONS};

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn public(k: &SigningKey) -> PublicKey {
        PublicKey(k.verifying_key().to_bytes())
    }

    fn app() -> AppId {
        AppId::new("counter").unwrap_or_else(|_| unreachable!())
    }

    fn limits() -> Limits {
        Limits {
            fuel_per_invocation: 100_000,
            max_memory_pages: 2,
            tick_interval_ms: 100,
        }
    }

    fn caps(imports: &[&str], topics: &[&str]) -> Capabilities {
        Capabilities {
            imports: imports.iter().map(|s| (*s).to_owned()).collect(),
            topics: topics.iter().map(|s| (*s).to_owned()).collect(),
            max_memory_pages: 2,
            max_fuel_per_tick: 100_000,
        }
    }

    fn release(version: u32, caps: Capabilities, by: &SigningKey) -> SignedRelease {
        sign_release(manifest_for(app(), version, COUNTER, caps, 1), by)
            .unwrap_or_else(|_| unreachable!())
    }

    /// Key 1 trusted first, key 2 trusted by key 1, then key 2 revoked.
    fn publishers() -> Publishers {
        let mut p = Publishers::default();
        let rotation = |serial, change| {
            sign_rotation(
                TrustRotation {
                    serial,
                    change,
                    key: public(&key(2)),
                    issued_at: 1,
                },
                &key(1),
            )
        };
        let events: [Event; 3] = [
            PublisherTrusted {
                public_key: public(&key(1)),
                name: "one".into(),
                serial: 1,
                rotation: None,
            }
            .into(),
            PublisherTrusted {
                public_key: public(&key(2)),
                name: "two".into(),
                serial: 2,
                rotation: Some(Box::new(rotation(2, TrustChange::Trust))),
            }
            .into(),
            PublisherRevoked {
                public_key: public(&key(2)),
                reason: "leaked".into(),
                serial: 3,
                rotation: Box::new(rotation(3, TrustChange::Revoke)),
            }
            .into(),
        ];
        for e in &events {
            p.apply(e, Utc::now());
        }
        p
    }

    #[test]
    fn every_way_a_release_fails_at_the_door() {
        let facts = crate::validate(COUNTER, &limits()).unwrap_or_else(|e| panic!("{e}"));
        let all: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
        let needed: Vec<&str> = facts.imports.iter().map(String::as_str).collect();
        let good = release(1, caps(&all, &["count"]), &key(1));
        let mut greedy = limits();
        greedy.fuel_per_invocation += 1;
        type Case = (
            &'static str,
            Option<SignedRelease>,
            u32,
            Limits,
            bool,
            Option<Refusal>,
        );
        let cases: Vec<Case> = vec![
            (
                "signed, matching",
                Some(good.clone()),
                1,
                limits(),
                true,
                None,
            ),
            ("unsigned, policy off", None, 1, limits(), false, None),
            (
                "unsigned, policy on",
                None,
                1,
                limits(),
                true,
                Some(Refusal::Unsigned),
            ),
            (
                "stranger",
                Some(release(1, caps(&all, &[]), &key(9))),
                1,
                limits(),
                true,
                Some(Refusal::UntrustedKey),
            ),
            (
                "revoked",
                Some(release(1, caps(&all, &[]), &key(2))),
                1,
                limits(),
                true,
                Some(Refusal::RevokedKey),
            ),
            (
                "next version",
                Some(good.clone()),
                2,
                limits(),
                true,
                Some(Refusal::OtherRelease),
            ),
            (
                "more fuel",
                Some(good),
                1,
                greedy,
                true,
                Some(Refusal::Limits),
            ),
            (
                "import not granted",
                Some(release(1, caps(&needed[1..], &[]), &key(1))),
                1,
                limits(),
                true,
                Some(Refusal::Capability),
            ),
            (
                "no such function",
                Some(release(
                    1,
                    caps(&[&needed[..], &["format_disk"]].concat(), &[]),
                    &key(1),
                )),
                1,
                limits(),
                true,
                Some(Refusal::Capability),
            ),
            (
                "bad topic",
                Some(release(1, caps(&all, &["a\nb"]), &key(1))),
                1,
                limits(),
                true,
                Some(Refusal::Manifest),
            ),
        ];
        let publishers = publishers();
        for (name, release, version, limits, require, expected) in cases {
            let upload = Upload {
                app: &app(),
                version,
                module: COUNTER,
                facts: &facts,
                limits: &limits,
                release: release.as_ref(),
            };
            let verdict = judge(&upload, &publishers, require);
            assert_eq!(verdict.err().map(|r| r.refusal), expected, "{name}");
        }
        let mut changed = COUNTER.to_vec();
        changed[10] ^= 1;
        let signed = release(1, caps(&all, &[]), &key(1));
        let upload = Upload {
            app: &app(),
            version: 1,
            module: &changed,
            facts: &facts,
            limits: &limits(),
            release: Some(&signed),
        };
        assert_eq!(
            judge(&upload, &publishers, true).err().map(|r| r.refusal),
            Some(Refusal::Module)
        );
    }
}
