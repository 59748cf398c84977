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
    path::{Path, PathBuf},
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
        /// While this file exists, `GET /health` answers 500.
        #[arg(long)]
        sick_file: Option<PathBuf>,
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
        /// Stop after this long, even before COUNT requests (0: no limit).
        #[arg(long, default_value_t = 0)]
        for_ms: u64,
    },
    /// Attach an XDP program that passes everything to IFACES (veth peers of
    /// the balancer) and hold it until killed.
    XdpPass {
        #[arg(required = true)]
        ifaces: Vec<String>,
        /// Attach `lb_sink` instead: drop UDP to port 9, pass the rest.
        #[arg(long)]
        sink: bool,
    },
    /// Generate UDP frames in the kernel (BPF_PROG_TEST_RUN live frames with
    /// `lb_gen`) out of IFACE for SECONDS: 64-byte frames from SRC to DST,
    /// cycling through FLOWS source ports. Prints frames sent and seconds.
    XdpFlood {
        #[arg(long)]
        iface: String,
        /// Next hop's MAC address (the gateway's).
        #[arg(long)]
        dst_mac: String,
        #[arg(long)]
        src: std::net::Ipv4Addr,
        #[arg(long)]
        dst: std::net::SocketAddrV4,
        #[arg(long, default_value_t = 32)]
        flows: u32,
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Send spoofed TCP SYNs to TARGET through a raw socket: sources drawn
    /// from the prefix SOURCES (inside the lab's own range), at most COUNT
    /// of them and for at most SECONDS. Prints what was sent.
    SynFlood {
        target: std::net::SocketAddrV4,
        /// Source prefix, e.g. 198.19.0.0/17.
        #[arg(long)]
        sources: String,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// SYNs per second (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    /// Switch a connection to TARGET to the `echo` protocol (as a
    /// WebSocket upgrade), with COOKIE, send MESSAGE and print the reply.
    Upgrade {
        target: SocketAddr,
        #[arg(long)]
        cookie: Option<String>,
        #[arg(long, default_value = "hello")]
        message: String,
    },
    /// Serve WebSocket on PORT: echo every text message as `NAME: message`.
    WsEcho {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 8090)]
        port: u16,
    },
    /// Open a WebSocket to URL (`wss://` through TLS, trusting the CA in
    /// CA_FILE; `ws://` plain) at the address CONNECT, with COOKIE; send
    /// each line of standard input and print each answer on a line.
    Ws {
        url: String,
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        ca_file: Option<PathBuf>,
        #[arg(long)]
        cookie: Option<String>,
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
        /// Connect the socket to TARGET (as most UDP clients do): an ICMP
        /// "port unreachable" then fails the receive with ECONNREFUSED.
        #[arg(long)]
        connect: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve {
            name,
            port,
            sick_file,
        } => serve(&name, port, sick_file),
        Cmd::SynFlood {
            target,
            sources,
            count,
            seconds,
            rate,
        } => syn_flood(target, &sources, count, Duration::from_secs(seconds), rate),
        Cmd::WsEcho { name, port } => runtime()?.block_on(ws_echo(name, port)),
        Cmd::Ws {
            url,
            connect,
            ca_file,
            cookie,
        } => runtime()?.block_on(ws_client(&url, connect, ca_file, cookie)),
        Cmd::Upgrade {
            target,
            cookie,
            message,
        } => {
            let stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut reader = BufReader::new(stream);
            let cookie = cookie.map_or_else(String::new, |c| format!("Cookie: {c}\r\n"));
            reader.get_mut().write_all(
                format!(
                    "GET /ws HTTP/1.1\r\nHost: {target}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n{cookie}\r\n"
                )
                .as_bytes(),
            )?;
            let mut status = String::new();
            reader.read_line(&mut status)?;
            let mut line = String::new();
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                if line.trim().is_empty() {
                    break;
                }
            }
            if !status.contains(" 101 ") {
                println!("err {}", status.trim());
                return Ok(());
            }
            reader
                .get_mut()
                .write_all(format!("{message}\n").as_bytes())?;
            line.clear();
            reader.read_line(&mut line)?;
            println!("ok {}", line.trim());
            Ok(())
        }
        Cmd::XdpPass { ifaces, sink } => {
            let mut ebpf = aya::Ebpf::load(lb_ctl::kernel::program::PASS_PROGRAM)?;
            let name = if sink { "lb_sink" } else { "lb_pass" };
            let prog: &mut aya::programs::Xdp =
                ebpf.program_mut(name).context("XDP program")?.try_into()?;
            prog.load()?;
            for iface in &ifaces {
                prog.attach(iface, aya::programs::XdpMode::Driver)
                    .with_context(|| format!("attaching {name} to {iface}"))?;
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
            for_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let mut conn: Option<BufReader<TcpStream>> = None;
            let start = Instant::now();
            for i in 0..count {
                if for_ms > 0 && start.elapsed() >= Duration::from_millis(for_ms) {
                    break;
                }
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
        Cmd::XdpFlood {
            iface,
            dst_mac,
            src,
            dst,
            flows,
            seconds,
        } => xdp_flood(&iface, &dst_mac, src, dst, flows, seconds),
        Cmd::Udp {
            target,
            count,
            interval_ms,
            timeout_ms,
            connect,
        } => {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            sock.set_read_timeout(Some(Duration::from_millis(timeout_ms)))?;
            if connect {
                sock.connect(target)?;
            }
            for i in 0..count {
                if i > 0 && interval_ms > 0 {
                    thread::sleep(Duration::from_millis(interval_ms));
                }
                if connect {
                    // A refusal reported for the previous datagram fails
                    // this send; the receive below reports it too.
                    if let Err(e) = sock.send(b"who") {
                        println!("err {e}");
                        continue;
                    }
                } else {
                    sock.send_to(b"who", target)?;
                }
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

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .context("MAC address")?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("{s:?} is not a MAC address"))
}

fn xdp_flood(
    iface: &str,
    dst_mac: &str,
    src: std::net::Ipv4Addr,
    dst: std::net::SocketAddrV4,
    flows: u32,
    seconds: u64,
) -> Result<()> {
    use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
    let src_mac =
        parse_mac(std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))?.trim())?;
    let mut ebpf = aya::Ebpf::load(lb_ctl::kernel::program::PASS_PROGRAM)?;
    let mut conf: aya::maps::Array<_, u32> =
        aya::maps::Array::try_from(ebpf.map_mut("GEN_FLOWS").context("GEN_FLOWS")?)?;
    conf.set(0, flows, 0)?;
    // The interface's receive queue must be registered, which an attached
    // XDP program does: attach lb_pass unless a program is there already.
    let pass: &mut Xdp = ebpf.program_mut("lb_pass").context("lb_pass")?.try_into()?;
    pass.load()?;
    if pass.attach(iface, XdpMode::Driver).is_err() {
        eprintln!("{iface} already runs an XDP program; using it");
    }
    let gen: &mut Xdp = ebpf.program_mut("lb_gen").context("lb_gen")?.try_into()?;
    gen.load()?;
    let mut frame = Vec::with_capacity(60);
    frame.extend_from_slice(&parse_mac(dst_mac)?);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.ip().octets());
    let sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let sum = (sum & 0xffff) + (sum >> 16);
    let csum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&10_000u16.to_be_bytes());
    frame.extend_from_slice(&dst.port().to_be_bytes());
    frame.extend_from_slice(&26u16.to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(&[0x5a; 18]);
    let ifindex = nix::net::if_::if_nametoindex(iface)?;
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut sent: u64 = 0;
    const CHUNK: u32 = 200_000;
    while Instant::now() < deadline {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        opts.ctx_in = Some(&ctx);
        opts.repeat = CHUNK;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
        gen.test_run(opts)
            .context("BPF_PROG_TEST_RUN in live-frames mode")?;
        sent += u64::from(CHUNK);
    }
    println!("sent {sent} in {:.3}", started.elapsed().as_secs_f64());
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

fn syn_flood(
    target: std::net::SocketAddrV4,
    sources: &str,
    count: u64,
    limit: Duration,
    rate: u64,
) -> Result<()> {
    let (net, len) = sources
        .split_once('/')
        .context("--sources is ADDRESS/LENGTH")?;
    let net: std::net::Ipv4Addr = net.parse().context("--sources address")?;
    let len: u32 = len.parse().context("--sources length")?;
    anyhow::ensure!((8..=32).contains(&len), "--sources length must be 8-32");
    let host_bits = 32 - len;
    let base = u32::from(net) & !((1u64 << host_bits) as u32).wrapping_sub(1);
    // SAFETY: plain socket(2) call; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    anyhow::ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let dest = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*target.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let start = Instant::now();
    let mut sent = 0u64;
    let mut x: u32 = 0x9e37_79b9;
    while sent < count && start.elapsed() < limit {
        if rate > 0 && sent.is_multiple_of(64) {
            // Paced: no more than `rate` per second so far.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
        }
        // xorshift: spread sources and ports.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let host = if host_bits == 0 {
            0
        } else {
            x & ((1u64 << host_bits) as u32 - 1)
        };
        let src = std::net::Ipv4Addr::from(base | host);
        let sport = 1024 + (x >> 16) as u16 % 60000;
        let mut frame = lb_tests::packet::Frame::tcp(
            (src, sport),
            (*target.ip(), target.port()),
            lb_tests::packet::SYN,
        );
        frame.payload.clear();
        let packet = &frame.build()[14..];
        // SAFETY: `packet` and `dest` are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const dest).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc >= 0 {
            sent += 1;
        }
    }
    println!("sent {sent} in {:.2}", start.elapsed().as_secs_f64());
    Ok(())
}

fn serve(name: &str, port: u16, sick_file: Option<PathBuf>) -> Result<()> {
    let udp = UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("UDP port {port}"))?;
    let listener =
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("TCP port {port}"))?;
    // IPv6 on sockets of their own (IPv6 only), so that IPv4 clients are
    // seen as IPv4 addresses.
    let v6 = |kind: socket2::Type| -> Result<socket2::Socket> {
        let s = socket2::Socket::new(socket2::Domain::IPV6, kind, None)?;
        s.set_only_v6(true)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
        Ok(s)
    };
    let udp6: UdpSocket = v6(socket2::Type::DGRAM)
        .with_context(|| format!("UDP port {port} (IPv6)"))?
        .into();
    let tcp6 = v6(socket2::Type::STREAM).with_context(|| format!("TCP port {port} (IPv6)"))?;
    tcp6.listen(1024)?;
    let listener6: TcpListener = tcp6.into();
    for udp in [udp, udp6] {
        let udp_name = name.to_string();
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(format!("{udp_name} seen={from}").as_bytes(), from);
            }
        });
    }
    eprintln!("{name}: serving HTTP and UDP on port {port}, IPv4 and IPv6");
    let accept = move |listener: TcpListener, name: String, sick_file: Option<PathBuf>| {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let name = name.clone();
            let sick = sick_file.clone();
            thread::spawn(move || {
                let _ = http_session(&name, stream, sick.as_deref());
            });
        }
    };
    let (name6, sick6) = (name.to_string(), sick_file.clone());
    thread::spawn(move || accept(listener6, name6, sick6));
    accept(listener, name.to_string(), sick_file);
    Ok(())
}

fn http_session(name: &str, stream: TcpStream, sick_file: Option<&Path>) -> Result<()> {
    let peer = stream.peer_addr()?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let started = Instant::now();
    let mut reader = BufReader::new(stream);
    loop {
        let mut close = false;
        let mut upgrade = false;
        let mut line = String::new();
        let mut first = true;
        let mut path = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if first {
                path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() && !first {
                break;
            }
            first = false;
            if l == "connection: close" {
                close = true;
            }
            if l == "upgrade: echo" {
                upgrade = true;
            }
        }
        if upgrade {
            // A protocol switch (as a WebSocket's): then every line sent
            // comes back prefixed with this server's name.
            reader.get_mut().write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
            )?;
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                let reply = format!("{name}: {line}");
                reader.get_mut().write_all(reply.as_bytes())?;
            }
        }
        let sick = path == "/health" && sick_file.is_some_and(Path::exists);
        // `/bytes/N`: a large answer (N bytes), for path-MTU tests.
        let size = path
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<usize>().ok());
        let (status, body) = if sick {
            ("500 Internal Server Error", format!("{name} sick\n"))
        } else if let Some(n) = size {
            let mut body = format!("{name} seen={peer}\n");
            body.extend(std::iter::repeat_n('x', n.saturating_sub(body.len())));
            ("200 OK", body)
        } else {
            ("200 OK", format!("{name} seen={peer}\n"))
        };
        let conn = if close { "close" } else { "keep-alive" };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{body}",
            body.len()
        );
        reader.get_mut().write_all(response.as_bytes())?;
        if close || started.elapsed() > Duration::from_secs(600) {
            return Ok(());
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A WebSocket echo server: every text message comes back as
/// `NAME: message`.
async fn ws_echo(name: String, port: u16) -> Result<()> {
    use futures_util::{SinkExt as _, StreamExt as _};
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
                    let answer = format!("{name}: {text}");
                    if ws.send(answer.into()).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
}

/// A WebSocket client: each line of standard input is sent, each answer
/// printed (`err <reason>` when the connection fails).
async fn ws_client(
    url: &str,
    connect: SocketAddr,
    ca_file: Option<PathBuf>,
    cookie: Option<String>,
) -> Result<()> {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio::io::AsyncBufReadExt as _;
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, http::HeaderValue};

    let mut request = url.into_client_request()?;
    if let Some(c) = &cookie {
        request
            .headers_mut()
            .insert("cookie", HeaderValue::from_str(c)?);
    }
    let host = request
        .uri()
        .host()
        .context("the URL has no host")?
        .to_string();
    let tcp = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(connect),
    )
    .await
    .context("connect: timed out")??;
    let stream: Box<dyn AsyncStream> = match ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(&ca).with_context(|| ca.display().to_string())?;
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                roots.add(cert?)?;
            }
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
            let name = rustls::pki_types::ServerName::try_from(host)?;
            Box::new(connector.connect(name, tcp).await?)
        }
        None => Box::new(tcp),
    };
    let (mut ws, _) = match tokio_tungstenite::client_async(request, stream).await {
        Ok(done) => done,
        Err(e) => {
            println!("err {e}");
            return Ok(());
        }
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        ws.send(line.into()).await?;
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => println!("ok {t}"),
            Ok(other) => println!("err {other:?}"),
            Err(_) => println!("err no answer within 3 s"),
        }
    }
    Ok(())
}

trait AsyncStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AsyncStream for T {}
