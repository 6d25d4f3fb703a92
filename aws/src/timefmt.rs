//! Time formats used on the wire.
use time::{
    format_description::FormatItem, macros::format_description, OffsetDateTime, PrimitiveDateTime,
};

const AMZ: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");
const ISO: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `20130524T000000Z`
pub fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(s, AMZ)
        .ok()
        .map(|t| t.assume_utc())
}

pub fn format_amz_date(t: OffsetDateTime) -> String {
    t.format(AMZ).unwrap_or_default()
}

/// `2009-10-12T17:50:30.000Z`, as S3 XML bodies carry timestamps.
pub fn format_iso8601(t: OffsetDateTime) -> String {
    t.format(ISO).unwrap_or_default()
}

/// RFC 1123 (HTTP-date), as in `Last-Modified`.
pub fn format_http_date(t: OffsetDateTime) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::from(t))
}

/// RFC 1123 / RFC 2822 dates, with `GMT` or a numeric zone (s3cmd sends `+0000`).
pub fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    // rclone's SigV2 sends `UTC` where RFC 1123 says `GMT`.
    let gmt;
    let s = match s.strip_suffix(" UTC") {
        Some(head) => {
            gmt = format!("{head} GMT");
            gmt.as_str()
        }
        None => s,
    };
    httpdate::parse_http_date(s)
        .ok()
        .map(OffsetDateTime::from)
        .or_else(|| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc2822).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trips() {
        let t = parse_amz_date("20130524T000000Z").unwrap();
        assert_eq!(format_amz_date(t), "20130524T000000Z");
        assert_eq!(format_iso8601(t), "2013-05-24T00:00:00.000Z");
        assert_eq!(format_http_date(t), "Fri, 24 May 2013 00:00:00 GMT");
        assert_eq!(parse_http_date("Fri, 24 May 2013 00:00:00 GMT"), Some(t));
        assert!(parse_amz_date("2013-05-24").is_none());
        assert_eq!(parse_http_date("Fri, 24 May 2013 00:00:00 +0000"), Some(t));
        assert_eq!(parse_http_date("Fri, 24 May 2013 00:00:00 UTC"), Some(t));
    }
}
