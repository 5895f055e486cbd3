//! The accept loop. `axum::serve` sets no header-read timeout and no connection cap,
//! so one client could hold thousands of half-sent requests open (slowloris) and a
//! SIGTERM would wait on them forever. Here every connection gets hyper's
//! header-read timeout, the number of open connections is capped, and shutdown stops
//! accepting at once and lets open connections finish what they are doing.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::Service;

use crate::shutdown::Shutdown;

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client gets to send a request's headers.
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown`, then waits for open connections.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: Shutdown) -> std::io::Result<()> {
    let mut make = app.into_make_service_with_connect_info::<SocketAddr>();
    // HTTP/1.1 only: TLS (and HTTP/2 to browsers) ends at the proxy in front. Without
    // protocol sniffing, the header-read timeout covers the whole wait for a request,
    // so silent sockets are closed too, not only slow ones.
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("portcullis_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = match <_ as Service<SocketAddr>>::call(&mut make, peer).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut router = router.clone();
            async move {
                Ok::<_, Infallible>(router.call(req.map(axum::body::Body::new)).await.unwrap_or_else(|e| match e {}))
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
