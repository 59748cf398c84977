//! `lb-ctl attach`: check everything that can be refused, load and
//! attach (or take over), then run the controller's tasks (control socket,
//! metrics, health checks, sweeps, device counters) until SIGINT/SIGTERM,
//! and detach cleanly, or leave the data path running (`--keep-state`).

pub mod detach;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    controller::state::Controller,
    kernel::{
        program::{Dataplane, LoadOptions},
        sysctl,
    },
    model::{config::Config, services::Services},
    sync::lock,
};

pub struct AttachOptions {
    pub ifaces: Vec<String>,
    pub config: Option<PathBuf>,
    pub xdp_mode: crate::kernel::xdpmode::Requested,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    pub keep_state: bool,
    /// Serve Prometheus metrics over HTTP here.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Load this eBPF object instead of the built-in program.
    pub program: Option<PathBuf>,
    /// This host's name in the cluster (overrides `cluster.node`).
    pub node: Option<String>,
}

/// How often the devices' XDP error counters are read.
const XDP_ERROR_WATCH: std::time::Duration = std::time::Duration::from_secs(2);

/// Run `lb-ctl attach` to completion.
///
/// # Errors
/// When anything is refused before the controller runs; nothing stays
/// attached then.
pub async fn run(opts: AttachOptions) -> Result<()> {
    let (config, services) = match &opts.config {
        Some(path) => Config::load(path)?,
        None => (Config::default(), Services::default()),
    };
    let cluster = config
        .cluster
        .as_ref()
        .map(|c| c.settings(opts.node.as_deref()))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let object = match &opts.program {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading the XDP program {}", path.display()))?,
        ),
        None => None,
    };
    // Choose the mode before touching anything: an impossible native
    // attach is refused with nothing changed.
    let mut facts = Vec::new();
    for name in &opts.ifaces {
        let index = nix::net::if_::if_nametoindex(name.as_str())
            .map_err(|_| anyhow::anyhow!("interface {name:?} does not exist"))?;
        facts.push(
            crate::kernel::xdpmode::facts(index)
                .with_context(|| format!("inspecting interface {name}"))?,
        );
    }
    let choice =
        crate::kernel::xdpmode::choose(opts.xdp_mode, &facts).map_err(anyhow::Error::msg)?;
    // The `mode: http` VIPs' sockets and the cookie key, before anything
    // is changed: a port taken or a key file unreadable is refused here.
    let mut http_bound = Vec::new();
    for v in services
        .vips()
        .filter(|v| v.spec.mode == crate::model::services::Mode::Http)
    {
        if http_bound.is_empty() {
            crate::l7::cookie::Keys::load_or_create(&config.http.cookie_key_file)
                .map_err(anyhow::Error::msg)?;
        }
        http_bound.push((
            v.spec.id,
            crate::l7::proxy::bind(v.spec.id).map_err(anyhow::Error::msg)?,
        ));
    }
    sysctl::ensure_bpffs(&opts.bpffs)?;
    let _owner = crate::kernel::pins::lock(
        &opts.bpffs,
        &format!(
            "pid {}, control socket {}",
            std::process::id(),
            opts.socket.display()
        ),
    )?;
    let dirs = crate::kernel::pins::PinDirs::new(&opts.bpffs);
    for dir in [&dirs.root, &dirs.maps, &dirs.links] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let entries: Vec<String> = std::fs::read_dir(&dirs.root)
        .with_context(|| format!("reading {}", dirs.root.display()))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .collect();
    crate::kernel::pins::check_layout(&dirs.root, &entries)?;
    let had_links = opts.ifaces.iter().any(|i| dirs.link(i).exists());
    let metrics = match opts.metrics_address {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics on {addr}"))?,
        ),
        None => None,
    };
    let listener = crate::api::server::bind(&opts.socket)?;
    let socket_guard = SocketGuard(opts.socket.clone());

    // Every refusal above leaves the host as it was; from here on the
    // settings are put back if the attach fails (unless a data path that
    // was already running keeps using them).
    let sysctl_changes = sysctl::prepare_forwarding(&opts.ifaces)?;
    let mut dataplane = match Dataplane::load(&LoadOptions {
        max_connections: config.limits.max_connections,
        max_sessions: config.limits.max_sessions,
        max_half_open: config.limits.max_half_open,
        pin_dir: Some(dirs.maps.clone()),
        object,
        shared: cluster.is_some(),
    }) {
        Ok(d) => d,
        Err(e) => {
            if !had_links {
                sysctl::restore(&sysctl_changes);
            }
            return Err(anyhow::Error::new(e).context("loading the XDP program"));
        }
    };
    let setup = (|| -> Result<(Services, Vec<crate::kernel::program::Attachment>)> {
        // Tables kept by an earlier controller are moved on to this config
        // without a gap: the ids they use stay valid.
        let kept = dataplane.tables.kept()?;
        let services = services.on_kept_ids(&kept)?;
        dataplane
            .tables
            .set_settings(&config.timeouts.to_settings())?;
        dataplane
            .tables
            .apply(&Services::from_kept(&kept), &services)?;
        // Kept VIP entries carry the last controller's sharing flag.
        dataplane.tables.rewrite_vips(&services)?;
        let attached = dataplane.attach(&opts.ifaces, choice.mode, Some(&dirs.links))?;
        Ok((services, attached))
    })();
    let (services, attached) = match setup {
        Ok(x) => x,
        Err(e) => {
            if had_links {
                // The data path that ran before keeps running.
                dataplane.release();
            } else {
                dataplane.detach();
                if !opts.keep_state {
                    dataplane.unpin();
                }
                sysctl::restore(&sysctl_changes);
            }
            return Err(e);
        }
    };
    let adopted: Vec<&str> = attached
        .iter()
        .filter(|a| a.adopted)
        .map(|a| a.iface.as_str())
        .collect();
    log::info!(
        "attached to {} in {} mode ({}); {} VIP(s); maps pinned in {}; control socket {}",
        opts.ifaces.join(", "),
        choice.mode,
        choice.why,
        services.vips().count(),
        dirs.maps.display(),
        opts.socket.display()
    );
    if !adopted.is_empty() {
        log::info!(
            "took over the running data path on {} (program replaced atomically, kept connections and sessions in use)",
            adopted.join(", ")
        );
    }

    let mut c = Controller::new(services, dataplane, opts.ifaces.clone());
    c.mode = (choice.mode.to_string(), choice.why.clone());
    c.cookie_key_file = config.http.cookie_key_file.clone();
    c.start_http(http_bound).map_err(anyhow::Error::msg)?;
    if let Some(settings) = cluster {
        log::info!(
            "cluster: sharing sessions through {} (stream {:?}) as node {:?}",
            settings.store,
            settings.stream,
            settings.node
        );
        let sessions = c.dataplane.tables.sessions_handle()?;
        let ring = c.dataplane.session_events.take();
        let lost = c.dataplane.session_events_lost.take();
        c.cluster = Some(Arc::new(crate::cluster::store::Cluster::start(
            settings,
            crate::cluster::Directory::new(&c.services),
            sessions,
            ring,
            lost,
        )?));
    }
    c.resolve_dsr_backends();
    let controller = Arc::new(Mutex::new(c));
    let (targets, book) = {
        let c = lock(&controller);
        (c.targets.subscribe(), Arc::clone(&c.health))
    };
    let (verdicts, incoming) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(crate::health::supervise(targets, book, verdicts));
    tokio::spawn(apply_verdicts(Arc::clone(&controller), incoming));
    // The driver's XDP error counters: a warning while they grow.
    let mut xdp_watch = crate::kernel::ethtool::Watch::default();
    xdp_watch.observe(crate::kernel::ethtool::xdp_errors(&opts.ifaces));
    let mut watch_tick = tokio::time::interval(XDP_ERROR_WATCH);
    watch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    watch_tick.tick().await;
    if let Some(metrics) = metrics {
        log::info!(
            "serving metrics on http://{}/metrics",
            metrics.local_addr()?
        );
        let app = crate::api::server::metrics_router(Arc::clone(&controller));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, app).await {
                log::error!("metrics endpoint: {e}");
            }
        });
    }
    let sweeping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut sweep = tokio::time::interval(config.sweeper.interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.tick().await;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let api = crate::api::server::router(Arc::clone(&controller));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, api).await {
            log::error!("control socket: {e}");
        }
    });
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let Some(path) = opts.config.clone() else {
                    log::warn!("SIGHUP: no --config file to reload");
                    continue;
                };
                let c = Arc::clone(&controller);
                let running = config.clone();
                let done = tokio::task::spawn_blocking(move || lock(&c).reload(&path, &running)).await;
                match done {
                    Ok(Ok(_)) => {} // logged by the change itself
                    Ok(Err(e)) => log::error!("reload refused, nothing changed: {e:#}"),
                    Err(e) => log::error!("reload: {e}"),
                }
            }
            _ = watch_tick.tick() => {
                for (iface, lost) in xdp_watch.observe(crate::kernel::ethtool::xdp_errors(&opts.ifaces)) {
                    log::warn!("{}", crate::kernel::ethtool::warning(&iface, lost, choice.mode));
                }
            }
            _ = sweep.tick() => {
                // Off the loop, so that control requests are served
                // meanwhile; a sweep still running skips this tick.
                if !sweeping.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    let c = Arc::clone(&controller);
                    let busy = Arc::clone(&sweeping);
                    tokio::task::spawn_blocking(move || {
                        crate::controller::sweep::sweep_tables(&c);
                        busy.store(false, std::sync::atomic::Ordering::Release);
                    });
                }
            }
        }
    }
    let mut c = lock(&controller);
    if opts.keep_state {
        c.dataplane.release();
        log::info!(
            "stopping with --keep-state: the program stays attached to {} and keeps forwarding \
             with the tables pinned in {}; the next `lb-ctl attach` takes over, `lb-ctl detach` removes it",
            opts.ifaces.join(", "),
            dirs.root.display()
        );
    } else {
        log::info!("stopping: detaching from {}", opts.ifaces.join(", "));
        c.dataplane.detach();
        c.dataplane.unpin();
        let _ = std::fs::remove_dir(&dirs.links);
        let _ = std::fs::remove_dir(&dirs.root);
        sysctl::restore(&sysctl_changes);
    }
    drop(socket_guard);
    Ok(())
}

struct SocketGuard(PathBuf);
impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Apply the health checks' verdicts to the controller, one at a time, off
/// the async threads.
async fn apply_verdicts(
    controller: Arc<Mutex<Controller>>,
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<crate::health::Verdict>,
) {
    while let Some((t, transition)) = incoming.recv().await {
        let c = Arc::clone(&controller);
        let _ = tokio::task::spawn_blocking(move || {
            let (down, reason) = match transition {
                crate::health::Transition::Down(r) => (true, r),
                crate::health::Transition::Up(r) => (false, r),
            };
            lock(&c).set_down(t.vip, t.backend, down, &reason);
        })
        .await;
    }
}
