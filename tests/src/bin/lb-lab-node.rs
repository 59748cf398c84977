//! A lab host: a backend that answers HTTP and UDP with its own name and the
//! client address it saw, or a client that sends requests and prints which
//! backend answered each.
//!
//! Output lines of the clients, one per request:
//!   `ok <backend-name> seen=<client-addr-seen-by-backend> from=<reply-source>`
//!   `err <reason>`

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "lb lab host: backend server or client")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve HTTP (TCP) and UDP on PORT, answering with NAME.
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Send HTTP requests to TARGET.
    Http {
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Reuse one connection for every request (else one connection each).
        #[arg(long)]
        keepalive: bool,
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Attach an XDP program that passes everything to IFACES (veth peers of
    /// the balancer) and hold it until killed.
    XdpPass {
        #[arg(required = true)]
        ifaces: Vec<String>,
    },
    /// Send small UDP datagrams as fast as possible for SECONDS, over FLOWS
    /// sockets spread across the comma-separated TARGETS; print the count.
    Flood {
        targets: String,
        #[arg(long, default_value_t = 32)]
        flows: u32,
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Send UDP datagrams to TARGET from one socket.
    Udp {
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve { name, port } => serve(&name, port),
        Cmd::XdpPass { ifaces } => {
            let mut ebpf = aya::Ebpf::load(lb_ctl::dataplane::PASS_PROGRAM)?;
            let prog: &mut aya::programs::Xdp = ebpf
                .program_mut("lb_pass")
                .context("lb_pass program")?
                .try_into()?;
            prog.load()?;
            for iface in &ifaces {
                prog.attach(iface, aya::programs::XdpMode::Driver)
                    .with_context(|| format!("attaching lb_pass to {iface}"))?;
            }
            println!("ready");
            loop {
                thread::park();
            }
        }
        Cmd::Http {
            target,
            count,
            keepalive,
            interval_ms,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let mut conn: Option<BufReader<TcpStream>> = None;
            for i in 0..count {
                if i > 0 && interval_ms > 0 {
                    thread::sleep(Duration::from_millis(interval_ms));
                }
                match http_request(target, keepalive, &mut conn, timeout) {
                    Ok(line) => println!("ok {line}"),
                    Err(e) => {
                        conn = None;
                        println!("err {e:#}");
                    }
                }
            }
            Ok(())
        }
        Cmd::Flood {
            targets,
            flows,
            seconds,
        } => flood(&targets, flows, seconds),
        Cmd::Udp {
            target,
            count,
            interval_ms,
            timeout_ms,
        } => {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            sock.set_read_timeout(Some(Duration::from_millis(timeout_ms)))?;
            for i in 0..count {
                if i > 0 && interval_ms > 0 {
                    thread::sleep(Duration::from_millis(interval_ms));
                }
                sock.send_to(b"who", target)?;
                let mut buf = [0u8; 512];
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        println!(
                            "ok {} from={from}",
                            String::from_utf8_lossy(&buf[..n]).trim()
                        );
                    }
                    Err(e) => println!("err {e}"),
                }
            }
            Ok(())
        }
    }
}

/// Datagrams per `sendmmsg` call.
const BATCH: usize = 64;

fn flood(targets: &str, flows: u32, seconds: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    let targets: Vec<SocketAddr> = targets
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("TARGETS: ADDR:PORT[,ADDR:PORT...]")?;
    let mut socks = Vec::new();
    for i in 0..flows as usize {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(targets[i % targets.len()])?;
        socks.push(s);
    }
    // 18 bytes of payload: a 64-byte Ethernet frame with its FCS.
    let payload = [0x5au8; 18];
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdr is valid; each points at one iovec.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = std::ptr::from_mut(v);
        m.msg_hdr.msg_iovlen = 1;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut sent: u64 = 0;
    while Instant::now() < deadline {
        for s in &socks {
            // SAFETY: `msgs` describes BATCH valid buffers for the call.
            let n = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n > 0 {
                sent += n as u64;
            }
        }
    }
    println!("sent {sent}");
    Ok(())
}

fn http_request(
    target: SocketAddr,
    keepalive: bool,
    conn: &mut Option<BufReader<TcpStream>>,
    timeout: Duration,
) -> Result<String> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&target, timeout).context("connect")?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        *conn = Some(BufReader::new(s));
    }
    let Some(reader) = conn.as_mut() else {
        bail!("no connection")
    };
    let from = reader.get_ref().peer_addr()?;
    let header = if keepalive { "keep-alive" } else { "close" };
    let request = format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: {header}\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes())?;
    let mut length = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed before the response");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            length = Some(v.trim().parse::<usize>()?);
        }
    }
    let mut body = vec![0u8; length.context("no Content-Length")?];
    reader.read_exact(&mut body)?;
    if !keepalive {
        *conn = None;
    }
    Ok(format!(
        "{} from={from}",
        String::from_utf8_lossy(&body).trim()
    ))
}

fn serve(name: &str, port: u16) -> Result<()> {
    let udp = UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("UDP port {port}"))?;
    let udp_name = name.to_string();
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(format!("{udp_name} seen={from}").as_bytes(), from);
        }
    });
    let listener =
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("TCP port {port}"))?;
    eprintln!("{name}: serving HTTP and UDP on port {port}");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let name = name.to_string();
        thread::spawn(move || {
            let _ = http_session(&name, stream);
        });
    }
    Ok(())
}

fn http_session(name: &str, stream: TcpStream) -> Result<()> {
    let peer = stream.peer_addr()?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let started = Instant::now();
    let mut reader = BufReader::new(stream);
    loop {
        let mut close = false;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() && !first {
                break;
            }
            first = false;
            if l == "connection: close" {
                close = true;
            }
        }
        let body = format!("{name} seen={peer}\n");
        let conn = if close { "close" } else { "keep-alive" };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{body}",
            body.len()
        );
        reader.get_mut().write_all(response.as_bytes())?;
        if close || started.elapsed() > Duration::from_secs(600) {
            return Ok(());
        }
    }
}
