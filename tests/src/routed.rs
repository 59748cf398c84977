//! A client behind a router, added to a switched lab: the router sits on
//! the clients' segment (198.18.0.2) and reaches its own client subnet
//! (198.18.3.0/24) over a link whose MTU is smaller than Ethernet's, as a
//! tunnel or a VPN would have. The client's own interface keeps 1500 bytes,
//! so its SYN announces MSS 1460 and full-size answers reach the router,
//! which can only answer "fragmentation needed" to their source.
//!
//! ```text
//!  far (198.18.3.11, mtu 1500) ── (mtu N) rt (198.18.3.1 | 198.18.0.2) ── br0 ── eth0 [lb]
//! ```
//!
//! Path-MTU probing is off on the far client and on every backend
//! (`net.ipv4.tcp_mtu_probing=0`, also the kernel's default), so that only
//! the error, translated, can make a large answer arrive.

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::{
    lab::{Host, Lab},
    netns::{in_ns, ip},
};

/// The router's address on the clients' segment.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The routed client's subnet and address.
pub const FAR_NET: &str = "198.18.3.0/24";
pub const FAR_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 11);

fn no_mtu_probing(ns: &str) -> Result<()> {
    in_ns(ns, &["sysctl", "-qw", "net.ipv4.tcp_mtu_probing=0"]).map(|_| ())
}

impl Lab {
    /// Add the router and its client, with `mtu` on the router's link
    /// towards the client, and give the balancer the route to the client's
    /// subnet (as its operator would). Returns the client.
    ///
    /// # Errors
    /// When a namespace, link, address or route cannot be set up.
    pub fn add_routed_client(&mut self, mtu: u16) -> Result<Host> {
        let sw = self.sw();
        let rt = format!("{}-rt", self.prefix);
        let far = Host {
            name: "far".into(),
            ns: format!("{}-far", self.prefix),
            addr: FAR_CLIENT,
        };
        for ns in [&rt, &far.ns] {
            ip(&format!("netns add {ns}"))?;
            ip(&format!("-n {ns} link set lo up"))?;
        }
        ip(&format!(
            "link add eth0 netns {rt} type veth peer name rt netns {sw}"
        ))?;
        ip(&format!("-n {sw} link set rt master br0 up"))?;
        ip(&format!("-n {rt} addr add {ROUTER}/24 dev eth0"))?;
        ip(&format!("-n {rt} link set eth0 up"))?;
        ip(&format!(
            "link add eth1 netns {rt} mtu {mtu} type veth peer name eth0 netns {}",
            far.ns
        ))?;
        ip(&format!("-n {rt} addr add 198.18.3.1/24 dev eth1"))?;
        ip(&format!("-n {rt} link set eth1 up"))?;
        in_ns(&rt, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        ip(&format!("-n {rt} route add default via 198.18.0.1"))?;
        ip(&format!("-n {} addr add {}/24 dev eth0", far.ns, far.addr))?;
        ip(&format!("-n {} link set eth0 up", far.ns))?;
        ip(&format!("-n {} route add default via 198.18.3.1", far.ns))?;
        no_mtu_probing(&far.ns)?;
        for b in &self.backends {
            no_mtu_probing(&b.ns)?;
        }
        ip(&format!(
            "-n {} route add {FAR_NET} via {ROUTER}",
            self.balancer.ns
        ))?;
        Ok(far)
    }
}
