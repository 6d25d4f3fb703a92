//! Serving the daemon: the peer piece server and the control socket, through
//! `euca-service`'s loop, with the tracker announcer alongside.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::state::Daemon;
use super::{control, peer};
use crate::http::{Edge, Token};

impl Daemon {
    /// Serves peers on `peer` (with `edge`'s limits), the control API on
    /// `control`, and announces, until `shutdown`. Both listeners go through
    /// `euca-service`'s loop. (Boxed: compiled here once; see
    /// `euca_service::serve_api`.)
    pub fn serve(
        self: Arc<Self>,
        peer: tokio::net::TcpListener,
        control: tokio::net::UnixListener,
        token: Token,
        edge: Edge,
        shutdown: watch::Receiver<bool>,
    ) -> futures::future::BoxFuture<'static, ()> {
        futures::FutureExt::boxed(self.serving(peer, control, token, edge, shutdown))
    }

    async fn serving(
        self: Arc<Self>,
        peer: tokio::net::TcpListener,
        control: tokio::net::UnixListener,
        token: Token,
        edge: Edge,
        shutdown: watch::Receiver<bool>,
    ) {
        let announcer = tokio::spawn(self.clone().announce_loop(shutdown.clone()));
        let peers = tokio::spawn(euca_service::serve_api(
            peer,
            edge.listen.clone(),
            Arc::new(peer::PeerApi {
                daemon: self.clone(),
                token,
            }),
            edge.metrics.clone(),
            shutdown.clone(),
        ));
        // Local clients only (file permissions): no per-source rules apply.
        let opts = euca_service::ListenOptions {
            header_timeout: Duration::from_secs(10),
            ..edge.listen.clone()
        };
        euca_service::serve_api(
            control,
            opts,
            Arc::new(control::ControlApi {
                daemon: self.clone(),
            }),
            edge.metrics,
            shutdown,
        )
        .await;
        let _ = peers.await;
        let _ = announcer.await;
    }
}
