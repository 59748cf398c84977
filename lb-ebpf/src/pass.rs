//! `lb_pass`: an XDP program that passes every frame. A veth device only
//! accepts frames redirected or transmitted to it by XDP when it runs an XDP
//! program itself; the lab attaches this one to the balancer's veth peers.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, ProgramArray},
    programs::XdpContext,
};

#[xdp]
pub fn lb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// `lb_tx`: sends every frame back out as it came (XDP_TX): the floor the
/// benchmarks compare the balancer's per-packet cost with.
#[xdp]
pub fn lb_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// `GEN[0]`: per-CPU count of frames `lb_gen` has sent.
#[map]
static GEN: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// `GEN_FLOWS[0]`: how many UDP source ports `lb_gen` cycles through.
#[map]
static GEN_FLOWS: Array<u32> = Array::with_max_entries(1, 0);

/// UDP source port of frame `n` is `GEN_PORT_BASE + n % flows`.
const GEN_PORT_BASE: u16 = 10_000;

/// `lb_gen`: the benchmark's traffic generator. Run with
/// BPF_PROG_TEST_RUN in live-frames mode on a UDP frame, it sends the frame
/// out again and again (XDP_TX), each time from the next of `GEN_FLOWS`
/// source ports, with no UDP checksum (so none needs patching).
#[xdp]
pub fn lb_gen(ctx: XdpContext) -> u32 {
    const SPORT: usize = 14 + 20;
    const CSUM: usize = 14 + 20 + 6;
    let data = ctx.data();
    if data + CSUM + 2 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let flows = GEN_FLOWS.get(0).copied().unwrap_or(1).max(1);
    let Some(count) = GEN.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: per-CPU slot; the bounds were checked above.
    unsafe {
        let n = *count;
        *count = n.wrapping_add(1);
        let port = GEN_PORT_BASE + (n % flows) as u16;
        ((data + SPORT) as *mut [u8; 2]).write_unaligned(port.to_be_bytes());
        ((data + CSUM) as *mut [u8; 2]).write_unaligned([0, 0]);
    }
    xdp_action::XDP_TX
}

/// UDP port `lb_sink` drops (the benchmark's packet-rate traffic).
const SINK_PORT: u16 = 9;

/// `lb_sink`: on a benchmark backend, drops the packet-rate test's UDP
/// datagrams at the earliest point (the device counts them as received) and
/// passes everything else.
#[xdp]
pub fn lb_sink(ctx: XdpContext) -> u32 {
    const PROTO: usize = 14 + 9;
    const DPORT: usize = 14 + 20 + 2;
    let data = ctx.data();
    if data + DPORT + 2 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: bounds checked above.
    let (ethertype, vihl, proto, dport) = unsafe {
        (
            ((data + 12) as *const [u8; 2]).read_unaligned(),
            *((data + 14) as *const u8),
            *((data + PROTO) as *const u8),
            ((data + DPORT) as *const [u8; 2]).read_unaligned(),
        )
    };
    if ethertype == [0x08, 0x00] && vihl == 0x45 && proto == 17 && dport == SINK_PORT.to_be_bytes()
    {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// `FRESH_CFG`: [VIP address, VIP port (network order, low 16 bits), first
/// client address (network order), mode (0: a new source port of the
/// frame's client each time, 1: a new client address each time)].
#[map]
static FRESH_CFG: Array<u32> = Array::with_max_entries(4, 0);

/// `FRESH[0]`: per-CPU count of frames `lb_fresh` has made.
#[map]
static FRESH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// `FRESH_NEXT[0]`: the program `lb_fresh` hands every frame to.
#[map]
static FRESH_NEXT: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// `lb_fresh`: the benchmark's new-flow driver. Run with BPF_PROG_TEST_RUN
/// `repeat` on a TCP SYN to the VIP, it turns the frame (which the program
/// it calls rewrote the round before) into the SYN of a connection never
/// seen, addressed to the VIP again, and tail-calls `FRESH_NEXT[0]` (the
/// balancer, or `lb_tx` for the driver's own cost): the new-flow path
/// measured in a stream, as traffic runs it, with its code and small maps
/// warm. Checksums are not kept right (the balancer patches them
/// incrementally and does not check them).
#[xdp]
pub fn lb_fresh(ctx: XdpContext) -> u32 {
    const SRC: usize = 14 + 12;
    const DST: usize = 14 + 16;
    const SPORT: usize = 14 + 20;
    const DPORT: usize = 14 + 22;
    let data = ctx.data();
    if data + DPORT + 2 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let cfg = |i| FRESH_CFG.get(i).copied().unwrap_or(0);
    let Some(count) = FRESH.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: per-CPU slot; the bounds were checked above.
    unsafe {
        let n = *count;
        *count = n.wrapping_add(1);
        ((data + DST) as *mut u32).write_unaligned(cfg(0));
        ((data + DPORT) as *mut u16).write_unaligned(cfg(1) as u16);
        if cfg(3) == 0 {
            let port = 1024 + (n % 60_000) as u16;
            ((data + SPORT) as *mut u16).write_unaligned(port.to_be());
        } else {
            let client = u32::from_be(cfg(2)).wrapping_add(n);
            ((data + SRC) as *mut u32).write_unaligned(client.to_be());
        }
        FRESH_NEXT.tail_call(&ctx, 0);
    }
    xdp_action::XDP_ABORTED
}
