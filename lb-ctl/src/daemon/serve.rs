//! The running controller's tasks — control socket, metrics, health
//! checks, sweeps, the devices' XDP error counters — and its signals:
//! SIGHUP reloads the config file, SIGINT/SIGTERM stop it.

use std::{
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

use super::{
    boot::{Listeners, Owned, Running},
    options::AttachOptions,
};
use crate::{
    controller::state::Controller,
    kernel::{ethtool, sysctl, xdpmode::Choice},
    sync::lock,
};

/// How often the devices' XDP error counters are read.
const XDP_ERROR_WATCH: Duration = Duration::from_secs(2);

/// How often the announced VIPs are checked against the model (the end of
/// `announce.delay` is seen within this).
const ANNOUNCE_TICK: Duration = Duration::from_millis(250);

/// Serve until SIGINT/SIGTERM, then stop.
///
/// # Errors
/// When a signal handler or a timer cannot be had.
pub async fn serve(
    opts: &AttachOptions,
    owned: &Owned,
    listeners: Listeners,
    started: Running,
) -> Result<()> {
    let Running {
        controller,
        sysctl_changes,
        choice,
    } = started;
    let Listeners {
        control,
        metrics,
        guard,
    } = listeners;
    spawn_health_checks(&controller);
    spawn_servers(&controller, control, metrics)?;
    // Attached, the config applied, the socket answering: ready (for a
    // `Type=notify` service; nothing happens without NOTIFY_SOCKET).
    let status = format!("forwarding on {}", opts.ifaces.join(", "));
    if let Err(e) = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]) {
        log::warn!("telling the service manager that lb is ready: {e}");
    }
    signal_loop(opts, &controller, &choice).await?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if !opts.keep_state {
        withdraw_and_drain(&controller).await;
    }
    stop(opts, owned, &controller, &sysctl_changes);
    // The control socket's file goes last.
    drop(guard);
    Ok(())
}

/// The health checks follow the controller's targets; their verdicts are
/// applied through it.
fn spawn_health_checks(controller: &Arc<Mutex<Controller>>) {
    let (targets, book) = {
        let c = lock(controller);
        (c.targets.subscribe(), Arc::clone(&c.health))
    };
    let (verdicts, incoming) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(crate::health::supervise(targets, book, verdicts));
    tokio::spawn(apply_verdicts(Arc::clone(controller), incoming));
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

/// The API on the control socket, and the metrics on their address.
fn spawn_servers(
    controller: &Arc<Mutex<Controller>>,
    control: tokio::net::UnixListener,
    metrics: Option<tokio::net::TcpListener>,
) -> Result<()> {
    if let Some(metrics) = metrics {
        log::info!(
            "serving metrics on http://{}/metrics",
            metrics.local_addr()?
        );
        let app = crate::api::server::metrics_router(Arc::clone(controller));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, app).await {
                log::error!("metrics endpoint: {e}");
            }
        });
    }
    let api = crate::api::server::router(Arc::clone(controller));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(control, api).await {
            log::error!("control socket: {e}");
        }
    });
    Ok(())
}

/// Reload on SIGHUP, sweep and watch the devices' counters on their ticks,
/// until SIGINT/SIGTERM.
async fn signal_loop(
    opts: &AttachOptions,
    controller: &Arc<Mutex<Controller>>,
    choice: &Choice,
) -> Result<()> {
    // The driver's XDP error counters: a warning while they grow.
    let mut xdp_watch = ethtool::Watch::default();
    xdp_watch.observe(ethtool::xdp_errors(&opts.ifaces));
    let mut watch_tick = tokio::time::interval(XDP_ERROR_WATCH);
    watch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    watch_tick.tick().await;
    let sweeping = Arc::new(AtomicBool::new(false));
    // A reload may change it: the timer follows.
    let mut interval = lock(controller).running.sweeper.interval;
    let mut sweep = sweep_timer(interval).await;
    // The announcements (the start's delay ends, addresses someone else
    // removed are put back), and a sweep interval a reload changed.
    let mut announce_tick = tokio::time::interval(ANNOUNCE_TICK);
    announce_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => reload(controller).await,
            _ = watch_tick.tick() => {
                for (iface, lost) in xdp_watch.observe(ethtool::xdp_errors(&opts.ifaces)) {
                    log::warn!("{}", ethtool::warning(&iface, lost, choice.mode));
                }
            }
            _ = sweep.tick() => start_sweep(controller, &sweeping),
            _ = announce_tick.tick() => {
                let c = Arc::clone(controller);
                let now = tokio::task::spawn_blocking(move || {
                    let mut c = lock(&c);
                    c.announce();
                    c.running.sweeper.interval
                })
                .await
                .unwrap_or(interval);
                // A reload (SIGHUP or the API) changed the sweep interval.
                if now != interval {
                    log::info!(
                        "sweeper: every {} now (was {})",
                        humantime::format_duration(now),
                        humantime::format_duration(interval)
                    );
                    interval = now;
                    sweep = sweep_timer(interval).await;
                }
            }
        }
    }
}

/// A timer ticking every `interval`, its immediate first tick taken.
async fn sweep_timer(interval: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t.tick().await;
    t
}

/// SIGHUP: apply the config file again (as `lb-ctl reload` does); a
/// refused file changes nothing, and the controller logs why.
async fn reload(controller: &Arc<Mutex<Controller>>) {
    let c = Arc::clone(controller);
    if let Err(e) = tokio::task::spawn_blocking(move || lock(&c).reload()).await {
        log::error!("reload: {e}");
    }
}

/// Sweep off the loop, so that control requests are served meanwhile; a
/// sweep still running skips this tick.
fn start_sweep(controller: &Arc<Mutex<Controller>>, sweeping: &Arc<AtomicBool>) {
    use std::sync::atomic::Ordering;
    if !sweeping.swap(true, Ordering::AcqRel) {
        let c = Arc::clone(controller);
        let busy = Arc::clone(sweeping);
        tokio::task::spawn_blocking(move || {
            crate::controller::sweep::sweep_tables(&c);
            busy.store(false, Ordering::Release);
        });
    }
}

/// Withdraw the announced VIPs, then keep forwarding for `announce.drain`
/// while the routers move the traffic away (the control socket answers
/// meanwhile). With `--keep-state` nothing is withdrawn: the data path
/// goes on forwarding, and the next controller takes the announcements
/// over.
async fn withdraw_and_drain(controller: &Arc<Mutex<Controller>>) {
    let drain = lock(controller).withdraw();
    if let Some(drain) = drain {
        log::info!(
            "stopping: VIPs withdrawn; forwarding for another {} (announce.drain) before detaching",
            humantime::format_duration(drain)
        );
        tokio::time::sleep(drain).await;
    }
}

/// Detach and put everything back, or (`--keep-state`) leave the data path
/// running for the next controller.
fn stop(
    opts: &AttachOptions,
    owned: &Owned,
    controller: &Arc<Mutex<Controller>>,
    sysctl_changes: &[sysctl::Changed],
) {
    let mut c = lock(controller);
    if opts.keep_state {
        c.dataplane.release();
        log::info!(
            "stopping with --keep-state: the program stays attached to {} and keeps forwarding \
             with the tables pinned in {}; the next `lb-ctl attach` takes over, `lb-ctl detach` removes it",
            opts.ifaces.join(", "),
            owned.dirs.root.display()
        );
    } else {
        log::info!("stopping: detaching from {}", opts.ifaces.join(", "));
        c.dataplane.detach();
        c.dataplane.unpin();
        let _ = std::fs::remove_dir(&owned.dirs.links);
        let _ = std::fs::remove_dir(&owned.dirs.root);
        sysctl::restore(sysctl_changes);
    }
}
