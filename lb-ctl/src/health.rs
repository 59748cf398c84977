//! Health checks: how consecutive results move a backend up or down (pure,
//! tested here), and the probes themselves (a TCP connect, or an HTTP GET
//! answered 2xx/3xx), run from the balancer host, one task per backend.
//! What a check is (its config) lives in `model::health`. The checks
//! follow a list of targets and send verdicts on a channel; whoever owns
//! the model (the daemon, through the controller) applies them.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
};

use crate::model::health::{CheckKind, HealthCheck};
use crate::{
    model::{
        endpoint::{Endpoint, VipId},
        services::Services,
    },
    sync::lock,
};

/// Health-check records per (VIP, backend).
pub type HealthBook = std::collections::BTreeMap<(VipId, Endpoint), Record>;

/// One backend to check, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub vip: VipId,
    pub backend: Endpoint,
    pub check: HealthCheck,
}

/// The backends of `services` that have a health check.
#[must_use]
pub fn targets(services: &Services) -> Vec<Target> {
    services
        .vips()
        .filter_map(|v| v.spec.health_check.as_ref().map(|c| (v, c)))
        .flat_map(|(v, check)| {
            v.backends.iter().map(move |b| Target {
                vip: v.spec.id,
                backend: b.endpoint,
                check: check.clone(),
            })
        })
        .collect()
}

/// A backend's check record: its verdict and the run of equal results.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Down after `fall` consecutive failures; up again after `rise`
    /// consecutive successes. Starts up.
    pub down: bool,
    pub successes_in_a_row: u32,
    pub failures_in_a_row: u32,
    pub checks_ok: u64,
    pub checks_failed: u64,
    /// Why the last failed check failed.
    pub last_error: Option<String>,
}

/// A change of verdict, with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    Up(String),
    Down(String),
}

impl Record {
    /// Count one check result; returns the transition it causes, if any.
    pub fn record(
        &mut self,
        result: Result<(), String>,
        check: &HealthCheck,
    ) -> Option<Transition> {
        match result {
            Ok(()) => {
                self.checks_ok += 1;
                self.failures_in_a_row = 0;
                self.successes_in_a_row = self.successes_in_a_row.saturating_add(1);
                if self.down && self.successes_in_a_row >= check.rise {
                    self.down = false;
                    return Some(Transition::Up(format!(
                        "{} successful check(s) in a row",
                        self.successes_in_a_row
                    )));
                }
            }
            Err(e) => {
                self.checks_failed += 1;
                self.successes_in_a_row = 0;
                self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
                let reason = format!("{} failed check(s) in a row: {e}", self.failures_in_a_row);
                self.last_error = Some(e);
                if !self.down && self.failures_in_a_row >= check.fall {
                    self.down = true;
                    return Some(Transition::Down(reason));
                }
            }
        }
        None
    }
}

/// Run one check against `target` within the check's timeout.
///
/// # Errors
/// Saying why the check failed ("connect timed out", "answered 500", …).
pub async fn probe(check: &HealthCheck, target: SocketAddr) -> Result<(), String> {
    match tokio::time::timeout(check.timeout, probe_inner(check, target)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(check.timeout)
        )),
    }
}

/// Largest response head an http check reads.
const MAX_HEAD: usize = 16 * 1024;

async fn probe_inner(check: &HealthCheck, target: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if check.kind == CheckKind::Tcp {
        return Ok(());
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: lb-health-check\r\nConnection: close\r\n\r\n",
        check.path
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            return Err("the connection closed before an HTTP status line".into());
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let code = response.code.unwrap_or(0);
                return if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("GET {} answered {code}", check.path))
                };
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(format!("response head longer than {MAX_HEAD} bytes"));
            }
            Err(e) => return Err(format!("not an HTTP response: {e}")),
        }
    }
}

/// A change of a backend's verdict, for the owner of the model to apply.
pub type Verdict = (Target, Transition);

/// Run one checker task per backend that has a health check, following
/// the list of `targets` (backends added, removed, VIPs changed), keeping
/// each backend's record in `book`, and sending each verdict change on
/// `verdicts`. Each task checks on its own clock, so a slow or hung
/// backend delays no other check.
pub async fn supervise(
    mut targets: tokio::sync::watch::Receiver<Vec<Target>>,
    book: Arc<Mutex<HealthBook>>,
    verdicts: mpsc::UnboundedSender<Verdict>,
) {
    let mut running: HashMap<(VipId, Endpoint), (HealthCheck, JoinHandle<()>)> = HashMap::new();
    loop {
        let wanted = targets.borrow_and_update().clone();
        running.retain(|key, (check, task)| {
            let keep = wanted
                .iter()
                .any(|t| (t.vip, t.backend) == *key && t.check == *check);
            if !keep {
                task.abort();
                lock(&book).remove(key);
            }
            keep
        });
        for t in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                running.entry((t.vip, t.backend))
            {
                let check = t.check.clone();
                let task = tokio::spawn(check_loop(t, Arc::clone(&book), verdicts.clone()));
                slot.insert((check, task));
            }
        }
        if targets.changed().await.is_err() {
            return;
        }
    }
}

/// Check one backend every `interval`, for ever.
async fn check_loop(
    t: Target,
    book: Arc<Mutex<HealthBook>>,
    verdicts: mpsc::UnboundedSender<(Target, Transition)>,
) {
    let address = SocketAddr::from((t.backend.addr, t.backend.port));
    let mut tick = tokio::time::interval(t.check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = probe(&t.check, address).await;
        let transition = lock(&book)
            .entry((t.vip, t.backend))
            .or_default()
            .record(result, &t.check);
        if let Some(transition) = transition {
            if verdicts.send((t.clone(), transition)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_failures_take_it_down_and_rise_successes_bring_it_back() {
        let check = HealthCheck::default(); // rise 2, fall 3
        let mut r = Record::default();
        assert_eq!(r.record(Err("a".into()), &check), None);
        assert_eq!(r.record(Err("b".into()), &check), None);
        assert_eq!(r.record(Ok(()), &check), None, "a success resets the run");
        assert_eq!(r.record(Err("c".into()), &check), None);
        assert_eq!(r.record(Err("d".into()), &check), None);
        assert_eq!(
            r.record(Err("connect timed out".into()), &check),
            Some(Transition::Down(
                "3 failed check(s) in a row: connect timed out".into()
            ))
        );
        assert!(r.down);
        assert_eq!(r.record(Err("e".into()), &check), None, "already down");
        assert_eq!(r.record(Ok(()), &check), None);
        assert_eq!(
            r.record(Ok(()), &check),
            Some(Transition::Up("2 successful check(s) in a row".into()))
        );
        assert!(!r.down);
        assert_eq!((r.checks_ok, r.checks_failed), (3, 6));
    }
}
