//! Text keys (RFC 7143 §6, §13): `key=value` pairs separated by NUL, and the
//! operational parameters a session negotiates from them.

use super::error::IscsiError;

/// Largest data segment this target accepts in one PDU (declared to the initiator
/// as its `MaxRecvDataSegmentLength`).
pub const TARGET_MAX_RECV_DSL: u32 = 256 * 1024;
/// Upper bounds this target proposes for the burst lengths.
const TARGET_MAX_BURST: u32 = 1024 * 1024;
const TARGET_FIRST_BURST: u32 = 256 * 1024;

/// Splits a data segment into `(key, value)` pairs, in order. Values are kept as
/// given (RFC 7143 values are UTF-8; nothing is trimmed).
pub fn parse(data: &[u8]) -> Result<Vec<(String, String)>, IscsiError> {
    let mut out = Vec::new();
    for item in data.split(|&b| b == 0) {
        if item.is_empty() {
            continue;
        }
        let s = std::str::from_utf8(item)
            .map_err(|_| IscsiError::Protocol("a text key is not UTF-8".into()))?;
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| IscsiError::Protocol(format!("text item without '=': {s:?}")))?;
        if k.is_empty() || k.len() > 63 {
            return Err(IscsiError::Protocol(format!("bad text key {k:?}")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Encodes pairs as `key=value\0…`.
pub fn encode(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// The operational parameters in force on a connection (RFC 7143 §13 defaults
/// until negotiated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The initiator's `MaxRecvDataSegmentLength`: the largest Data-In / response
    /// data segment we may send it.
    pub initiator_max_recv_dsl: u32,
    pub max_burst: u32,
    pub first_burst: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            initiator_max_recv_dsl: 8192,
            max_burst: 262_144,
            first_burst: 65_536,
            initial_r2t: true,
            immediate_data: true,
        }
    }
}

fn number(v: &str) -> Option<u64> {
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        v.parse().ok()
    }
}

fn yes_no(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yn(b: bool) -> String {
    if b { "Yes" } else { "No" }.to_string()
}

impl Params {
    /// Answers one operational key the initiator offered and records the outcome.
    /// `None`: the key is not an operational one (the caller handles it).
    pub fn negotiate(&mut self, key: &str, value: &str) -> Option<String> {
        let reject = || "Reject".to_string();
        let answer = match key {
            // Only `None` is implemented; pick it if offered.
            "HeaderDigest" | "DataDigest" => {
                if value.split(',').any(|v| v == "None") {
                    "None".into()
                } else {
                    reject()
                }
            }
            "MaxRecvDataSegmentLength" => {
                // Declarative: the initiator's receive limit; answer with ours.
                match number(value) {
                    Some(n) if (512..=16_777_215).contains(&n) => {
                        self.initiator_max_recv_dsl = n as u32;
                        TARGET_MAX_RECV_DSL.to_string()
                    }
                    _ => reject(),
                }
            }
            "MaxBurstLength" => match number(value) {
                Some(n) if (512..=16_777_215).contains(&n) => {
                    self.max_burst = (n as u32).min(TARGET_MAX_BURST);
                    self.first_burst = self.first_burst.min(self.max_burst);
                    self.max_burst.to_string()
                }
                _ => reject(),
            },
            "FirstBurstLength" => match number(value) {
                Some(n) if (512..=16_777_215).contains(&n) => {
                    self.first_burst = (n as u32).min(TARGET_FIRST_BURST).min(self.max_burst);
                    self.first_burst.to_string()
                }
                _ => reject(),
            },
            // OR: Yes if either side says Yes; we are content with No.
            "InitialR2T" => match yes_no(value) {
                Some(b) => {
                    self.initial_r2t = b;
                    yn(b)
                }
                None => reject(),
            },
            // AND: Yes only if both say Yes; we say Yes.
            "ImmediateData" => match yes_no(value) {
                Some(b) => {
                    self.immediate_data = b;
                    yn(b)
                }
                None => reject(),
            },
            // One R2T per task, one connection per session, no error recovery
            // beyond level 0, in-order data: each is the minimum, so any offer
            // resolves to ours.
            "MaxOutstandingR2T" | "MaxConnections" => match number(value) {
                Some(n) if n >= 1 => "1".into(),
                _ => reject(),
            },
            "ErrorRecoveryLevel" => match number(value) {
                Some(_) => "0".into(),
                None => reject(),
            },
            "DataPDUInOrder" | "DataSequenceInOrder" => match yes_no(value) {
                Some(_) => "Yes".into(),
                None => reject(),
            },
            "DefaultTime2Wait" => match number(value) {
                Some(n) if n <= 3600 => n.to_string(),
                _ => reject(),
            },
            "DefaultTime2Retain" => match number(value) {
                Some(_) => "0".into(),
                None => reject(),
            },
            // Markers (RFC 3720, removed in 7143): never used.
            "IFMarker" | "OFMarker" => "No".into(),
            "IFMarkInt" | "OFMarkInt" => "Irrelevant".into(),
            _ => return None,
        };
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_encode_without_touching_values() {
        let raw = b"InitiatorName=iqn.x:a b\0SessionType=Normal\0\0";
        let p = parse(raw).unwrap();
        assert_eq!(p[0], ("InitiatorName".into(), "iqn.x:a b".into()));
        assert_eq!(p.len(), 2);
        assert_eq!(encode(&p), b"InitiatorName=iqn.x:a b\0SessionType=Normal\0");
        assert!(parse(b"novalue\0").is_err());
        assert!(parse(b"=x\0").is_err());
        assert!(parse(&[0xff, b'=', b'1', 0]).is_err());
    }

    #[test]
    fn negotiation_takes_minimums_and_the_boolean_functions() {
        let mut p = Params::default();
        assert_eq!(p.negotiate("HeaderDigest", "CRC32C,None").unwrap(), "None");
        assert_eq!(p.negotiate("DataDigest", "CRC32C").unwrap(), "Reject");
        assert_eq!(
            p.negotiate("MaxRecvDataSegmentLength", "65536").unwrap(),
            TARGET_MAX_RECV_DSL.to_string()
        );
        assert_eq!(p.initiator_max_recv_dsl, 65536);
        assert_eq!(
            p.negotiate("MaxBurstLength", "16776192").unwrap(),
            "1048576"
        );
        assert_eq!(p.negotiate("FirstBurstLength", "100").unwrap(), "Reject");
        assert_eq!(p.negotiate("FirstBurstLength", "65536").unwrap(), "65536");
        assert_eq!(p.negotiate("InitialR2T", "No").unwrap(), "No");
        assert!(!p.initial_r2t);
        assert_eq!(p.negotiate("ImmediateData", "No").unwrap(), "No");
        assert_eq!(p.negotiate("MaxOutstandingR2T", "8").unwrap(), "1");
        assert_eq!(p.negotiate("ErrorRecoveryLevel", "2").unwrap(), "0");
        assert_eq!(p.negotiate("InitialR2T", "Maybe").unwrap(), "Reject");
        assert!(p.negotiate("X-com.example.Key", "1").is_none());
    }
}
