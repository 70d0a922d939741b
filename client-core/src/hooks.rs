//! Named pause points for the crash tests.
//!
//! With the `test-hooks` feature, `set_pause_at` names one point; when the process reaches it,
//! it prints `hattama-paused <point>` to stderr and sleeps until killed, so a test can SIGKILL it
//! exactly there. Without the feature, [`pause`] compiles to nothing.

#[cfg(feature = "test-hooks")]
static PAUSE_AT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Every pause point, in the order a capture or deletion reaches them.
pub const POINTS: &[&str] = &[
    "capture:before-blob",
    "blob:after-temp-write",
    "blob:after-rename",
    "capture:after-blob",
    "capture:before-commit",
    "capture:after-commit",
    "delete:after-commit",
];

/// The pause points of a sync, in the order an upload reaches them (not in [`POINTS`], which
/// the capture crash tests walk).
pub const SYNC_POINTS: &[&str] = &["sync:before-receipt", "sync:before-receipt-commit"];

/// The pause point between the commit that records a photo's removal after its receipt and
/// the removal of its files (`crate::retention`).
pub const RETENTION_POINTS: &[&str] = &["retention:after-commit"];

/// The pause points of the conversion of a plain store to an encrypted one, in order (the
/// sealed key and photos are written through `blob:after-temp-write` and `blob:after-rename`).
pub const UPGRADE_POINTS: &[&str] = &[
    "blob:after-temp-write",
    "blob:after-rename",
    "upgrade:before-photos",
    "upgrade:before-export",
    "upgrade:before-rename",
    "upgrade:after-rename",
];

/// The server's pause points: between a log batch's commit and the publication of its files.
pub const SERVER_POINTS: &[&str] = &["log:after-commit"];

/// Names the point at which this process will pause. Does nothing without the `test-hooks`
/// feature, so a release binary never pauses, whatever its environment says.
pub fn set_pause_at(point: &str) {
    #[cfg(feature = "test-hooks")]
    let _ = PAUSE_AT.set(point.to_owned());
    #[cfg(not(feature = "test-hooks"))]
    eprintln!("hattama: pause point {point:?} ignored: this binary was built without test hooks");
}

/// Pauses forever if `point` is the configured pause point.
#[inline]
pub fn pause(point: &str) {
    #[cfg(feature = "test-hooks")]
    if PAUSE_AT.get().is_some_and(|p| p == point) {
        eprintln!("hattama-paused {point}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = point;
}
