//! Every map of the program, named after what it holds. Sizes of the two
//! state tables are set by the controller at load time (`limits:` in the
//! config); the numbers here are defaults.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use lb_common::{
    conn6::{Addr6, ClientKey6, Conn6, FlowKey6, HalfOpen6, SessionKey6, VipInfo6, VipKey6},
    handshake::HandshakeSet,
    pending::PendingSet,
    BackendHop, BackendInfo, Conn, Counters, FlowKey, IcmpReason, Reason, Session, SessionKey,
    Settings, VipInfo, VipKey, MAGLEV_SIZE, MAX_BACKENDS, MAX_MAGLEV_VIPS, MAX_PORTS, MAX_VIPS,
    RING_SIZE,
};

/// (VIP address, port, protocol) -> the VIP's settings.
#[map]
pub static VIPS: HashMap<VipKey, VipInfo> = HashMap::with_max_entries(MAX_VIPS, 0);

/// Backend id -> backend address, owning VIP, generation, flags.
#[map]
pub static BACKENDS: Array<BackendInfo> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Selection tables: VIP `id`'s table is `RING[id * RING_SIZE ..][.. ring_len]`,
/// each slot a backend id, built by the controller (rr or weighted).
#[map]
pub static RING: Array<u32> = Array::with_max_entries(MAX_VIPS * RING_SIZE, 0);

/// Maglev lookup tables: table `m` is `MAGLEV[m * MAGLEV_SIZE ..][.. MAGLEV_SIZE]`,
/// each slot a backend id, built by the controller.
#[map]
pub static MAGLEV: Array<u32> = Array::with_max_entries(MAX_MAGLEV_VIPS * MAGLEV_SIZE, 0);

/// Position in each VIP's selection table, shared by all CPUs (advanced
/// atomically).
#[map]
pub static CURSORS: Array<u32> = Array::with_max_entries(MAX_VIPS, 0);

/// The connection table: confirmed connections (TCP handshake completed,
/// UDP answered and continued), two entries each (forward and reply). An
/// entry is never evicted: it leaves when it expires.
#[map]
pub static CONNS: HashMap<FlowKey, Conn> = HashMap::with_max_entries(2 * 1_000_000, 0);

/// Unconfirmed flows (TCP half-open, UDP not yet answered and continued),
/// one entry each, until the client confirms them: sets of four ways
/// (`lb_common::handshake`), sized by the controller. A new flow whose set
/// is full replaces the set's least recently used one, so a flood of new
/// flows (spoofed SYNs) pushes out only its own kind and never takes the
/// connection table.
#[map]
pub static HALF_OPEN: Array<HandshakeSet> = Array::with_max_entries(32_768, BPF_F_MMAPABLE);

/// The persistence table: (VIP, client prefix) -> pinned backend, recorded
/// when a connection of the client is confirmed.
#[map]
pub static SESSIONS: HashMap<SessionKey, Session> = HashMap::with_max_entries(1_000_000, 0);

/// Pending sessions (round-robin and weighted VIPs with persistence): the
/// backend chosen for a client whose first connection is not confirmed
/// yet, so that its parallel first connections go to the same backend.
/// Sets of four ways like `HALF_OPEN`. A Maglev VIP needs none: its
/// choice for a client is a hash of the client.
#[map]
pub static PENDING: Array<PendingSet> = Array::with_max_entries(32_768, BPF_F_MMAPABLE);

/// `BPF_F_MMAPABLE`: the array's values start on a page boundary, so each
/// fixed table's sets (256 and 192 bytes) are cache-line aligned and a
/// set's tags fill exactly its first line. (Nothing maps them.)
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Timeouts, written by the controller.
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Attached interfaces the program may redirect to (ifindex -> ifindex).
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_PORTS, 0);

/// Per-CPU traffic counters per VIP id.
#[map]
pub static VIP_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

/// Per-CPU traffic counters per backend id.
#[map]
pub static BACKEND_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Per-CPU counters per [`Reason`].
#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

/// The address filter (`lb_common::addr_filter`): VIP addresses' and
/// backend addresses' bitmaps, written by the controller.
#[map]
pub static ADDR_FILTER: Array<u64> = Array::with_max_entries(lb_common::addr_filter::ENTRIES, 0);

/// Per-CPU counters per [`IcmpReason`]: ICMP errors translated, by
/// direction, and passed, by reason.
#[map]
pub static ICMP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(IcmpReason::COUNT, 0);

/// Sessions recorded for VIPs whose sessions are shared (`cluster:`), read
/// by the controller, which publishes them to the other hosts. 1 MiB: about
/// 18 000 announcements (48 bytes and an 8-byte header each).
#[map]
pub static SESSION_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Announcements `SESSION_EVENTS` could not take (full: the controller is
/// behind), per CPU; the controller then publishes every live session.
#[map]
pub static SESSION_EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Each backend's next hop for the first packets of its new flows (see
/// `BackendHop`), by backend slot; established flows keep their own.
#[map]
pub static NEXT_HOPS: Array<BackendHop> = Array::with_max_entries(MAX_BACKENDS, 0);

/// `BPF_F_NO_PREALLOC`: a hash map's entries are allocated as they are
/// inserted. The IPv6 tables take it, so that a balancer serving IPv4
/// only does not hold their memory (an IPv6 entry is 40 + 72 bytes).
const BPF_F_NO_PREALLOC: u32 = 1;

/// (IPv6 VIP address, port, protocol) -> the VIP's settings; its id
/// indexes the same per-VIP arrays as an IPv4 VIP's.
#[map]
pub static VIPS6: HashMap<VipKey6, VipInfo6> = HashMap::with_max_entries(MAX_VIPS, 0);

/// The address of each IPv6 backend, by its slot in `BACKENDS` (whose
/// entry has the rest: port, VIP, generation, flags).
#[map]
pub static BACKEND_ADDRS6: Array<Addr6> = Array::with_max_entries(MAX_BACKENDS, 0);

/// The IPv6 connection table, as `CONNS`.
#[map]
pub static CONNS6: HashMap<FlowKey6, Conn6> =
    HashMap::with_max_entries(2 * 1_000_000, BPF_F_NO_PREALLOC);

/// The IPv6 persistence table, as `SESSIONS`.
#[map]
pub static SESSIONS6: HashMap<SessionKey6, Session> =
    HashMap::with_max_entries(1_000_000, BPF_F_NO_PREALLOC);

/// Unconfirmed IPv6 flows, by the client's address and port (an LRU
/// table: a flood of new flows pushes out only its own kind and never
/// takes `CONNS6`).
#[map]
pub static HALF_OPEN6: LruHashMap<ClientKey6, HalfOpen6> = LruHashMap::with_max_entries(131_072, 0);

/// Pending sessions of IPv6 clients, as `PENDING` (an LRU table).
#[map]
pub static PENDING6: LruHashMap<SessionKey6, Session> = LruHashMap::with_max_entries(131_072, 0);

/// The IPv6 program (`lb_xdp6`) at slot 0, which `lb_xdp` tail-calls for
/// every IPv6 frame: a program of its own, so that each family's path has
/// the whole BPF stack (512 bytes) to itself. Filled by the controller.
#[map]
pub static PROGS6: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Room for the IPv6 path's keys and entries (larger than IPv4's), per
/// CPU, so they need not sit on the BPF stack: written and read within one
/// run of the program, never by the controller, never pinned.
#[map]
pub static SCRATCH6: PerCpuArray<crate::v6::Scratch6> = PerCpuArray::with_max_entries(1, 0);
