//! The chaos cluster's network: every host (the broker, each node) lives in a network
//! namespace of its own, joined to the harness's namespace by a veth pair and routed
//! through it. Partitioning a host takes its end of the pair down: packets to and from
//! it are dropped silently, as on a real network, and nothing leaves this machine.
//!
//! A run claims a slot (a lock file) that gives it a private /24 (`10.213.<slot>.0`) and
//! unique interface names, so concurrent runs do not collide, and a slot left behind by a
//! killed run is cleaned when it is next claimed.

use std::collections::BTreeSet;
use std::fs::File;
use std::process::Command;

use anyhow::{Context, bail};

/// Number of slots (/24 subnets of 10.213.0.0/16 with room for 63 hosts each).
const SLOTS: u32 = 64;
/// Host index of the broker; nodes use their node id.
pub const BROKER_HOST: u32 = 0;

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The namespaces of one run; deleted (with their interfaces) on drop.
pub struct Network {
    slot: u32,
    hosts: BTreeSet<u32>,
    _lock: File,
}

impl Network {
    /// Claims a free slot, removes what a dead run left in it and enables forwarding.
    ///
    /// # Errors
    /// When no slot is free, or `ip` / forwarding are unavailable (needs root).
    pub fn claim() -> anyhow::Result<Self> {
        let dir = std::path::Path::new("/var/tmp/quiver-chaos/slots");
        std::fs::create_dir_all(dir).context("create the slot lock directory")?;
        for slot in 0..SLOTS {
            let lock = File::create(dir.join(format!("{slot}.lock")))
                .context("create a slot lock file")?;
            if lock.try_lock().is_err() {
                continue;
            }
            let net = Network {
                slot,
                hosts: BTreeSet::new(),
                _lock: lock,
            };
            net.clean_stale();
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .context("enable IPv4 forwarding (the chaos suite runs as root)")?;
            return Ok(net);
        }
        bail!("all {SLOTS} network slots are in use")
    }

    fn ns(&self, host: u32) -> String {
        format!("qc{}-{host}", self.slot)
    }

    fn outer_if(&self, host: u32) -> String {
        format!("qc{}r{host}", self.slot)
    }

    fn inner_if(&self, host: u32) -> String {
        format!("qc{}n{host}", self.slot)
    }

    fn gateway(&self, host: u32) -> String {
        format!("10.213.{}.{}", self.slot, 4 * host + 1)
    }

    /// The address of `host` inside its namespace.
    pub fn addr(&self, host: u32) -> String {
        format!("10.213.{}.{}", self.slot, 4 * host + 2)
    }

    /// The namespace name of `host`, for `ip netns exec`.
    pub fn namespace(&self, host: u32) -> String {
        self.ns(host)
    }

    /// Creates `host`'s namespace and link (idempotent: an existing one is kept).
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn add_host(&mut self, host: u32) -> anyhow::Result<()> {
        anyhow::ensure!(host < 63, "host index {host} is out of range (at most 62)");
        if self.hosts.contains(&host) {
            return Ok(());
        }
        let (ns, outer, inner) = (self.ns(host), self.outer_if(host), self.inner_if(host));
        let gw = self.gateway(host);
        ip(&["netns", "add", &ns])?;
        self.hosts.insert(host);
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ])?;
        ip(&["link", "set", &inner, "netns", &ns])?;
        ip(&["addr", "add", &format!("{gw}/30"), "dev", &outer])?;
        ip(&["link", "set", &outer, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/30", self.addr(host)),
            "dev",
            &inner,
        ])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        self.heal(host)
    }

    /// Cuts `host` off: its end of the link goes down, so nothing reaches it and it
    /// reaches nothing (no resets: connections hang as in a real partition).
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn partition(&self, host: u32) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.ns(host),
            "link",
            "set",
            &self.inner_if(host),
            "down",
        ])
    }

    /// Undoes [`Network::partition`] (taking the link down dropped its default route).
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn heal(&self, host: u32) -> anyhow::Result<()> {
        let ns = self.ns(host);
        ip(&["-n", &ns, "link", "set", &self.inner_if(host), "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "replace",
            "default",
            "via",
            &self.gateway(host),
        ])
    }

    fn clean_stale(&self) {
        let prefix = format!("qc{}-", self.slot);
        for line in ip_output(&["netns", "list"]).lines() {
            if let Some(name) = line.split_whitespace().next()
                && name.starts_with(&prefix)
            {
                kill_namespace_processes(name);
                let _ = ip(&["netns", "del", name]);
            }
        }
        let outer = format!("qc{}r", self.slot);
        for line in ip_output(&["-o", "link", "show"]).lines() {
            if let Some(name) = line.split(':').nth(1).map(str::trim)
                && let Some(name) = name.split('@').next()
                && name.starts_with(&outer)
            {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// Kills what still runs in namespace `ns` (processes of a dead run).
fn kill_namespace_processes(ns: &str) {
    for pid in ip_output(&["netns", "pids", ns]).split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in &self.hosts {
            let ns = self.ns(*host);
            kill_namespace_processes(&ns);
            // Deleting the namespace deletes its end of the veth pair, and with it ours.
            let _ = ip(&["netns", "del", &ns]);
            let _ = ip(&["link", "del", &self.outer_if(*host)]);
        }
    }
}
