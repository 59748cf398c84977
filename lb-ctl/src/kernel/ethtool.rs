//! The device's own XDP error counters (`ethtool -S`), read through the
//! `SIOCETHTOOL` ioctl, and the watch that warns while they grow.
//!
//! A frame the program sends with `XDP_TX` or a redirect can still be
//! dropped by the driver: on veth when the peer cannot take XDP frames,
//! elsewhere when a transmit ring is full. The program's own counters say
//! `tx`; only the driver's statistics tell. Drivers name them freely
//! (veth: `rx_queue_0_xdp_tx_errors`, `tx_queue_0_xdp_xmit_errors`; mlx5:
//! `tx_xdp_err`, `rx_xdp_tx_err`; i40e/ice: `rx_xdp_tx_errors`, …), so every
//! statistic whose name mentions XDP and an error or failure counts.
//!
//! The ethtool netlink API carries only the standard statistics groups, not
//! these driver-specific ones, hence the ioctl.

use std::{collections::BTreeMap, io, os::fd::AsRawFd as _};

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;

/// Whether a driver statistic counts XDP frames the device failed to send.
#[must_use]
pub fn is_xdp_error(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("xdp") && (name.contains("err") || name.contains("fail"))
}

/// One ioctl on an `AF_INET` datagram socket; `data` is the ethtool
/// command buffer (u64-aligned).
fn ioctl(iface: &str, data: &mut [u64]) -> io::Result<()> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if iface.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {iface:?} is too long"),
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
    // SAFETY: `req` names the interface and points at `data`, which is as
    // large as the command written into its first word says.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Room for this many statistics more than the device reported when
/// asked: a driver whose count grows between that question and the reads
/// (the kernel writes its count of the moment, whatever length it is
/// given) still writes inside the buffers.
const HEADROOM: usize = 256;

/// How many entries to allocate for a device that reported `count`.
#[must_use]
pub fn capacity(count: usize) -> usize {
    count.saturating_mul(2).saturating_add(HEADROOM)
}

/// The number of entries the kernel says it wrote, checked against the
/// buffer's room `room` (more would have been written past its end).
///
/// # Errors
/// When the kernel reports more than the buffer holds.
pub fn written(returned: u64, room: usize) -> io::Result<usize> {
    let n = usize::try_from(returned).unwrap_or(usize::MAX);
    if n > room {
        return Err(io::Error::other(format!(
            "the device reported {n} statistics, more than the {room} the buffer holds"
        )));
    }
    Ok(n)
}

/// Every driver statistic of `iface`, by name (`ethtool -S`). A device
/// without statistics gives an empty list.
///
/// # Errors
/// When the interface does not exist, the ioctl fails otherwise, or the
/// device's statistics keep changing while they are read.
pub fn statistics(iface: &str) -> io::Result<Vec<(String, u64)>> {
    for _ in 0..3 {
        if let Some(read) = statistics_once(iface)? {
            return Ok(read);
        }
    }
    Err(io::Error::other(format!(
        "the statistics of {iface} changed while they were read, three times"
    )))
}

/// One reading; `None` when the names and the values came back in
/// different numbers (the device's set changed in between).
fn statistics_once(iface: &str) -> io::Result<Option<Vec<(String, u64)>>> {
    // struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[1]; }
    let mut info = [0u64; 3];
    info[0] = u64::from(ETHTOOL_GSSET_INFO);
    info[1] = 1 << ETH_SS_STATS;
    match ioctl(iface, &mut info) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Some(Vec::new())),
        Err(e) => return Err(e),
    }
    if info[1] & (1 << ETH_SS_STATS) == 0 {
        return Ok(Some(Vec::new()));
    }
    let count = (info[2] & 0xffff_ffff) as usize;
    if count == 0 {
        return Ok(Some(Vec::new()));
    }
    let room = capacity(count);
    // struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[]; }
    let mut strings = vec![0u64; 2 + (room * ETH_GSTRING_LEN).div_ceil(8)];
    strings[0] = u64::from(ETHTOOL_GSTRINGS) | (u64::from(ETH_SS_STATS) << 32);
    strings[1] = count as u64;
    ioctl(iface, &mut strings)?;
    let names_written = written(strings[1] & 0xffff_ffff, room)?;
    // struct ethtool_stats { u32 cmd; u32 n_stats; u64 data[]; }
    let mut stats = vec![0u64; 1 + room];
    stats[0] = u64::from(ETHTOOL_GSTATS) | ((count as u64) << 32);
    ioctl(iface, &mut stats)?;
    let values_written = written(stats[0] >> 32, room)?;
    if names_written != values_written {
        return Ok(None);
    }
    let bytes: Vec<u8> = strings.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let names = &bytes[12..12 + names_written * ETH_GSTRING_LEN];
    Ok(Some(
        names
            .chunks(ETH_GSTRING_LEN)
            .zip(&stats[1..=values_written])
            .map(|(name, v)| {
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                (String::from_utf8_lossy(&name[..end]).into_owned(), *v)
            })
            .collect(),
    ))
}

/// The XDP error counters of each interface: `(interface, statistic,
/// value)`. An interface whose statistics cannot be read is left out.
#[must_use]
pub fn xdp_errors(ifaces: &[String]) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for iface in ifaces {
        match statistics(iface) {
            Ok(stats) => out.extend(
                stats
                    .into_iter()
                    .filter(|(n, _)| is_xdp_error(n))
                    .map(|(n, v)| (iface.clone(), n, v)),
            ),
            Err(e) => log::debug!("reading the statistics of {iface}: {e}"),
        }
    }
    out
}

/// Remembers the last reading, to tell when the counters grow.
#[derive(Default)]
pub struct Watch {
    last: BTreeMap<(String, String), u64>,
    started: bool,
}

impl Watch {
    /// Take a reading; returns, per interface, how many frames were lost
    /// since the previous reading (interfaces with no loss are left out).
    /// The first reading only sets the baseline, so errors from before the
    /// attach are not blamed on it.
    pub fn observe(&mut self, reading: Vec<(String, String, u64)>) -> Vec<(String, u64)> {
        let first = !std::mem::replace(&mut self.started, true);
        let mut grown: BTreeMap<String, u64> = BTreeMap::new();
        for (iface, name, value) in reading {
            let before = self.last.insert((iface.clone(), name), value);
            if !first {
                let delta = value.saturating_sub(before.unwrap_or(0));
                if delta > 0 {
                    *grown.entry(iface).or_default() += delta;
                }
            }
        }
        grown.into_iter().collect()
    }
}

/// The warning for frames lost on `iface`.
#[must_use]
pub fn warning(iface: &str, lost: u64, mode: crate::kernel::xdpmode::Mode) -> String {
    let fix = match mode {
        crate::kernel::xdpmode::Mode::Native => {
            "the device (or, on veth, its peer) no longer takes XDP frames; \
             re-attach with `--xdp-mode generic`, or give the veth peer an XDP program"
        }
        crate::kernel::xdpmode::Mode::Generic => "the device's transmit queue is overrunning",
    };
    format!(
        "{iface}: the driver dropped {lost} frame(s) the XDP program sent (ethtool -S {iface}: xdp errors); {fix}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_have_room_for_a_count_that_grows_and_the_count_is_checked() {
        // A device that reported 10 statistics and has 40 by the read: the
        // kernel writes 40, inside the room allocated for 10.
        let room = capacity(10);
        assert!(room >= 40, "{room}");
        assert_eq!(written(40, room).unwrap(), 40);
        // More than the room: refused, never read past the buffer.
        assert!(written(room as u64 + 1, room).is_err());
        assert_eq!(written(0, capacity(0)).unwrap(), 0);
        assert!(capacity(usize::MAX) == usize::MAX, "no overflow");
    }

    #[test]
    fn recognises_drivers_xdp_error_statistics() {
        for yes in [
            "rx_queue_0_xdp_tx_errors",
            "tx_queue_3_xdp_xmit_errors",
            "tx_xdp_err",
            "rx_xdp_redirect_fail",
            "XDP_TX_ERR",
        ] {
            assert!(is_xdp_error(yes), "{yes}");
        }
        for no in [
            "rx_queue_0_xdp_drops",
            "rx_queue_0_xdp_tx",
            "rx_errors",
            "peer_ifindex",
        ] {
            assert!(!is_xdp_error(no), "{no}");
        }
    }

    #[test]
    fn watch_reports_growth_after_the_baseline() {
        let r = |a: u64, b: u64| {
            vec![
                ("eth0".into(), "rx_queue_0_xdp_tx_errors".into(), a),
                ("eth1".into(), "tx_queue_0_xdp_xmit_errors".into(), b),
            ]
        };
        let mut w = Watch::default();
        assert!(w.observe(r(7, 2)).is_empty(), "baseline");
        assert!(w.observe(r(7, 2)).is_empty());
        assert_eq!(w.observe(r(10, 2)), vec![("eth0".to_string(), 3)]);
        assert_eq!(
            w.observe(r(11, 5)),
            vec![("eth0".to_string(), 1), ("eth1".to_string(), 3)]
        );
    }

    #[test]
    fn reads_loopbacks_statistics_without_error() {
        // lo has no driver statistics: an empty list, not an error.
        assert!(statistics("lo").is_ok());
        assert!(statistics("no-such-if0").is_err());
    }
}
