//! `wasmbed release keygen|sign|trust|revoke|list`: publisher keys, signed releases and the
//! fleet's trust chain; and the signing `app deploy` and `rollout start` do.
//!
//! Files:
//! - a publisher secret key is 64 hex digits (the Ed25519 seed) and a newline, mode 0600; its
//!   public key sits beside it as `<name>.pub`;
//! - a signed release is `<module>.release.json`, next to the module (JSON Schema:
//!   `schemas/json/release.json`). Beside, not inside: the signature covers the module's exact
//!   bytes, so nothing in the module has to be left out of the digest.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use wasmbed_bus::call;
use wasmbed_device_core::release::{manifest_for, sign_release, sign_rotation};
use wasmbed_schemas::command::{RevokePublisher, TrustPublisher};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::release::rotation::{TrustChange, TrustRotation};
use wasmbed_schemas::release::{Capabilities, SignedRelease};
use wasmbed_schemas::{AppId, PublicKey};

use crate::device::{Bus, fleet};

/// Where `up` keeps the fleet's first publisher key.
pub const STATE_KEY: &str = "publisher.key";

/// How a module is signed when it is uploaded.
#[derive(Args, Clone, Default)]
pub struct SigningArgs {
    /// Sign with this publisher key (default: `publisher.key` in the state directory of
    /// `wasmbed up`, when there is one).
    #[arg(long)]
    key: Option<PathBuf>,
    /// A release signed beforehand (`wasmbed release sign`) instead of signing here.
    #[arg(long, conflicts_with = "key")]
    release: Option<PathBuf>,
    /// Telemetry topics the app may publish on (comma separated); required when signing a
    /// module that imports `publish`.
    #[arg(long, value_delimiter = ',')]
    topics: Vec<String>,
    /// Send the module unsigned even when a key is at hand.
    #[arg(long, conflicts_with_all = ["key", "release"])]
    unsigned: bool,
    /// The state directory of `wasmbed up` (for its publisher key).
    #[arg(long, env = "WASMBED_STATE_DIR", default_value = ".state")]
    state_dir: PathBuf,
}

impl SigningArgs {
    /// `topics` unless `--topics` named some (an example's own topics).
    pub fn default_topics(&mut self, topics: &[&str]) {
        if self.topics.is_empty() {
            self.topics = topics.iter().map(|t| (*t).to_owned()).collect();
        }
    }

    /// The application a release given with `--release` is for.
    pub fn given_app(&self) -> Result<Option<AppId>> {
        self.release
            .as_deref()
            .map(|path| read_release(path).map(|r| r.manifest.app_id))
            .transpose()
    }

    /// The release to send with `module` as `version` of `app` under `limits`: the one given,
    /// one signed here, or none.
    pub fn release_for(
        &self,
        app: &AppId,
        version: u32,
        module: &[u8],
        limits: &Limits,
    ) -> Result<Option<SignedRelease>> {
        if self.unsigned {
            return Ok(None);
        }
        if let Some(path) = &self.release {
            return read_release(path).map(Some);
        }
        let key_path = match &self.key {
            Some(path) => path.clone(),
            None => {
                let path = self.state_dir.join(STATE_KEY);
                if !path.is_file() {
                    return Ok(None);
                }
                path
            }
        };
        let key = read_key(&key_path)?;
        let release = sign(&key, app, version, module, limits, &self.topics)?;
        eprintln!(
            "signed {app} v{version} with {} ({}): imports {}, topics {}",
            key_path.display(),
            public(&key),
            list(&release.manifest.capabilities.imports),
            list(&release.manifest.capabilities.topics),
        );
        Ok(Some(release))
    }
}

fn list<'a>(set: impl IntoIterator<Item = &'a String>) -> String {
    let items: Vec<&str> = set.into_iter().map(String::as_str).collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(",")
    }
}

/// A release of `module` granting exactly the host functions it imports, `topics`, and the
/// memory and fuel of `limits`.
pub fn sign(
    key: &SigningKey,
    app: &AppId,
    version: u32,
    module: &[u8],
    limits: &Limits,
    topics: &[String],
) -> Result<SignedRelease> {
    let facts = wasmbed_deployer::validate(module, limits)
        .map_err(|e| anyhow::anyhow!("the module: {e}"))?;
    if facts.imports.contains("publish") && topics.is_empty() {
        bail!(
            "the module imports publish: say which telemetry topics it may publish on with \
             --topics (e.g. --topics temperature)"
        );
    }
    let capabilities = Capabilities {
        imports: facts.imports,
        topics: topics.iter().cloned().collect(),
        max_memory_pages: limits.max_memory_pages,
        max_fuel_per_tick: limits.fuel_per_invocation,
    };
    let issued_at = chrono::Utc::now().timestamp().max(0).unsigned_abs();
    let manifest = manifest_for(app.clone(), version, module, capabilities, issued_at);
    sign_release(manifest, key).map_err(|e| anyhow::anyhow!("the manifest: {e}"))
}

pub fn public(key: &SigningKey) -> PublicKey {
    PublicKey(key.verifying_key().to_bytes())
}

/// Reads a publisher secret key file.
pub fn read_key(path: &Path) -> Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let seed = wasmbed_schemas::bytes::parse_hex::<32>(text.trim())
        .with_context(|| format!("{}: not a publisher key (64 hex digits)", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Makes a publisher key at `path` (0600) with its public key beside it; an existing one is
/// kept (returned as it is).
pub fn keygen(path: &Path) -> Result<SigningKey> {
    if path.exists() {
        return read_key(path);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{hex}\n").as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let public_path = path.with_extension("pub");
    std::fs::write(&public_path, format!("{}\n", public(&key)))
        .with_context(|| format!("writing {}", public_path.display()))?;
    Ok(key)
}

fn read_release(path: &Path) -> Result<SignedRelease> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a signed release", path.display()))
}

fn parse_public(text: &str) -> Result<PublicKey> {
    let text = match std::fs::read_to_string(text) {
        Ok(file) => file.trim().to_owned(),
        Err(_) => text.to_owned(),
    };
    PublicKey::from_hex(&text).with_context(|| {
        format!("{text:?} is neither a public key (64 hex digits) nor a file holding one")
    })
}

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Make a publisher key pair: FILE (secret, 0600) and FILE.pub.
    Keygen {
        /// The secret key file.
        #[arg(default_value = "publisher.key")]
        file: PathBuf,
    },
    /// Sign a module: writes MODULE.release.json beside it.
    Sign {
        /// The WASM module.
        module: PathBuf,
        /// The publisher key.
        #[arg(long)]
        key: PathBuf,
        /// The application.
        #[arg(long)]
        app_id: AppId,
        /// The version it becomes (`app deploy` prints it; 1 for a new application).
        #[arg(long)]
        version: u32,
        /// Telemetry topics it may publish on (comma separated).
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
        /// At most this many 64 KiB memory pages.
        #[arg(long, default_value_t = 2)]
        pages: u32,
        /// At most this much fuel per call of an export.
        #[arg(long, default_value_t = 1_000_000)]
        fuel: u64,
    },
    /// Trust a publisher key. The fleet's first key needs no signer; every later one is added
    /// by a rotation signed with a key the fleet (and its devices) trust now.
    Trust {
        #[command(flatten)]
        bus: Bus,
        /// The public key (hex) or a `.pub` file.
        public_key: String,
        /// A name for people.
        #[arg(long)]
        name: String,
        /// A trusted publisher key that signs the rotation.
        #[arg(long)]
        signer: Option<PathBuf>,
    },
    /// Revoke a publisher key with a rotation signed by a trusted key.
    Revoke {
        #[command(flatten)]
        bus: Bus,
        /// The public key (hex) or a `.pub` file.
        public_key: String,
        /// A trusted publisher key that signs the rotation.
        #[arg(long)]
        signer: PathBuf,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The fleet's publisher keys and the serial of its trust chain.
    List {
        #[command(flatten)]
        bus: Bus,
        /// How to print (`json`: the trust view, one object).
        #[arg(long, value_enum, default_value_t = crate::tail::Output::Text)]
        output: crate::tail::Output,
    },
}

pub async fn run(command: ReleaseCommand) -> Result<()> {
    match command {
        ReleaseCommand::Keygen { file } => {
            let existed = file.exists();
            let key = keygen(&file)?;
            let verb = if existed { "kept" } else { "wrote" };
            println!(
                "{verb} {} (secret) and {}: {}",
                file.display(),
                file.with_extension("pub").display(),
                public(&key)
            );
            Ok(())
        }
        ReleaseCommand::Sign {
            module,
            key,
            app_id,
            version,
            topics,
            pages,
            fuel,
        } => {
            let bytes =
                std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
            let limits = Limits {
                fuel_per_invocation: fuel,
                max_memory_pages: pages,
                tick_interval_ms: 1000,
            };
            let release = sign(&read_key(&key)?, &app_id, version, &bytes, &limits, &topics)?;
            let mut out = module.clone().into_os_string();
            out.push(".release.json");
            let out = PathBuf::from(out);
            std::fs::write(&out, serde_json::to_vec_pretty(&release)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
        ReleaseCommand::Trust {
            bus,
            public_key,
            name,
            signer,
        } => {
            let key = parse_public(&public_key)?;
            let client = bus.connect().await?;
            let serial = fleet(&client).await?.publishers.serial;
            let rotation = match (serial, signer) {
                (0, _) => None,
                (_, None) => bail!(
                    "the fleet trusts keys already: --signer must name one of them to sign the \
                     rotation"
                ),
                (_, Some(path)) => Some(rotate(&path, serial + 1, TrustChange::Trust, key)?),
            };
            let command = TrustPublisher {
                public_key: key,
                name,
                rotation,
            };
            call(&client, &command, bus.timeout).await?;
            println!("trusted {key} (trust serial {})", serial + 1);
            Ok(())
        }
        ReleaseCommand::Revoke {
            bus,
            public_key,
            signer,
            reason,
        } => {
            let key = parse_public(&public_key)?;
            let client = bus.connect().await?;
            let serial = fleet(&client).await?.publishers.serial;
            let rotation = rotate(&signer, serial + 1, TrustChange::Revoke, key)?;
            call(&client, &RevokePublisher { rotation, reason }, bus.timeout).await?;
            println!("revoked {key} (trust serial {})", serial + 1);
            Ok(())
        }
        ReleaseCommand::List { bus, output } => {
            let view = fleet(&bus.connect().await?).await?.trust_view();
            if let crate::tail::Output::Json = output {
                println!("{}", serde_json::to_string(&view)?);
                return Ok(());
            }
            println!("trust serial {}", view.serial);
            let mut table = crate::table::Table::new(&["PUBLIC KEY", "TRUSTED", "REVOKED", "NAME"]);
            for p in view.publishers {
                table.row(vec![
                    p.public_key.to_string(),
                    p.trusted_at.to_string(),
                    p.revoked_at.map_or("-".to_owned(), |s| s.to_string()),
                    p.name,
                ]);
            }
            table.print();
            Ok(())
        }
    }
}

fn rotate(
    signer: &Path,
    serial: u32,
    change: TrustChange,
    key: PublicKey,
) -> Result<wasmbed_schemas::release::rotation::SignedRotation> {
    let signer = read_key(signer)?;
    let issued_at = chrono::Utc::now().timestamp().max(0).unsigned_abs();
    Ok(sign_rotation(
        TrustRotation {
            serial,
            change,
            key,
            issued_at,
        },
        &signer,
    ))
}
