//! The actix system: one actix `System` on a long-lived multi-threaded tokio
//! runtime, so clients of tokio-based libraries (redis, sqlx, rdkafka,
//! DataFusion) built inside it live on a runtime that outlives them.

use std::future::Future;

/// Runs `f` inside a new actix system and returns its output; the system
/// stops when `f` ends.
pub fn run<F, Fut, T>(f: F) -> std::io::Result<T>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    // rustls is built with the ring provider only; make it the process default
    // (an error means one is installed already, which is as good).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("k2-worker")
            .build()
            // Building a runtime fails only when the OS refuses threads; there
            // is nothing to run without one.
            .expect("tokio runtime")
    });
    Ok(system.block_on(async move {
        catch_file_size_signal();
        f().await
    }))
}

/// A write past the file-size limit (`RLIMIT_FSIZE`, `ulimit -f`) raises
/// SIGXFSZ, whose default action kills the process in the middle of the
/// write, taking every row not yet durable with it. With a handler in place
/// the signal is caught and the write fails with EFBIG instead, which the
/// flusher, the spill and the loaders handle as any failed write (retried,
/// counted, reported). Tokio keeps a signal's handler for the life of the
/// process, so registering once is enough.
fn catch_file_size_signal() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ)) {
        Ok(mut signals) => {
            tokio::spawn(async move {
                while signals.recv().await.is_some() {
                    tracing::error!("a write went past the file-size limit (SIGXFSZ): it fails with EFBIG");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot catch SIGXFSZ; a write past the file-size limit would kill K2"),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
