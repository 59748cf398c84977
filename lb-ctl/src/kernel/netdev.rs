//! What the kernel says about a network device, over netlink: its kind and
//! veth peer and the XDP program attached to it (rtnetlink `RTM_GETLINK`),
//! and the XDP actions its driver can carry out (the `netdev` generic
//! netlink family, Linux 6.3+). [`crate::kernel::xdpmode`] decides from these.

use std::{fmt, io};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NetlinkDeserializable, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, Nla, NlasIterator, Parseable, ParseableParametrized, NLM_F_REQUEST,
};
use netlink_packet_generic::{
    ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd},
    GenlFamily, GenlHeader, GenlMessage,
};
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp, XdpAttached},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols, Socket, SocketAddr};

/// Bits of the `netdev` family's `xdp-features` (`enum netdev_xdp_act`).
pub mod xdp_act {
    /// XDP_PASS, XDP_DROP, XDP_ABORTED and XDP_TX in the driver.
    pub const BASIC: u64 = 1;
    /// XDP_REDIRECT out of the driver.
    pub const REDIRECT: u64 = 2;
    /// The device can transmit frames handed to it by XDP (`ndo_xdp_xmit`):
    /// redirect targets need it, and on veth XDP_TX goes the same way. A
    /// veth device has it only while its peer runs an XDP program or has
    /// GRO enabled (`veth_set_xdp_features` in the kernel's veth driver).
    pub const NDO_XMIT: u64 = 4;
}

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("netlink: {0}")]
    Io(#[from] io::Error),
    #[error("netlink: decoding the kernel's answer: {0}")]
    Decode(String),
    #[error("netlink: the kernel answered error {code} ({what})")]
    Kernel { code: i32, what: &'static str },
}

impl From<DecodeError> for NetdevError {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e.to_string())
    }
}

type Result<T, E = NetdevError> = std::result::Result<T, E>;

/// How an XDP program is attached to a device, as netlink reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Attached {
    #[default]
    None,
    Native,
    Generic,
    Other,
}

impl fmt::Display for Attached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Other => "offloaded or several",
        })
    }
}

/// A network device as rtnetlink describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// Administratively and operationally up.
    pub up: bool,
    /// `veth`, `bridge`, … (`None` for a physical device).
    pub kind: Option<String>,
    /// The other end of a veth pair: its ifindex…
    pub peer_ifindex: Option<u32>,
    /// …and the id, in this namespace, of the namespace it lives in (absent
    /// when it is in this one).
    pub peer_netnsid: Option<i32>,
    pub xdp: Attached,
    /// The attached XDP program's id (0: none).
    pub xdp_prog_id: u32,
}

impl Link {
    #[must_use]
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

/// Send one request and collect the answers up to the final ACK or DONE
/// (a dump: every batch up to DONE).
pub(crate) fn request<T>(protocol: isize, mut msg: NetlinkMessage<T>) -> Result<Vec<T>>
where
    T: NetlinkSerializable + NetlinkDeserializable + fmt::Debug,
{
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let dump =
        msg.header.flags & netlink_packet_core::NLM_F_DUMP == netlink_packet_core::NLM_F_DUMP;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut answers = Vec::new();
    let mut rx: Vec<u8> = Vec::with_capacity(65536);
    loop {
        rx.clear();
        let n = socket.recv(&mut rx, 0)?;
        let mut offset = 0;
        while offset < n {
            let m = NetlinkMessage::<T>::deserialize(&rx[offset..n])?;
            let len = m.header.length as usize;
            match m.payload {
                NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                NetlinkPayload::Done(_) => return Ok(answers),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(answers),
                        Some(code) => Err(NetdevError::Kernel {
                            code: code.get(),
                            what: "request refused",
                        }),
                    };
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
        if !dump && !answers.is_empty() {
            return Ok(answers);
        }
    }
}

/// The device `ifindex` of this namespace.
///
/// # Errors
/// When netlink fails or the device does not exist.
pub fn link(ifindex: u32) -> Result<Link> {
    link_in(ifindex, None)
}

/// The device `ifindex` of the namespace this namespace knows as `netnsid`
/// (`IFLA_TARGET_NETNSID`): how a veth device's peer is seen from here.
///
/// # Errors
/// When netlink fails or the device does not exist.
pub fn link_in(ifindex: u32, netnsid: Option<i32>) -> Result<Link> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    if let Some(id) = netnsid {
        msg.attributes.push(LinkAttribute::IfNetnsId(id));
    }
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetLink(msg));
    req.header.flags = NLM_F_REQUEST;
    let answers = request(protocols::NETLINK_ROUTE, req)?;
    let msg = answers
        .into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .ok_or(NetdevError::Kernel {
            code: -libc::ENODEV,
            what: "no such device",
        })?;
    let mut link = Link {
        ifindex: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        ..Link::default()
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Link(i) => link.peer_ifindex = Some(i),
            LinkAttribute::LinkNetNsId(i) => link.peer_netnsid = Some(i),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(match kind {
                            InfoKind::Veth => "veth".to_string(),
                            other => other.to_string(),
                        });
                    }
                }
            }
            LinkAttribute::Xdp(xdp) => {
                for x in xdp {
                    match x {
                        LinkXdp::Attached(a) => {
                            link.xdp = match a {
                                XdpAttached::None => Attached::None,
                                XdpAttached::Driver => Attached::Native,
                                XdpAttached::SocketBuffer => Attached::Generic,
                                _ => Attached::Other,
                            };
                        }
                        LinkXdp::ProgId(id) => link.xdp_prog_id = id,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(link)
}

/// A request or answer of the `netdev` generic netlink family.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NetdevMsg {
    cmd: u8,
    nlas: Vec<DefaultNla>,
}

const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

impl GenlFamily for NetdevMsg {
    fn family_name() -> &'static str {
        "netdev"
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        1
    }
}

impl Emitable for NetdevMsg {
    fn buffer_len(&self) -> usize {
        self.nlas.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.nlas.as_slice().emit(buffer);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for NetdevMsg {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let nlas = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| DefaultNla::parse(&nla)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            cmd: header.cmd,
            nlas,
        })
    }
}

/// The id the kernel gave a generic netlink family, `None` when the kernel
/// does not have it.
fn family_id(name: &str) -> Result<Option<u16>> {
    let mut msg = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
    });
    msg.finalize();
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST;
    match request(protocols::NETLINK_GENERIC, req) {
        Ok(answers) => Ok(answers.iter().find_map(|a| {
            a.payload.nlas.iter().find_map(|n| match n {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
        })),
        Err(NetdevError::Kernel { code, .. }) if code == -libc::ENOENT => Ok(None),
        Err(e) => Err(e),
    }
}

/// The XDP actions device `ifindex` supports ([`xdp_act`] bits), or `None`
/// on a kernel older than 6.3, which does not report them.
///
/// # Errors
/// When netlink fails.
pub fn xdp_features(ifindex: u32) -> Result<Option<u64>> {
    let Some(family) = family_id("netdev")? else {
        return Ok(None);
    };
    let mut msg = GenlMessage::from_payload(NetdevMsg {
        cmd: NETDEV_CMD_DEV_GET,
        nlas: vec![DefaultNla::new(
            NETDEV_A_DEV_IFINDEX,
            ifindex.to_ne_bytes().to_vec(),
        )],
    });
    msg.set_resolved_family_id(family);
    msg.finalize();
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST;
    let answers = request(protocols::NETLINK_GENERIC, req)?;
    Ok(answers.iter().find_map(|a| {
        a.payload.nlas.iter().find_map(|n| {
            (n.kind() == NETDEV_A_DEV_XDP_FEATURES).then(|| {
                let mut v = [0u8; 8];
                let mut bytes = vec![0u8; n.value_len()];
                n.emit_value(&mut bytes);
                let len = bytes.len().min(8);
                v[..len].copy_from_slice(&bytes[..len]);
                u64::from_ne_bytes(v)
            })
        })
    }))
}
