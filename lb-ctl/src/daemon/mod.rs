//! `lb-ctl attach`: check everything that can be refused, load and
//! attach (or take over), then run the controller's tasks (control socket,
//! metrics, health checks, sweeps, device counters) until SIGINT/SIGTERM,
//! and detach cleanly, or leave the data path running (`--keep-state`).
//!
//! - [`boot`]: the steps up to a running controller, each refusal leaving
//!   the host as it was;
//! - [`serve`]: the tasks and the signal loop, then the stop;
//! - [`detach`]: `lb-ctl detach`, offline;
//! - [`options`]: what `lb-ctl attach` is given.

pub mod boot;
pub mod detach;
pub mod options;
pub mod serve;

use anyhow::Result;

use options::AttachOptions;

/// Run `lb-ctl attach` to completion.
///
/// # Errors
/// When anything is refused before the controller runs; nothing stays
/// attached then.
pub async fn run(opts: AttachOptions) -> Result<()> {
    let plan = boot::preflight(&opts)?;
    let owned = boot::own_tables(&opts)?;
    let listeners = boot::listen(&opts).await?;
    let loaded = boot::load_and_attach(&opts, &plan, &owned)?;
    let controller = boot::start_controller(&opts, plan, loaded)?;
    serve::serve(&opts, &owned, listeners, controller).await
}
