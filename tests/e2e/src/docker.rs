//! A real Docker engine for tests: Debian's `dockerd`, started by hand as root with its own
//! data root and socket; no bridge and no iptables unless the test needs isolated networks.
//! Images are built here from files of this machine (`docker import`), never pulled.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `dockerd`, stopped on drop.
pub struct DockerEngine {
    child: Child,
    dir: tempfile::TempDir,
    /// Its socket, as `DOCKER_HOST` names it.
    pub host: String,
}

fn run(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl DockerEngine {
    /// Starts an engine, or says why none can run here.
    pub fn start() -> Result<Self, String> {
        Self::start_with(&["--bridge=none", "--iptables=false", "--ip6tables=false"])
    }

    /// An engine with its default networking: its `docker0` bridge and iptables rules, which
    /// isolate bridge networks from each other (without them the host routes between them, and
    /// a container cut from one network still reaches it through another). Only one such
    /// engine may run at a time (its bridge name is fixed).
    pub fn start_isolating() -> Result<Self, String> {
        Self::start_with(&[])
    }

    fn start_with(networking: &[&str]) -> Result<Self, String> {
        let dockerd = ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("dockerd is not installed (Debian's docker.io)")?;
        if run(Command::new("id").arg("-u"))?.trim() != "0" {
            return Err("dockerd needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let socket = dir.path().join("docker.sock");
        let log =
            std::fs::File::create(dir.path().join("dockerd.log")).map_err(|e| e.to_string())?;
        let child = Command::new(dockerd)
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(networking)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {dockerd}: {e}"))?;
        let engine = Self {
            child,
            host: format!("unix://{}", socket.display()),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if engine.docker(&["version"]).is_ok() {
                return Ok(engine);
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(engine.dir.path().join("dockerd.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!("dockerd did not come up: {tail:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs the docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("docker").arg("-H").arg(&self.host).args(args))
    }

    /// Builds image `tag` holding this machine's `qemu-system-arm` and the libraries it links.
    pub fn import_qemu_image(&self, tag: &str) -> Result<(), String> {
        let qemu = run(Command::new("sh").args(["-c", "command -v qemu-system-arm"]))?;
        let qemu = qemu.trim().to_owned();
        let ldd = run(Command::new("ldd").arg(&qemu))?;
        let mut files = vec![qemu];
        for line in ldd.lines() {
            // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = line
                .split("=>")
                .last()
                .and_then(|rest| rest.split_whitespace().next())
                .filter(|p| p.starts_with('/'));
            if let Some(path) = path {
                files.push(path.to_owned());
            }
        }
        let rootfs = self.dir.path().join("qemu-rootfs.tar");
        run(Command::new("tar")
            .arg("-chf")
            .arg(&rootfs)
            .arg("-C")
            .arg("/")
            .args(files.iter().map(|f| f.trim_start_matches('/'))))?;
        self.docker(&["import", &rootfs.display().to_string(), tag])?;
        Ok(())
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
