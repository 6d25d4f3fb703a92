//! NBD client messages: transmission request headers and the option payloads of
//! INFO/GO and LIST/SET_META_CONTEXT. No panic, allocation bounded by the input;
//! whatever decodes re-encodes to exactly the input (no bytes ignored).
#![no_main]
use euca_sc::nbd::decode::{parse_info_request, parse_meta_request};
use euca_sc::nbd::proto::{Request, REQUEST_HEADER_LEN, REQUEST_MAGIC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for hdr in data.chunks_exact(REQUEST_HEADER_LEN) {
        let hdr: &[u8; REQUEST_HEADER_LEN] = hdr.try_into().expect("exact chunk");
        match Request::decode(hdr) {
            Ok(r) => {
                let mut again = Vec::with_capacity(REQUEST_HEADER_LEN);
                again.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
                again.extend_from_slice(&r.flags.to_be_bytes());
                again.extend_from_slice(&r.ty.to_be_bytes());
                again.extend_from_slice(&r.cookie.to_be_bytes());
                again.extend_from_slice(&r.offset.to_be_bytes());
                again.extend_from_slice(&r.len.to_be_bytes());
                assert_eq!(&again[..], &hdr[..]);
            }
            Err(magic) => assert_ne!(magic, REQUEST_MAGIC),
        }
    }
    if let Some((name, infos)) = parse_info_request(data) {
        let mut again = (name.len() as u32).to_be_bytes().to_vec();
        again.extend_from_slice(name);
        again.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in &infos {
            again.extend_from_slice(&i.to_be_bytes());
        }
        assert_eq!(again, data);
    }
    if let Some((name, queries)) = parse_meta_request(data) {
        let mut again = (name.len() as u32).to_be_bytes().to_vec();
        again.extend_from_slice(name);
        again.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in &queries {
            again.extend_from_slice(&(q.len() as u32).to_be_bytes());
            again.extend_from_slice(q.as_bytes());
        }
        assert_eq!(again, data);
    }
});
