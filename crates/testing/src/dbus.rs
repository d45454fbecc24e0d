//! A private message bus for tests: a real `dbus-daemon` with a system-bus-like
//! configuration in a temporary directory, so that what the tool does on "the system
//! bus" (logind's reboot, the service) happens on a bus nobody else uses. Point a
//! process at it with [`PrivateBus::env`]. The daemon is killed when the value is
//! dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[derive(Debug)]
pub struct PrivateBus {
    daemon: Child,
    address: String,
    dir: PathBuf,
}

impl PrivateBus {
    /// Starts a bus listening on a socket in `dir` (which must exist). `service_dirs`
    /// are searched for `.service` files to activate.
    pub fn start(dir: &Path, service_dirs: &[&Path]) -> std::io::Result<Self> {
        let socket = dir.join("system_bus_socket");
        let services: String = service_dirs
            .iter()
            .map(|d| format!("  <servicedir>{}</servicedir>\n", d.display()))
            .collect();
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
{services}  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
            socket = socket.display()
        );
        let config_path = dir.join("bus.conf");
        std::fs::write(&config_path, config)?;
        // Its complaints (a system bus run by root cannot raise its fd limit here) go to
        // `bus.log` beside the socket.
        let log = std::fs::File::create(dir.join("bus.log"))?;
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        // The address is printed once the bus listens.
        let mut line = String::new();
        let stdout = daemon.stdout.take().expect("piped");
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line.trim().to_owned();
        if address.is_empty() {
            let _ = daemon.kill();
            let _ = daemon.wait();
            return Err(std::io::Error::other("dbus-daemon printed no address"));
        }
        Ok(PrivateBus {
            daemon,
            address,
            dir: dir.to_owned(),
        })
    }

    /// The bus address (`unix:path=…,guid=…`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The environment that makes a process take this bus for the system bus.
    pub fn env(&self) -> [(&'static str, &str); 1] {
        [("DBUS_SYSTEM_BUS_ADDRESS", self.address.as_str())]
    }

    /// The directory the bus's socket and configuration are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}
