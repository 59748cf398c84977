//! The sweep tick: expired entries deleted without holding the
//! controller, then what the sweep found is accounted.

use std::sync::Mutex;

use super::state::Controller;
use crate::sync::lock;

/// Sweep the tables without holding the controller: only the sweeper's
/// setup (its own map references and the timeouts) takes the lock, so the
/// control socket answers while millions of entries are scanned.
pub fn sweep_tables(controller: &Mutex<Controller>) {
    let (sweeper, cluster) = {
        let c = lock(controller);
        let share = match (&c.cluster, crate::kernel::clock::now_ns()) {
            (Some(cluster), Ok(now)) => cluster.due(now),
            _ => std::collections::HashMap::new(),
        };
        (
            c.dataplane.tables.sweeper(&c.services, share),
            c.cluster.clone(),
        )
    };
    match sweeper.and_then(crate::kernel::sweeper::Sweeper::run) {
        Ok(r) => {
            // Without the controller: a pass over a million sessions
            // takes a while.
            if let Some(cluster) = cluster {
                cluster.publish(&r.to_share);
            }
            log::debug!(
                "sweep: deleted {} of {} connection entries, {} of {} unconfirmed-flow entries, \
                 {} of {} sessions and {} of {} pending sessions in {:.3?}",
                r.connections.deleted,
                r.connections.scanned,
                r.half_open.deleted,
                r.half_open.scanned,
                r.sessions.deleted,
                r.sessions.scanned,
                r.pending.deleted,
                r.pending.scanned,
                r.elapsed
            );
            let mut c = lock(controller);
            c.resolve_dsr_backends();
            c.report_drained(&r.live);
            c.account(&r);
            let deleted = [
                r.connections.deleted,
                r.half_open.deleted,
                r.sessions.deleted,
                r.pending.deleted,
            ];
            for (total, d) in c.swept_total.iter_mut().zip(deleted) {
                *total += d;
            }
            c.last_sweep = Some((std::time::Instant::now(), r.elapsed, deleted));
        }
        Err(e) => log::error!("sweep failed: {e}"),
    }
}
