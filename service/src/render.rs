//! The error renderers shared by APIs: EC2 Query XML (for the cloud controller's
//! API) and the one JSON error shape of the internal APIs (the storage
//! controller, the tracker, the node peer API and the cache control API).
//! (S3 XML errors are Walrus's own renderer.)
use crate::api::ErrorCode;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// An error response in the form of one API.
fn response(
    status: u16,
    content_type: &'static str,
    code: &str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r.extensions_mut().insert(ErrorCode(code.to_string()));
    r
}

/// The internal APIs' error body: `{"error":{"code":…,"message":…}}` and a newline.
pub fn json_error_body(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message}}).to_string() + "\n"
}

/// An internal API's error response ([`json_error_body`], `application/json`).
pub fn json_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    response(
        status,
        "application/json",
        code,
        json_error_body(code, message),
    )
}

/// The message of a [`json_error_body`] (what the CLI prints), if `body` is one.
pub fn json_error_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.get("message")?.as_str().map(String::from)
}

/// The EC2 Query API's error body.
pub fn ec2_error_body(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        euca_aws::xml::escape(code),
        euca_aws::xml::escape(message),
        euca_aws::xml::escape(request_id)
    )
}

/// An EC2 Query API error response ([`ec2_error_body`], `text/xml`).
pub fn ec2_error(
    status: u16,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<Full<Bytes>> {
    response(
        status,
        "text/xml;charset=UTF-8",
        code,
        ec2_error_body(code, message, request_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn json_shape() {
        let r = json_error(404, "InvalidVolume.NotFound", "no volume \"vol-1\"");
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            r.extensions().get::<ErrorCode>().unwrap().0,
            "InvalidVolume.NotFound"
        );
        let b = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &b[..],
            b"{\"error\":{\"code\":\"InvalidVolume.NotFound\",\"message\":\"no volume \\\"vol-1\\\"\"}}\n"
        );
        assert_eq!(
            json_error_message(&b).as_deref(),
            Some("no volume \"vol-1\"")
        );
        assert_eq!(json_error_message(b"{\"error\":\"x\"}"), None);
    }

    #[tokio::test]
    async fn ec2_shape() {
        let r = ec2_error(400, "InvalidParameterValue", "size < 1 & > 0", "ABC123");
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.extensions().get::<ErrorCode>().unwrap().0,
            "InvalidParameterValue"
        );
        let b = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InvalidParameterValue</Code><Message>size &lt; 1 &amp; &gt; 0</Message></Error></Errors><RequestID>ABC123</RequestID></Response>"
        );
    }
}
