//! The real server app (`hattama_server::startup::Application`) run in the test's own process,
//! zero2prod's `spawn_app`: for the API tests that need no process to die. Each app has a fresh
//! temporary data directory with the election imported, listens on a port of its own, and runs
//! on a thread of its own; dropping its [`TestApp`] stops it and joins that thread, whose end
//! means that the app's integrator and witnessing threads have ended and its state (storage
//! connections, open files, the data directory's lock) is dropped (`Application::run`).
//!
//! Nothing of an app is process-wide (`hattama_server::state`), so apps of tests running side by
//! side in one process (`cargo test`) share nothing, just as apps in processes of their own
//! (nextest) do. What the binary does to its process is not done here: the files an app creates
//! follow the test process's umask, not the binary's 077. Tests that kill the server, pause it at
//! a pause point, run it under a umask, load its TLS files or read what it prints run the real
//! binary instead ([`crate::server::TestServer`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use hattama_server::startup::Application;
use serde_json::Value;

use crate::backend;
use crate::server::{RunningServer, invite};

/// A running in-process app, stopped on drop.
pub struct TestApp {
    /// Its data directory.
    pub data_dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// Tells the app's thread to stop the app (dropped or sent: either stops it).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The app's thread: it returns once the app and its threads have stopped.
    thread: Option<JoinHandle<std::io::Result<()>>>,
    /// The data directory, removed on drop (unless taken by [`TestApp::stop`]).
    dir: Option<tempfile::TempDir>,
}

/// Starts the app on a fresh data directory with the election `e2e` of `precincts` stations
/// (`fixtures::election`), with the default settings.
pub fn spawn_app(precincts: usize) -> TestApp {
    spawn_app_with(&crate::fixtures::election("e2e", precincts), &[])
}

/// Starts the app on a fresh data directory with this election definition and these settings,
/// named as the environment variables that would set them for the binary
/// (`HATTAMA__LIMITS__MIN_FREE_BYTES`), on the storage of this test run
/// (`HATTAMA_TEST_BACKEND`, [`backend::settings_with`]).
pub fn spawn_app_with(election: &Value, overrides: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_owned();
    import_election(&data_dir, election);
    let settings =
        backend::settings_with(&data_dir, Some(SocketAddr::from(([127, 0, 0, 1], 0))), overrides);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("test-app".into())
        .spawn(move || {
            // As `hattama-server serve` runs it: a Tokio runtime entered while the app is built
            // (storage, objects, listeners), then an actix System that runs it.
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let entered = runtime.enter();
            let app = match Application::build(settings) {
                Ok(app) => app,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Ok(());
                }
            };
            let stop = app.stop_handle();
            let _ = ready_tx.send(Ok((app.url(), app.addr())));
            let served = actix_rt::System::new().block_on(async move {
                actix_rt::spawn(async move {
                    // A test that is over has no request worth finishing.
                    let _ = stop_rx.await;
                    stop.stop(false).await;
                });
                app.run().await
            });
            drop(entered);
            served
        })
        .expect("spawn the app's thread");
    let (url, addr) = match ready_rx.recv() {
        Ok(Ok(bound)) => bound,
        Ok(Err(e)) => panic!("the app did not start: {e}"),
        Err(_) => panic!("the app's thread ended before the app started: {:?}", thread.join()),
    };
    // As the binary does (`serve`): the admin commands (`invite create`) read it.
    std::fs::write(data_dir.join("listening.url"), format!("{url}\n")).expect("listening.url");
    TestApp { data_dir, url, addr, stop: Some(stop_tx), thread: Some(thread), dir: Some(dir) }
}

impl TestApp {
    /// Creates enrollment codes for precincts of election `e2e` (`invite create`).
    pub fn invite(&self, precincts: &[&str], count: usize) -> Vec<String> {
        invite(&self.data_dir, precincts, count)
    }

    /// Stops the app as dropping it does, and hands over its data directory, kept until the
    /// returned value is dropped.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shut_down();
        self.dir.take().expect("the data directory is taken once")
    }

    /// Stops the app's listeners and waits for its thread, which ends once `Application::run`
    /// has stopped the app's own threads.
    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else { return };
        let ended = thread.join();
        // A failing test is already unwinding: its own panic says more.
        if !std::thread::panicking() {
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the app ended with an error: {e}"),
                Err(_) => panic!("the app's thread panicked"),
            }
        }
    }
}

impl RunningServer for TestApp {
    fn url(&self) -> &str {
        &self.url
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Imports an election definition into a new data directory through the code of
/// `hattama-server election import` (`console::import_election`), in this process.
fn import_election(data_dir: &Path, election: &Value) {
    let bytes = serde_json::to_vec_pretty(election).expect("json");
    let storage = backend::open_storage(data_dir);
    hattama_server::console::import_election(&*storage, &bytes, hattama_core::now_ms(), None)
        .unwrap_or_else(|e| panic!("import failed: {e}"));
}
