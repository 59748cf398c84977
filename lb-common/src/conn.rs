//! Connection and persistence table entries, how TCP flags move a
//! connection through its states, and the idle timeouts of each state
//! (`Settings`, the only entry of `SETTINGS`).

/// A flow as seen on the wire: the key of the connection table (`CONNS`).
///
/// Each connection has two entries: the *forward* entry keyed by
/// (client, VIP) and the *reply* entry keyed by (backend, client). The data
/// path looks up every packet by its own tuple, so both directions of an
/// established connection cost a single lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

/// Bits of [`Conn::flags`].
pub mod conn_flags {
    /// The entry is the reply half (backend to client): the rewrite is SNAT
    /// back to the VIP. Without it the entry is the forward half: DNAT to the
    /// backend.
    pub const REPLY: u8 = 1;
    /// The connection belongs to a VIP with persistence; its forward packets
    /// keep the session `(vip_id, session_client)` alive.
    pub const SESSION: u8 = 2;
    /// (Forward half of an unconfirmed flow, in `HALF_OPEN`.) The backend
    /// has answered: a SYN-ACK for TCP, any datagram for UDP.
    pub const ANSWERED: u8 = 4;
    /// The backend came from the client's live session (not from a pending
    /// one or the scheduler): confirming the connection renews that session
    /// instead of starting a new one.
    pub const FROM_SESSION: u8 = 8;
    /// Direct server return: the backend answers the client itself; only
    /// the forward direction is seen and recorded, and packets keep their
    /// addresses (only the MAC addresses are rewritten).
    pub const DSR: u8 = 16;
    /// The VIP's sessions are shared with the other balancer hosts
    /// (`cluster:`): a session this connection records is announced on
    /// the `SESSION_EVENTS` ring for the controller to publish.
    pub const SHARED: u8 = 32;
}

/// Whether a reply packet (backend to client) with TCP `flags` answers an
/// unconfirmed flow: a SYN-ACK for TCP, anything for UDP.
#[inline(always)]
#[must_use]
pub const fn answers(is_tcp: bool, flags: u8) -> bool {
    !is_tcp || flags & (tcp_flags::SYN | tcp_flags::ACK) == (tcp_flags::SYN | tcp_flags::ACK)
}

/// Whether a forward packet (client to VIP) with TCP `flags` confirms the
/// unconfirmed flow whose entry has `conn_flags` (bits of [`conn_flags`]): the backend has answered and the client goes on —
/// for TCP with the ACK that completes the handshake (no SYN, no RST), for
/// UDP with its next datagram. A spoofed source never sees the answer, so
/// its flows stay unconfirmed.
#[inline(always)]
#[must_use]
pub const fn confirms(c: u8, is_tcp: bool, flags: u8) -> bool {
    let completes = flags & tcp_flags::ACK != 0 && flags & (tcp_flags::SYN | tcp_flags::RST) == 0;
    if c & conn_flags::DSR != 0 {
        // The answer never passes here: the client's ACK (TCP) or next
        // datagram (UDP) is all there is to see.
        return !is_tcp || completes;
    }
    c & conn_flags::REPLY == 0 && c & conn_flags::ANSWERED != 0 && (!is_tcp || completes)
}

/// Values of [`Conn::state`].
pub struct ConnState;
impl ConnState {
    /// Not seen yet (only as input to [`tcp_next_state`]).
    pub const NONE: u8 = 0;
    /// TCP: a SYN was seen, the handshake has not completed.
    pub const TCP_SYN: u8 = 1;
    /// TCP: the handshake completed.
    pub const TCP_ESTABLISHED: u8 = 2;
    /// TCP: a FIN or RST was seen in either direction.
    pub const TCP_CLOSING: u8 = 3;
    /// UDP: there is only one state.
    pub const UDP: u8 = 4;

    #[must_use]
    pub const fn name(state: u8) -> &'static str {
        match state {
            Self::TCP_SYN => "SYN",
            Self::TCP_ESTABLISHED => "ESTABLISHED",
            Self::TCP_CLOSING => "CLOSING",
            Self::UDP => "UDP",
            _ => "NONE",
        }
    }
}

/// TCP header flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// The state of a TCP connection after a packet with `flags` in either
/// direction.
///
/// - FIN or RST: closing (short timeout).
/// - A SYN without ACK starts a connection, also on a tuple that was closing
///   (the client reused its port). A SYN-ACK leaves the state as it is.
/// - Anything else completes a handshake in progress, and otherwise leaves the
///   state alone (an unknown mid-stream packet is taken as established).
#[inline(always)]
#[must_use]
pub const fn tcp_next_state(state: u8, flags: u8) -> u8 {
    if flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
        ConnState::TCP_CLOSING
    } else if flags & tcp_flags::SYN != 0 {
        if flags & tcp_flags::ACK != 0 && state != ConnState::NONE {
            state
        } else {
            ConnState::TCP_SYN
        }
    } else if state == ConnState::TCP_SYN || state == ConnState::NONE {
        ConnState::TCP_ESTABLISHED
    } else {
        state
    }
}

/// A connection-table entry (value of `CONNS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    /// Monotonic clock (ns) of the last refresh; refreshed at most once per
    /// [`crate::REFRESH_NS`] and on every state change.
    pub last_seen_ns: u64,
    /// Forward: the backend's address; reply: the VIP's address.
    pub nat_addr: u32,
    /// Forward: the backend's port; reply: the VIP's port.
    pub nat_port: u16,
    /// One of [`ConnState`].
    pub state: u8,
    /// Bits of [`conn_flags`].
    pub flags: u8,
    /// Index of the backend in `BACKENDS` (for counters and the session).
    pub backend_id: u32,
    /// The VIP's id (`VipInfo::id`: its counters and sessions).
    pub vip_id: u32,
    /// The client address masked by the VIP's persistence netmask: the
    /// session this connection keeps alive (when `SESSION` is set).
    pub session_client: u32,
    /// Generation of the backend when the connection was made.
    pub backend_gen: u32,
    /// Where this half's packets go next, from the last FIB lookup; renewed
    /// with every refresh (at most a second old). `ifindex` 0: unknown.
    pub next_hop: NextHop,
}
const _: () = assert!(core::mem::size_of::<Conn>() == 48);

/// A cached FIB result: egress interface and the MAC addresses to write.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<NextHop>() == 16);

/// A backend's next hop for the first packets of its new flows (value of
/// `NEXT_HOPS`, by backend slot): the FIB result of a packet that came in
/// on `ingress`, renewed when it is a second old, as a connection's own
/// cache is. A slot reused by another backend (another generation) does
/// not inherit it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendHop {
    pub next_hop: NextHop,
    pub ingress: u32,
    /// The backend's generation.
    pub gen: u32,
    /// Monotonic clock (ns) of the lookup; 0: never looked up.
    pub looked_up_ns: u64,
}
const _: () = assert!(core::mem::size_of::<BackendHop>() == 32);

impl BackendHop {
    /// Whether this next hop serves a packet to the backend of generation
    /// `gen` that came in on `ingress` at `now_ns`.
    #[inline(always)]
    #[must_use]
    pub const fn serves(&self, ingress: u32, gen: u32, now_ns: u64) -> bool {
        self.looked_up_ns != 0
            && self.next_hop.ifindex != 0
            && self.ingress == ingress
            && self.gen == gen
            && !crate::needs_refresh(self.looked_up_ns, now_ns)
    }
}

impl Conn {
    #[inline(always)]
    #[must_use]
    pub const fn is_reply(&self) -> bool {
        self.flags & conn_flags::REPLY != 0
    }

    /// Whether this entry is idle past its state's timeout at `now_ns`.
    #[inline(always)]
    #[must_use]
    pub fn is_expired(&self, settings: &Settings, now_ns: u64) -> bool {
        crate::is_expired(self.last_seen_ns, settings.timeout_ns(self.state), now_ns)
    }

    /// The key of the other half of this connection, given this half's key.
    #[inline(always)]
    #[must_use]
    pub const fn twin_key(&self, key: &FlowKey) -> FlowKey {
        // Forward (client -> VIP, nat = backend): twin is backend -> client.
        // Reply (backend -> client, nat = VIP): twin is client -> VIP.
        FlowKey {
            src_addr: if self.is_reply() {
                key.dst_addr
            } else {
                self.nat_addr
            },
            dst_addr: if self.is_reply() {
                self.nat_addr
            } else {
                key.src_addr
            },
            src_port: if self.is_reply() {
                key.dst_port
            } else {
                self.nat_port
            },
            dst_port: if self.is_reply() {
                self.nat_port
            } else {
                key.src_port
            },
            proto: key.proto,
            _pad: [0; 3],
        }
    }
}

/// Key of the persistence table (`SESSIONS`): one VIP and one client address
/// or client prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub vip_id: u32,
    /// Client address masked by the VIP's persistence netmask.
    pub client: u32,
}
const _: () = assert!(core::mem::size_of::<SessionKey>() == 8);

/// A persistence-table entry: the backend a client (prefix) is pinned to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// Monotonic clock (ns) of the client's last traffic, refreshed at most
    /// once per [`crate::REFRESH_NS`] per connection.
    pub last_seen_ns: u64,
    pub backend_id: u32,
    /// The backend's generation when pinned: a backend slot that was freed
    /// and reused for another backend does not inherit the old sessions.
    pub backend_gen: u32,
    /// Monotonic clock (ns) when the client was pinned to this backend;
    /// with a VIP's `max_lifetime` the session ends that long after it.
    pub created_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Session>() == 24);

impl Session {
    /// Whether the session still holds at `now_ns`: not idle past
    /// `timeout_ns`, and, when `max_lifetime_ns` is not 0, younger than it
    /// (busy or not).
    #[inline(always)]
    #[must_use]
    pub const fn is_live(&self, timeout_ns: u64, max_lifetime_ns: u64, now_ns: u64) -> bool {
        !crate::is_expired(self.last_seen_ns, timeout_ns, now_ns)
            && (max_lifetime_ns == 0 || now_ns.saturating_sub(self.created_ns) < max_lifetime_ns)
    }
}

/// A session the data path recorded, as announced on the `SESSION_EVENTS`
/// ring (`cluster:` only): the controller publishes it to the other hosts.
/// The client is an address of `family` in the first bytes of `client`
/// (IPv4: `client[0]`, network byte order), so that IPv6 needs no new type.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionEvent {
    pub vip_id: u32,
    pub backend_id: u32,
    pub backend_gen: u32,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 3],
    /// The client address masked by the VIP's persistence netmask.
    pub client: [u32; 4],
    pub created_ns: u64,
    pub last_seen_ns: u64,
}
const _: () = assert!(core::mem::size_of::<SessionEvent>() == 48);

/// Global settings: the only entry of `SETTINGS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub tcp_syn_ns: u64,
    pub tcp_established_ns: u64,
    pub tcp_closing_ns: u64,
    pub udp_ns: u64,
    /// Sets of `HALF_OPEN` and of `PENDING` minus one (each a power of
    /// two, see [`crate::handshake`]); written by the controller from the
    /// tables' sizes, whatever the caller of its settings call gives.
    pub half_open_mask: u32,
    pub pending_mask: u32,
    /// Seeds the hash of both tables' sets; chosen at random when the
    /// tables are created and kept with them.
    pub seed: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 48);

impl Settings {
    /// Idle timeout of a connection in `state`.
    #[inline(always)]
    #[must_use]
    pub const fn timeout_ns(&self, state: u8) -> u64 {
        match state {
            ConnState::TCP_SYN => self.tcp_syn_ns,
            ConnState::TCP_ESTABLISHED => self.tcp_established_ns,
            ConnState::UDP => self.udp_ns,
            _ => self.tcp_closing_ns,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with explicit padding.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Conn {}
    unsafe impl aya::Pod for super::SessionKey {}
    unsafe impl aya::Pod for super::Session {}
    unsafe impl aya::Pod for super::SessionEvent {}
    unsafe impl aya::Pod for super::Settings {}
}

#[cfg(test)]
mod tests {
    use super::tcp_flags::{ACK, FIN, RST, SYN};
    use super::*;

    #[test]
    fn a_flow_is_confirmed_by_the_clients_ack_after_the_backends_answer() {
        let fresh = Conn::default();
        assert!(
            !confirms(fresh.flags, true, ACK),
            "no answer yet: a blind ACK"
        );
        let answered = Conn {
            flags: conn_flags::ANSWERED,
            ..Conn::default()
        };
        assert!(confirms(answered.flags, true, ACK));
        assert!(confirms(answered.flags, true, ACK | FIN));
        assert!(!confirms(answered.flags, true, SYN), "a retransmitted SYN");
        assert!(!confirms(answered.flags, true, RST | ACK));
        assert!(confirms(answered.flags, false, 0), "UDP: the next datagram");
        assert!(!confirms(fresh.flags, false, 0));
        let reply = Conn {
            flags: conn_flags::ANSWERED | conn_flags::REPLY,
            ..Conn::default()
        };
        assert!(!confirms(reply.flags, true, ACK), "only the forward half");
        assert!(answers(true, SYN | ACK));
        assert!(!answers(true, ACK));
        assert!(!answers(true, SYN));
        assert!(answers(false, 0));
        // Direct server return: the answer is never seen.
        let dsr = Conn {
            flags: conn_flags::DSR,
            ..Conn::default()
        };
        assert!(confirms(dsr.flags, true, ACK));
        assert!(!confirms(dsr.flags, true, SYN));
        assert!(confirms(dsr.flags, false, 0));
    }

    #[test]
    fn a_backends_next_hop_serves_its_ingress_for_a_second() {
        let hop = BackendHop {
            next_hop: NextHop {
                ifindex: 3,
                ..NextHop::default()
            },
            ingress: 2,
            gen: 7,
            looked_up_ns: 5_000_000_000,
        };
        assert!(hop.serves(2, 7, 5_500_000_000));
        assert!(!hop.serves(2, 7, 6_000_000_000), "a second old");
        assert!(!hop.serves(4, 7, 5_500_000_000), "another ingress");
        assert!(
            !hop.serves(2, 8, 5_500_000_000),
            "another backend in the slot"
        );
        assert!(!BackendHop::default().serves(0, 0, 1), "never looked up");
    }

    #[test]
    fn session_ends_when_idle_or_past_its_lifetime() {
        let s = Session {
            last_seen_ns: 1_000,
            created_ns: 100,
            ..Session::default()
        };
        assert!(s.is_live(500, 0, 1_400));
        assert!(!s.is_live(500, 0, 1_500), "idle past the timeout");
        assert!(s.is_live(500, 1_000, 1_099));
        assert!(
            !s.is_live(500, 1_000, 1_100),
            "past its lifetime, though busy"
        );
        assert!(
            s.is_live(500, 0, 1_100),
            "no lifetime: only idleness ends it"
        );
    }

    #[test]
    fn handshake_then_close() {
        let s = tcp_next_state(ConnState::NONE, SYN);
        assert_eq!(s, ConnState::TCP_SYN);
        let s = tcp_next_state(s, SYN | ACK); // reply
        assert_eq!(s, ConnState::TCP_SYN);
        let s = tcp_next_state(s, ACK);
        assert_eq!(s, ConnState::TCP_ESTABLISHED);
        let s = tcp_next_state(s, ACK | 0x08);
        assert_eq!(s, ConnState::TCP_ESTABLISHED);
        let s = tcp_next_state(s, FIN | ACK);
        assert_eq!(s, ConnState::TCP_CLOSING);
        // The last ACK does not reopen it.
        assert_eq!(tcp_next_state(s, ACK), ConnState::TCP_CLOSING);
        // A new SYN on the same tuple does.
        assert_eq!(tcp_next_state(s, SYN), ConnState::TCP_SYN);
    }

    #[test]
    fn first_packet_decides_initial_state() {
        assert_eq!(
            tcp_next_state(ConnState::NONE, ACK),
            ConnState::TCP_ESTABLISHED
        );
        assert_eq!(tcp_next_state(ConnState::NONE, RST), ConnState::TCP_CLOSING);
        assert_eq!(
            tcp_next_state(ConnState::NONE, SYN | ACK),
            ConnState::TCP_SYN
        );
        assert_eq!(
            tcp_next_state(ConnState::TCP_ESTABLISHED, RST | ACK),
            ConnState::TCP_CLOSING
        );
    }

    #[test]
    fn twin_keys_round_trip() {
        let client = u32::from_ne_bytes([198, 18, 0, 11]);
        let vip = u32::from_ne_bytes([198, 18, 0, 100]);
        let backend = u32::from_ne_bytes([198, 18, 1, 12]);
        let fwd_key = FlowKey {
            src_addr: client,
            dst_addr: vip,
            src_port: 4000,
            dst_port: 80,
            proto: 6,
            _pad: [0; 3],
        };
        let fwd = Conn {
            nat_addr: backend,
            nat_port: 8080,
            ..Conn::default()
        };
        let rep_key = fwd.twin_key(&fwd_key);
        assert_eq!(
            rep_key,
            FlowKey {
                src_addr: backend,
                dst_addr: client,
                src_port: 8080,
                dst_port: 4000,
                proto: 6,
                _pad: [0; 3]
            }
        );
        let rep = Conn {
            nat_addr: vip,
            nat_port: 80,
            flags: conn_flags::REPLY,
            ..Conn::default()
        };
        assert_eq!(rep.twin_key(&rep_key), fwd_key);
    }

    #[test]
    fn expiry_follows_state_timeout() {
        let settings = Settings {
            tcp_syn_ns: 10,
            tcp_established_ns: 100,
            tcp_closing_ns: 5,
            udp_ns: 50,
            ..Settings::default()
        };
        let mut c = Conn {
            last_seen_ns: 1000,
            state: ConnState::TCP_ESTABLISHED,
            ..Conn::default()
        };
        assert!(!c.is_expired(&settings, 1099));
        assert!(c.is_expired(&settings, 1100));
        c.state = ConnState::TCP_CLOSING;
        assert!(c.is_expired(&settings, 1005));
        c.state = ConnState::UDP;
        assert!(!c.is_expired(&settings, 1049));
        c.state = ConnState::TCP_SYN;
        assert!(c.is_expired(&settings, 1010));
    }
}
