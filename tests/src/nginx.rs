//! A real nginx (Debian's `/usr/sbin/nginx`) as the load balancer in front of several server
//! instances: `tests/nginx/instances.conf.in` filled in and started in the foreground, as a
//! non-root child process, in a temporary directory of its own on a free loopback port (the way
//! `scripts/bench` starts its nginx).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx (stopped on drop).
pub struct Nginx {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
    child: Child,
}

/// The nginx binary: `HATTAMA_TEST_NGINX` or Debian's.
fn binary() -> PathBuf {
    std::env::var_os("HATTAMA_TEST_NGINX").map_or_else(|| "/usr/sbin/nginx".into(), PathBuf::from)
}

impl Nginx {
    /// Starts nginx balancing round robin over `upstreams`; waits until it accepts connections.
    pub fn start(upstreams: &[SocketAddr]) -> Self {
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("nginx/instances.conf.in");
        let template = std::fs::read_to_string(&template).expect("read the nginx template");
        let lines: Vec<String> = upstreams
            .iter()
            .map(|a| format!("        server {a} max_fails=1 fail_timeout=1s;"))
            .collect();
        let root = std::process::Command::new("id").arg("-u").output().expect("id -u");
        let user = if String::from_utf8_lossy(&root.stdout).trim() == "0" {
            "user root root;"
        } else {
            ""
        };
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("nginx dir");
            std::fs::create_dir(dir.path().join("body-temp")).expect("body-temp");
            // A port nobody listens on; if another process takes it first, nginx fails and
            // we try another.
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port");
            // Filled in outside comments only (the template's comments name the placeholders).
            let fill = |line: &str| {
                if line.trim_start().starts_with('#') {
                    return line.to_owned();
                }
                line.replace("@DIR@", &dir.path().display().to_string())
                    .replace("@PORT@", &port.port().to_string())
                    .replace("@USER@", user)
                    .replace("@UPSTREAMS@", &lines.join("\n"))
            };
            let config: Vec<String> = template.lines().map(fill).collect();
            let config = config.join("\n");
            let file = dir.path().join("nginx.conf");
            std::fs::write(&file, config).expect("write nginx.conf");
            let mut child = Command::new(binary())
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("start {} (scripts/test installs it): {e}", binary().display())
                });
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(port).is_ok() {
                    return Self { url: format!("http://{port}"), dir, child };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
            eprintln!(
                "nginx did not start on {port}: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
        }
        panic!("nginx did not start");
    }

    /// The process id of its master process (its worker is a child of it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The access log: one line per request, `METHOD URI STATUS "UPSTREAM[, UPSTREAM…]"`.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// nginx's error log.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// SIGTERM: the master stops its workers, then itself (a SIGKILL would leave the workers).
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
