//! The Wasmbed NATS users of one server: a fresh password each, given to the server as
//! environment variables (`nats/permissions.conf` reads them) and to each service, which
//! connects with [`connect_options`].

use std::path::{Path, PathBuf};

use wasmbed_schemas::permissions::Principal;

/// A password per [`Principal`], made when the server is set up.
#[derive(Clone)]
pub struct NatsUsers {
    passwords: Vec<(Principal, String)>,
}

impl std::fmt::Debug for NatsUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsUsers(..)")
    }
}

impl NatsUsers {
    /// 128 random bits per user, as hex.
    pub fn generate() -> Result<Self, std::io::Error> {
        let mut passwords = Vec::new();
        for principal in Principal::ALL {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
            let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
            passwords.push((principal, hex));
        }
        Ok(Self { passwords })
    }

    /// The password of `principal`.
    pub fn password(&self, principal: Principal) -> &str {
        self.passwords
            .iter()
            .find(|(p, _)| *p == principal)
            .map(|(_, password)| password.as_str())
            .unwrap_or_default()
    }

    /// The server's environment: `WASMBED_NATS_PASSWORD_<USER>=<password>` for every user.
    pub fn env(&self) -> Vec<(String, String)> {
        self.passwords
            .iter()
            .map(|(p, password)| (p.password_variable(), password.clone()))
            .collect()
    }
}

/// Writes the server's config into `dir`: `nats-server.conf` (`base`, e.g. the project's
/// `nats/nats-server.conf`), `permissions.conf` (`permissions`, `nats/permissions.conf`) and
/// `nats-users.conf`, which includes both (nats-server resolves includes relative to the
/// including file) and is the file to run. With `no_auth_user`, a client that presents no
/// credentials is that user (`wasmbed up` on loopback: the CLI is the operator without a
/// password); without it, such a client is refused. Returns the path of `nats-users.conf`.
pub fn write_secured_config(
    dir: &Path,
    base: &str,
    permissions: &str,
    no_auth_user: Option<Principal>,
) -> Result<PathBuf, std::io::Error> {
    std::fs::write(dir.join("nats-server.conf"), base)?;
    std::fs::write(dir.join("permissions.conf"), permissions)?;
    let mut conf = String::from("include \"nats-server.conf\"\ninclude \"permissions.conf\"\n");
    if let Some(user) = no_auth_user {
        conf.push_str(&format!("no_auth_user: \"{}\"\n", user.name()));
    }
    let path = dir.join("nats-users.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

/// How often a service pings its server. A connection cut without a reset (a partition: no
/// FIN, no RST) is noticed after two unanswered pings: about 3 s at this interval instead of
/// about 2 min at the client's default, which is what lets a gateway cut off from the bus send
/// its devices elsewhere. One ping a second per service connection costs nothing measurable.
pub const PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Connect options for `principal`: its name, its reply prefix (its permissions allow no
/// other), a short ping interval, and its user and password when one is given (a server
/// without users takes none).
pub fn connect_options(principal: Principal, password: Option<&str>) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new()
        .name(format!("wasmbed-{}", principal.name()))
        .ping_interval(PING_INTERVAL)
        .custom_inbox_prefix(principal.inbox_prefix());
    match password {
        Some(password) => {
            options.user_and_password(principal.name().to_owned(), password.to_owned())
        }
        None => options,
    }
}

/// `options` with the user and password written in `url` (`nats://user:password@host:port`),
/// if it has them: async-nats itself ignores credentials in a URL.
pub fn with_url_credentials(
    options: async_nats::ConnectOptions,
    url: &str,
) -> async_nats::ConnectOptions {
    match url.parse::<async_nats::ServerAddr>() {
        Ok(addr) => match (addr.username(), addr.password()) {
            (Some(user), Some(password)) => {
                options.user_and_password(user.to_owned(), password.to_owned())
            }
            _ => options,
        },
        Err(_) => options,
    }
}
