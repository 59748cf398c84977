//! `lb_pass`: an XDP program that passes every frame. A veth device only
//! accepts frames redirected or transmitted to it by XDP when it runs an XDP
//! program itself; the lab attaches this one to the balancer's veth peers.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

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
