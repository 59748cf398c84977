//! The real web application of the layer-7 tests: PHP with file sessions
//! on every backend host (`tests/apps`), and its one-line answer parsed.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::lab::{wait_for, Lab};

pub const APP_PORT: u16 = 8081;

/// The PHP application on every backend host, on its IPv4 and its IPv6
/// address (one session directory), killed on drop.
pub struct Apps {
    children: Vec<Vec<Child>>,
    lab_dir: PathBuf,
}

impl Apps {
    /// # Panics
    /// When an application does not listen within 5 s.
    #[must_use]
    pub fn start(lab: &Lab) -> Self {
        let mut apps = Self {
            children: Vec::new(),
            lab_dir: lab.workdir.clone(),
        };
        for i in 0..lab.backends.len() {
            let children = apps.spawn(lab, i);
            apps.children.push(children);
        }
        apps
    }

    /// # Panics
    /// When the application does not listen within 5 s.
    #[must_use]
    pub fn spawn(&self, lab: &Lab, i: usize) -> Vec<Child> {
        let b = &lab.backends[i];
        [b.addr.to_string(), format!("[{}]", b.addr6())]
            .iter()
            .map(|addr| self.spawn_on(lab, i, addr))
            .collect()
    }

    fn spawn_on(&self, lab: &Lab, i: usize, addr: &str) -> Child {
        let b = &lab.backends[i];
        let sessions = self.lab_dir.join(format!("sessions-{}", b.name));
        std::fs::create_dir_all(&sessions).expect("the sessions directory");
        let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps");
        let child = Command::new("ip")
            .args(["netns", "exec", &b.ns, "php", "-S"])
            .arg(format!("{addr}:{APP_PORT}"))
            .arg("-t")
            .arg(&app)
            .arg("-d")
            .arg(format!("session.save_path={}", sessions.display()))
            .env("BACKEND_NAME", &b.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("php -S");
        wait_for(Duration::from_secs(5), || {
            crate::netns::in_ns(
                &b.ns,
                &[
                    "ss",
                    "-Hltn",
                    &format!("src {addr} and sport = :{APP_PORT}"),
                ],
            )
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("LISTEN"))
        })
        .expect("the application listens within 5 s");
        child
    }

    /// Kill backend `i`'s application (both addresses).
    pub fn kill(&mut self, i: usize) {
        for mut c in self.children[i].drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Apps {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// One answer of the application, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub server: String,
    pub user: String,
    pub n: u32,
    pub lb_cookie: String,
    pub xff: String,
    /// `X-Forwarded-Proto` as the backend saw it.
    pub proto: String,
}

#[must_use]
pub fn page(line: &str) -> Option<Page> {
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .map(String::from)
    };
    Some(Page {
        server: field("server")?,
        user: field("user")?,
        n: field("n")?.parse().ok()?,
        lb_cookie: field("lb_cookie")?,
        xff: field("xff")?,
        proto: field("proto")?,
    })
}
