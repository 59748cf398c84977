//! ICMP errors end to end, in the plain lab with a router: real curl, real
//! backends, the real controller. Both tests fail when the data path
//! leaves the errors to the balancer's kernel (which has no socket for
//! them): the large answers stall, and the UDP client waits for its
//! timeout instead of being refused.

use lb_tests::{
    lab::{serial, Lab, Layout, Reply, VIP},
    netns::in_ns,
};

/// The balancer's `lb_icmp_errors_total` sample for `outcome`.
fn icmp_count(lab: &Lab, outcome: &str) -> f64 {
    lab.metric(&format!("lb_icmp_errors_total{{outcome=\"{outcome}\"}}"))
        .unwrap()
}

/// A router with a 1400-byte hop between a client and the balancer. The
/// client's SYN announces MSS 1460, so the backends' full-size segments
/// reach the router, which answers "fragmentation needed" to their source,
/// the VIP. Translated, the error reaches the backend, which lowers its
/// path MTU, and 300 kB answers arrive in full: three on a sticky VIP,
/// three on a VIP without persistence.
#[test]
fn large_answers_cross_a_smaller_mtu_hop() {
    let _g = serial();
    let mut lab = Lab::up("lbi-pmtu", Layout::Plain, 1, 2).unwrap();
    let far = lab.add_routed_client(1400).unwrap();
    let mut cfg = String::from("vips:\n");
    for (port, persistence) in [(80, "\n    persistence: { timeout: 300s }"), (81, "")] {
        cfg.push_str(&format!(
            "  - address: {VIP}\n    port: {port}{persistence}\n    backends:\n      \
             - {{ address: 198.18.1.11, port: 8080 }}\n      - {{ address: 198.18.1.12, port: 8080 }}\n"
        ));
    }
    lab.start_balancer(&cfg).unwrap();
    const SIZE: usize = 300_000;
    for port in [80, 81] {
        for i in 0..3 {
            let url = format!("http://{VIP}:{port}/bytes/{SIZE}");
            // The bound only ends a stalled transfer; a translated error
            // lets the answer through within a retransmission or two.
            let out = in_ns(
                &far.ns,
                &[
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download}",
                    "--max-time",
                    "20",
                    &url,
                ],
            );
            let got = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            assert_eq!(
                got.as_deref().ok(),
                Some(SIZE.to_string().as_str()),
                "answer {i} on port {port}: {got:?}\ncontroller log:\n{}",
                lab.controller_log()
            );
        }
    }
    assert!(
        icmp_count(&lab, "to_backend") >= 2.0,
        "at least one error per backend was translated"
    );
}

/// A UDP datagram to a backend port with no listener: the client's
/// connected socket is refused (ECONNREFUSED), at once.
#[test]
fn udp_to_a_closed_backend_port_is_refused() {
    let _g = serial();
    let mut lab = Lab::up("lbi-refuse", Layout::Plain, 1, 2).unwrap();
    let cfg = format!(
        "vips:\n  - address: {VIP}\n    port: 53\n    protocol: udp\n    backends:\n      \
         - {{ address: 198.18.1.11, port: 9999 }}\n      - {{ address: 198.18.1.12, port: 9999 }}\n"
    );
    lab.start_balancer(&cfg).unwrap();
    let replies = lab
        .udp(
            0,
            53,
            &["--connect", "--count", "2", "--timeout-ms", "5000"],
        )
        .unwrap();
    assert_eq!(replies.len(), 2, "{replies:?}");
    for r in &replies {
        assert!(
            matches!(r, Reply::Err(e) if e.contains("Connection refused")),
            "refused, not timed out: {replies:?}\ncontroller log:\n{}",
            lab.controller_log()
        );
    }
    assert_eq!(icmp_count(&lab, "to_client"), 2.0);
}
