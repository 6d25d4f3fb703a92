//! The piece server: peers read verified pieces (`GET /v1/images/<id>/pieces/<n>`,
//! cluster token).
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::state::Daemon;
use crate::http::{status, Body, Token};
use crate::ImageId;

/// The piece server's operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEndpoint {
    /// `GET /v1/images/<id>/pieces/<n>` (`None`: an unparsable id or number).
    GetPiece(Option<(ImageId, u32)>),
    Unknown,
}

impl euca_service::Endpoint for PeerEndpoint {
    fn name(&self) -> &'static str {
        match self {
            PeerEndpoint::GetPiece(_) => "GetPiece",
            PeerEndpoint::Unknown => "Unknown",
        }
    }
}

pub(super) struct PeerApi {
    pub daemon: Arc<Daemon>,
    pub token: Token,
}

impl euca_service::Api for PeerApi {
    type Endpoint = PeerEndpoint;
    type Body = Body;
    fn service(&self) -> &'static str {
        "peer"
    }
    fn route(&self, head: &http::request::Parts) -> PeerEndpoint {
        let parts: Vec<&str> = head.uri.path().trim_start_matches('/').split('/').collect();
        match (&head.method, parts.as_slice()) {
            (&Method::GET, ["v1", "images", id, "pieces", n]) => {
                PeerEndpoint::GetPiece(match (ImageId::parse(id), n.parse::<u32>()) {
                    (Ok(id), Ok(n)) => Some((id, n)),
                    _ => None,
                })
            }
            _ => PeerEndpoint::Unknown,
        }
    }
    async fn handle(
        self: Arc<Self>,
        ep: PeerEndpoint,
        req: Request<Incoming>,
        _cx: euca_service::Ctx,
    ) -> Response<Body> {
        self.daemon.clone().handle_peer(ep, req, &self.token).await
    }
    fn render_error(&self, e: &euca_service::EdgeError, _cx: &euca_service::Ctx) -> Response<Body> {
        crate::http::edge_error(e)
    }
    fn body(&self, bytes: bytes::Bytes) -> Body {
        crate::http::full(bytes)
    }
}

impl Daemon {
    /// The piece server (peers): `GET /v1/images/<id>/pieces/<n>`.
    pub async fn handle_peer(
        self: Arc<Self>,
        ep: PeerEndpoint,
        req: Request<Incoming>,
        token: &Token,
    ) -> Response<Body> {
        if !token.admits(&req) {
            return status(StatusCode::FORBIDDEN, "missing or wrong cluster token");
        }
        let (id, index) = match ep {
            PeerEndpoint::GetPiece(Some(x)) => x,
            PeerEndpoint::GetPiece(None) => {
                return status(StatusCode::BAD_REQUEST, "bad image id or piece number")
            }
            PeerEndpoint::Unknown => return status(StatusCode::NOT_FOUND, "no such endpoint"),
        };
        let Some(hold) = self.store.hold(&id) else {
            return status(StatusCode::NOT_FOUND, "image not held");
        };
        if !hold.has(index) {
            return status(StatusCode::NOT_FOUND, "piece not held");
        }
        let h2 = hold.clone();
        match tokio::task::spawn_blocking(move || h2.read_piece(index)).await {
            Ok(Ok(buf)) => {
                drop(hold);
                self.stats
                    .served_bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                Response::builder()
                    .header("content-type", "application/octet-stream")
                    .body(crate::http::full(buf))
                    .unwrap_or_else(|_| Response::new(crate::http::full("")))
            }
            _ => status(StatusCode::NOT_FOUND, "piece not readable"),
        }
    }
}
