//! Gives memory that the C heap has freed back to the operating system.
//!
//! librdkafka's threads decompress fetched batches with glibc's malloc, which keeps freed
//! memory in per-thread arenas: with a large compressed backlog the process's resident size
//! stays hundreds of MB above what is in use (see BENCHMARKS.md, "What limits memory").
//! `malloc_trim` returns the free pages of every arena; calling it every second keeps
//! the resident size near what is live, for a few milliseconds of CPU each time.

use std::time::Duration;

/// How often freed C-heap memory is returned.
const EVERY: Duration = Duration::from_secs(1);

/// Trims the C heap every second until the returned task is aborted.
pub fn spawn_trimmer() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Walks every arena: keep it off the async workers.
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    })
}

/// Returns the C heap's free pages now. Blocking (it walks every arena): a few
/// milliseconds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: malloc_trim takes no pointers and only releases free memory; it is safe to
    // call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}
