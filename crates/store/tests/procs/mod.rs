//! `redis-server` processes the store's own tests start on free ports (the Sentinel and
//! Cluster tests), each killed when dropped.

use std::process::{Child, Command, Stdio};

/// A free TCP port on the loopback address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One redis-server process (a data node, a sentinel or a cluster node), killed when dropped.
pub struct Proc(Child);

impl Proc {
    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `bin` with `args`, its output discarded.
pub fn start(bin: &str, args: &[&str]) -> Proc {
    Proc(
        Command::new(bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server"),
    )
}
