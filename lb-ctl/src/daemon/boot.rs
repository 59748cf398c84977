//! The steps of `lb-ctl attach` up to a running controller. Everything
//! that can be refused is checked before anything changes; once the host
//! is changed (interface settings, pins, attachments), a failure puts back
//! what this run changed, unless a data path that ran before keeps using
//! it.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};

use super::options::AttachOptions;
use crate::{
    controller::state::Controller,
    kernel::{
        pins::PinDirs,
        program::{Attachment, Dataplane, LoadOptions},
        sysctl,
        xdpmode::Choice,
    },
    model::{
        config::{ClusterSettings, Config},
        endpoint::VipId,
        services::{Mode, Services},
    },
};

/// What the config and the interfaces allow, checked before anything is
/// changed.
pub struct Plan {
    pub config: Config,
    services: Services,
    cluster: Option<ClusterSettings>,
    object: Option<Vec<u8>>,
    pub choice: Choice,
    /// The `mode: http` VIPs' sockets, bound.
    http_bound: Vec<(VipId, std::net::TcpListener)>,
}

/// Check the kernel, read the config, choose the attach mode, bind the `mode: http` VIPs'
/// sockets and check the cookie key: an impossible native attach, a port
/// taken or a key file unreadable is refused with nothing changed.
///
/// # Errors
/// Naming what is refused.
pub fn preflight(opts: &AttachOptions) -> Result<Plan> {
    crate::kernel::release::check_running().map_err(anyhow::Error::msg)?;
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
    let mut http_bound = Vec::new();
    for v in services.vips().filter(|v| v.spec.mode == Mode::Http) {
        if http_bound.is_empty() {
            crate::l7::cookie::Keys::load_or_create(&config.http.cookie_key_file)
                .map_err(anyhow::Error::msg)?;
        }
        http_bound.push((
            v.spec.id,
            crate::l7::listen::bind(v.spec.id).map_err(anyhow::Error::msg)?,
        ));
    }
    Ok(Plan {
        config,
        services,
        cluster,
        object,
        choice,
        http_bound,
    })
}

/// The tables under `--bpffs`, owned by this run: the lock that keeps a
/// second controller off them, and where they are.
pub struct Owned {
    _lock: nix::fcntl::Flock<std::fs::File>,
    pub dirs: PinDirs,
    /// An interface already ran lb (a pinned attachment to take over).
    pub had_links: bool,
}

/// Take the tables under `--bpffs`: refused while another controller owns
/// them, or when they hold another layout.
///
/// # Errors
/// Naming the other controller, or the layout found.
pub fn own_tables(opts: &AttachOptions) -> Result<Owned> {
    sysctl::ensure_bpffs(&opts.bpffs)?;
    let lock = crate::kernel::pins::lock(
        &opts.bpffs,
        &format!(
            "pid {}, control socket {}",
            std::process::id(),
            opts.socket.display()
        ),
    )?;
    let dirs = PinDirs::new(&opts.bpffs);
    for dir in [&dirs.root, &dirs.maps, &dirs.links] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Some((version, moved)) = crate::kernel::pins::upgrade(&dirs.root, &dirs.maps)
        .with_context(|| {
            format!(
                "moving the tables of an earlier layout into {}",
                dirs.maps.display()
            )
        })?
    {
        log::info!(
            "upgrade: moved the tables of layout v{version} into {} ({}): connections and \
             sessions are kept; the tables that layout had otherwise (for v5: unconfirmed \
             flows, whose clients retransmit) and the outcome counters start afresh",
            dirs.maps.display(),
            moved.join(", ")
        );
    }
    let entries: Vec<String> = std::fs::read_dir(&dirs.root)
        .with_context(|| format!("reading {}", dirs.root.display()))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .collect();
    crate::kernel::pins::check_layout(&dirs.root, &entries)?;
    let had_links = opts.ifaces.iter().any(|i| dirs.link(i).exists());
    Ok(Owned {
        _lock: lock,
        dirs,
        had_links,
    })
}

/// The sockets this run serves on; the control socket's file is removed
/// when they are dropped.
pub struct Listeners {
    pub control: tokio::net::UnixListener,
    pub metrics: Option<tokio::net::TcpListener>,
    pub(super) guard: SocketGuard,
}

/// Listen on the metrics address (if any) and the control socket.
///
/// # Errors
/// When either is taken.
pub async fn listen(opts: &AttachOptions) -> Result<Listeners> {
    let metrics = match opts.metrics_address {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics on {addr}"))?,
        ),
        None => None,
    };
    let control = crate::api::server::bind(&opts.socket)?;
    Ok(Listeners {
        control,
        metrics,
        guard: SocketGuard(opts.socket.clone()),
    })
}

/// The program loaded and attached, on the model moved to its tables.
pub struct Loaded {
    dataplane: Dataplane,
    services: Services,
    attached: Vec<Attachment>,
    /// The interface settings this run changed, to put back at the stop.
    pub sysctl_changes: Vec<sysctl::Changed>,
}

/// Set the interface settings, load the program on the (kept) tables, move
/// the model onto the ids they use, and attach or take over. On failure,
/// what this run changed is put back.
///
/// # Errors
/// When the kernel refuses the program, a map or an attachment.
pub fn load_and_attach(opts: &AttachOptions, plan: &Plan, owned: &Owned) -> Result<Loaded> {
    let sysctl_changes = sysctl::prepare_forwarding(&opts.ifaces)?;
    let mut dataplane = match Dataplane::load(&LoadOptions {
        max_connections: plan.config.limits.max_connections,
        max_sessions: plan.config.limits.max_sessions,
        max_half_open: plan.config.limits.max_half_open,
        pin_dir: Some(owned.dirs.maps.clone()),
        object: plan.object.clone(),
        shared: plan.cluster.is_some(),
    }) {
        Ok(d) => d,
        Err(e) => {
            if !owned.had_links {
                sysctl::restore(&sysctl_changes);
            }
            return Err(anyhow::Error::new(e).context("loading the XDP program"));
        }
    };
    match configure(&mut dataplane, opts, plan, owned) {
        Ok((services, attached)) => Ok(Loaded {
            dataplane,
            services,
            attached,
            sysctl_changes,
        }),
        Err(e) => {
            if owned.had_links {
                // The data path that ran before keeps running.
                dataplane.release();
            } else {
                dataplane.detach();
                if !opts.keep_state {
                    dataplane.unpin();
                }
                sysctl::restore(&sysctl_changes);
            }
            Err(e)
        }
    }
}

/// Tables kept by an earlier controller are moved on to this config
/// without a gap (the ids they use stay valid), then the program is
/// attached.
fn configure(
    dataplane: &mut Dataplane,
    opts: &AttachOptions,
    plan: &Plan,
    owned: &Owned,
) -> Result<(Services, Vec<Attachment>)> {
    let kept = dataplane.tables.kept()?;
    // Every address the kept tables may still carry traffic of, retired
    // backends included, passes the address filter.
    let kept_vips: Vec<_> = kept.vips.iter().map(|v| v.id.endpoint.addr).collect();
    let kept_backends: Vec<_> = kept.backends.iter().map(|b| b.endpoint.addr).collect();
    dataplane
        .tables
        .filter_in_addresses(&kept_vips, &kept_backends)?;
    let services = plan.services.on_kept_ids(&kept)?;
    dataplane
        .tables
        .set_settings(&plan.config.timeouts.to_settings())?;
    dataplane
        .tables
        .apply(&Services::from_kept(&kept), &services)?;
    // Kept VIP entries carry the last controller's sharing flag.
    dataplane.tables.rewrite_vips(&services)?;
    let attached = dataplane.attach(&opts.ifaces, plan.choice.mode, Some(&owned.dirs.links))?;
    Ok((services, attached))
}

/// Log the attach, and start the controller with the proxy and the
/// cluster.
///
/// # Errors
/// When the cookie key or the cluster's tables cannot be had.
pub fn start_controller(opts: &AttachOptions, plan: Plan, loaded: Loaded) -> Result<Running> {
    let adopted: Vec<&str> = loaded
        .attached
        .iter()
        .filter(|a| a.adopted)
        .map(|a| a.iface.as_str())
        .collect();
    log::info!(
        "attached to {} in {} mode ({}); {} VIP(s); maps pinned in {}; control socket {}",
        opts.ifaces.join(", "),
        plan.choice.mode,
        plan.choice.why,
        loaded.services.vips().count(),
        PinDirs::new(&opts.bpffs).maps.display(),
        opts.socket.display()
    );
    if !adopted.is_empty() {
        log::info!(
            "took over the running data path on {} (program replaced atomically, kept connections and sessions in use)",
            adopted.join(", ")
        );
    }
    let mut c = Controller::new(loaded.services, loaded.dataplane, opts.ifaces.clone());
    c.mode = (plan.choice.mode.to_string(), plan.choice.why.clone());
    c.cookie_key_file = plan.config.http.cookie_key_file.clone();
    c.config_file = opts.config.clone();
    c.running = Config {
        vips: Vec::new(),
        ..plan.config
    };
    c.start_http(plan.http_bound).map_err(anyhow::Error::msg)?;
    if let Some(settings) = plan.cluster {
        log::info!(
            "cluster: sharing sessions through {} (stream {:?}) as node {:?}",
            settings.shown_store(),
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
    c.announce_state_file = crate::announce::state_file(&opts.socket);
    if let Some(announce) = c.running.announce.clone() {
        log::info!(
            "announce: VIPs on interface {} when {}, after {} from now; {} drain at a stop",
            announce.interface,
            announce.when.as_str(),
            humantime::format_duration(announce.delay),
            humantime::format_duration(announce.drain)
        );
        c.announcer = Some(crate::announce::Announcer::start(
            announce,
            c.announce_state_file.clone(),
        )?);
        c.announce();
    }
    c.resolve_dsr_backends();
    Ok(Running {
        controller: Arc::new(Mutex::new(c)),
        sysctl_changes: loaded.sysctl_changes,
        choice: plan.choice,
    })
}

/// A started controller and what its tasks and its stop need.
pub struct Running {
    pub controller: Arc<Mutex<Controller>>,
    /// The interface settings this run changed, to put back at the stop.
    pub sysctl_changes: Vec<sysctl::Changed>,
    pub choice: Choice,
}

/// Removes the control socket's file when dropped.
pub(super) struct SocketGuard(PathBuf);
impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
