//! The control API for `euca cache`, on a Unix socket in the cache directory
//! (mode 0600: authenticated by file permissions).
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::watch;

use super::state::{Daemon, Progress};
use crate::http::{done, error, json, status, Body};
use crate::ImageId;

/// The control API's operations (the image id as given; parsed by the handler).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlEndpoint {
    ListImages,
    FetchImage(String),
    EvictImage(String),
    PinImage { image: String, holder: String },
    UnpinImage { image: String, holder: String },
    Unknown,
}

impl euca_service::Endpoint for ControlEndpoint {
    fn name(&self) -> &'static str {
        match self {
            ControlEndpoint::ListImages => "ListImages",
            ControlEndpoint::FetchImage(_) => "FetchImage",
            ControlEndpoint::EvictImage(_) => "EvictImage",
            ControlEndpoint::PinImage { .. } => "PinImage",
            ControlEndpoint::UnpinImage { .. } => "UnpinImage",
            ControlEndpoint::Unknown => "Unknown",
        }
    }
}

impl ControlEndpoint {
    pub fn parse(method: &Method, path: &str) -> ControlEndpoint {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.clone(), parts.as_slice()) {
            (Method::GET, ["v1", "images"]) => ControlEndpoint::ListImages,
            (Method::POST, ["v1", "images", id, "fetch"]) => {
                ControlEndpoint::FetchImage(id.to_string())
            }
            (Method::DELETE, ["v1", "images", id]) => ControlEndpoint::EvictImage(id.to_string()),
            (Method::POST, ["v1", "images", id, "pins", holder]) => ControlEndpoint::PinImage {
                image: id.to_string(),
                holder: holder.to_string(),
            },
            (Method::DELETE, ["v1", "images", id, "pins", holder]) => ControlEndpoint::UnpinImage {
                image: id.to_string(),
                holder: holder.to_string(),
            },
            _ => ControlEndpoint::Unknown,
        }
    }
}

pub(super) struct ControlApi {
    pub daemon: Arc<Daemon>,
}

impl euca_service::Api for ControlApi {
    type Endpoint = ControlEndpoint;
    type Body = Body;
    fn service(&self) -> &'static str {
        "cache-control"
    }
    fn route(&self, head: &http::request::Parts) -> ControlEndpoint {
        ControlEndpoint::parse(&head.method, head.uri.path())
    }
    async fn handle(
        self: Arc<Self>,
        ep: ControlEndpoint,
        _req: Request<Incoming>,
        _cx: euca_service::Ctx,
    ) -> Response<Body> {
        self.daemon.clone().handle_control(ep).await
    }
    fn render_error(&self, e: &euca_service::EdgeError, _cx: &euca_service::Ctx) -> Response<Body> {
        crate::http::edge_error(e)
    }
    fn body(&self, bytes: Bytes) -> Body {
        crate::http::full(bytes)
    }
}

impl Daemon {
    fn set_pin(&self, image: &str, holder: &str, pin: bool) -> Response<Body> {
        match ImageId::parse(image).and_then(|id| self.store.set_pin(&id, holder, pin)) {
            Ok(()) => done("ok"),
            Err(e) => error(&e),
        }
    }

    /// The control API for `euca cache` (requests carry no body).
    pub async fn handle_control(self: Arc<Self>, ep: ControlEndpoint) -> Response<Body> {
        let parse = |s: &str| ImageId::parse(s);
        match ep {
            ControlEndpoint::ListImages => json(StatusCode::OK, &self.store.list()),
            ControlEndpoint::FetchImage(id) => match parse(&id) {
                Ok(id) => {
                    let rx = self.start_fetch(&id);
                    progress_stream(rx)
                }
                Err(e) => error(&e),
            },
            ControlEndpoint::EvictImage(id) => match parse(&id) {
                Ok(id) => match self.evict(&id).await {
                    Ok(()) => done("evicted"),
                    Err(e) => error(&e),
                },
                Err(e) => error(&e),
            },
            ControlEndpoint::PinImage { image, holder } => self.set_pin(&image, &holder, true),
            ControlEndpoint::UnpinImage { image, holder } => self.set_pin(&image, &holder, false),
            ControlEndpoint::Unknown => status(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }
}

/// NDJSON progress lines, one per change (at most every 200 ms), the last with `done`.
fn progress_stream(rx: watch::Receiver<Progress>) -> Response<Body> {
    let stream = futures::stream::unfold((rx, false), |(mut rx, ended)| async move {
        if ended {
            return None;
        }
        if !rx.borrow().done {
            // A line at most every 200 ms, and at once when the fetch ends.
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.wait_for(|p| p.done)).await;
        }
        let p = rx.borrow().clone();
        let finished = p.done;
        let mut line = serde_json::to_vec(&p).unwrap_or_default();
        line.push(b'\n');
        Some((
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(line))),
            (rx, finished),
        ))
    });
    let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(stream));
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(body)
        .unwrap_or_else(|_| Response::new(crate::http::full("")))
}
