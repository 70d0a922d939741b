//! The state of one app: everything its handlers share, and the threads that work for it.
//!
//! Nothing here is process-wide: the buffer pool, the memory budget of whole photos, the log
//! and its integrator belong to one app, so several apps (tests, or instances on other data
//! directories) run in one process without sharing anything, and an app that stops ends its
//! threads ([`Background`]).

use std::sync::Arc;

use hattama_core::media::MediaLimits;

use crate::keys::ServerKeys;
use crate::routes::tus::{UploadSlots, WholeInMemory};
use crate::settings::Settings;
use crate::storage::{BufPool, ReviewStorage, Storage};

/// Shared state of the handlers.
pub struct AppState {
    /// Storage.
    pub storage: Arc<dyn Storage>,
    /// The object store (`[storage.objects]`): the log's tiles and checkpoints, renditions.
    /// Opened once, by `Application::build`, and shared by the log and the thumbnails.
    pub objects: Arc<dyn crate::objects::ObjectBackend>,
    /// Signing keys.
    pub keys: Arc<ServerKeys>,
    /// Settings.
    pub settings: Settings,
    /// The photo limits, from the settings.
    pub media_limits: MediaLimits,
    /// Per-upload locks.
    pub uploads: UploadSlots,
    /// The public log.
    pub log: Arc<crate::log::Log>,
    /// The public views (gallery, API, open data) and their cache.
    pub gallery: Arc<crate::gallery::Gallery>,
    /// The review's storage (the same database as `storage`).
    pub review: Arc<dyn ReviewStorage>,
    /// The console's storage (the same database): invites, devices, imports.
    pub console: Arc<dyn crate::storage::ConsoleStorage>,
    /// The election-night dashboard's counts, kept until storage changes.
    pub dashboards: crate::console::Dashboards,
    /// Failed logins of the review UI.
    pub login_throttle: crate::review::LoginThrottle,
    /// Thumbnails and the server-wide bound on photo decodes.
    pub thumbs: Arc<crate::thumbs::Thumbnails>,
    /// Prometheus metrics (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Rate limits per client and per device.
    pub rate_limits: Arc<crate::ratelimit::RateLimits>,
    /// The free-space floor of uploads.
    pub free_space: crate::ingest::FreeSpace,
    /// Reused buffers of large photos received whole.
    pub photo_bufs: BufPool,
    /// Bytes of whole photos held in memory by requests now (`routes::tus`).
    pub whole_in_memory: WholeInMemory,
    /// The witness policy (`witness_policy`), handed to devices at enrollment and checked by
    /// the gallery's evidence pages; `None` without witnesses.
    pub witness_policy: Option<Arc<crate::witnessing::ServerPolicy>>,
    /// Set packages being made or sent now (`package::set`).
    pub set_packages: crate::package::set::SetSlots,
}

/// The app's own threads (the log's integrator, the witnessing): when dropped, the log is
/// stopped and the threads joined.
pub struct Background {
    log: Arc<crate::log::Log>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    /// The threads working on `log` (none yet).
    pub fn new(log: Arc<crate::log::Log>) -> Self {
        Self { log, threads: Vec::new() }
    }

    /// Adds a thread that ends after [`crate::log::Log::stop`].
    pub fn push(&mut self, thread: std::thread::JoinHandle<()>) {
        self.threads.push(thread);
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.log.stop();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a background thread of the app panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::settings::Settings;
    use crate::startup::Application;

    /// Integrator threads of this process (`/proc/self/task` names them), once there are
    /// `expected` (a new thread names itself when it starts) or after 10 s.
    fn integrators(expected: usize) -> usize {
        let count = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
                .filter(|comm| comm.trim_end() == "log-integrator")
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count() != expected && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        count()
    }

    fn settings(dir: &std::path::Path) -> Settings {
        let mut settings = Settings::for_dir(dir);
        // Readiness must not depend on the free space of the machine that runs the test.
        settings.limits.min_free_bytes = 0;
        settings
    }

    async fn status(http: &reqwest::Client, url: &str) -> Result<u16, reqwest::Error> {
        Ok(http.get(url).send().await?.status().as_u16())
    }

    /// Two apps on port 0 in one process share nothing: one stops (its listener closes, its
    /// integrator thread ends, its data directory is free again) while the other keeps serving
    /// with its integrator alive.
    #[actix_web::test]
    async fn two_apps_run_in_one_process_and_one_stops_alone() {
        let (one_dir, two_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let before = integrators(0);
        let one = Application::build(settings(one_dir.path())).unwrap();
        let two = Application::build(settings(two_dir.path())).unwrap();
        assert_ne!(one.addr(), two.addr());
        assert_eq!(integrators(before + 2), before + 2);
        let (one_url, two_url) = (one.url(), two.url());
        let stop_one = one.stop_handle();
        let one_run = actix_web::rt::spawn(one.run());
        let two_run = actix_web::rt::spawn(two.run());
        let http = reqwest::Client::new();
        for url in [&one_url, &two_url] {
            assert_eq!(status(&http, &format!("{url}/readyz")).await.unwrap(), 200, "{url}");
        }

        stop_one.stop(true).await;
        one_run.await.unwrap().unwrap();
        assert_eq!(integrators(before + 1), before + 1, "the stopped app's ended");
        assert!(status(&http, &format!("{one_url}/readyz")).await.is_err(), "one is closed");
        // Past the integrator's idle beat (1 s): the other one's is still going round.
        actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(status(&http, &format!("{two_url}/readyz")).await.unwrap(), 200);
        assert_eq!(status(&http, &format!("{two_url}/healthz")).await.unwrap(), 200);
        // The stopped app let go of its data directory: a new app opens it.
        let again = Application::build(settings(one_dir.path())).unwrap();
        assert_eq!(integrators(before + 2), before + 2);
        drop(again);
        assert_eq!(integrators(before + 1), before + 1, "an app never run stops too");

        two_run.abort();
    }
}
