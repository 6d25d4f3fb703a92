//! S3 Control's account-level public access block operations: Get/Put/Delete
//! PublicAccessBlock on `/v20180820/configuration/publicAccessBlock` with the account
//! in `x-amz-account-id` (boto3's `s3control` client, `aws s3control`); what they
//! keep is [`crate::account_block`]'s.
//!
//! Only the account itself may read or change its block: anyone else (another
//! account, an anonymous caller) is refused 403 `AccessDenied`, whether the account
//! has a block or not, before any body is read.
use std::sync::Arc;

use http::{Method, StatusCode};

use crate::account_block::{entry_name, read_all, ACCOUNTS_BUCKET};
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, xml, Req, Resp};
use crate::state::State;

/// S3 Control's XML namespace.
const CONTROL_NS: &str = "http://awss3control.amazonaws.com/doc/2018-08-20/";

/// Answers an S3 Control public access block call (see the module doc).
pub async fn dispatch(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let account = r
        .headers
        .get("x-amz-account-id")
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    // The account itself only: nothing is read or said to anyone else.
    let Some(caller) = r
        .principal
        .as_ref()
        .filter(|p| p.account_id.as_bytes() == account.as_slice())
        .cloned()
    else {
        return Err(S3Error::access_denied());
    };
    let entry = entry_name(&caller.canonical_id);
    match r.method {
        Method::GET => {
            r.op = "GetAccountPublicAccessBlock";
            // From the store, not the cache: a Put is read back at once.
            let pab = read_all(&*st.meta, &st.system_id)
                .await?
                .remove(&caller.canonical_id)
                .ok_or_else(|| {
                    S3Error::new(
                        "NoSuchPublicAccessBlockConfiguration",
                        404,
                        "The public access block configuration was not found",
                    )
                    .with("AccountId", &caller.account_id)
                })?;
            Ok(xml(StatusCode::OK, pab.to_xml_in(CONTROL_NS)))
        }
        Method::PUT => {
            r.op = "PutAccountPublicAccessBlock";
            crate::system::check_writable(st, r)?;
            let node = r.xml_body(64 * 1024).await?;
            let pab = crate::xmlreq::public_access_block(&node)?;
            accounts_bucket(st).await?;
            st.set_bucket_config(ACCOUNTS_BUCKET, &entry, Some(pab.to_xml()))
                .await?;
            st.account_blocks.invalidate();
            tracing::info!(account = %caller.account_id, ?pab, "account public access block set");
            Ok(empty(StatusCode::OK))
        }
        Method::DELETE => {
            r.op = "DeleteAccountPublicAccessBlock";
            crate::system::check_writable(st, r)?;
            // Only the system account's bucket holds blocks (read_all).
            let held = st.meta.bucket(ACCOUNTS_BUCKET).await?;
            if held.is_some_and(|b| b.owner.id == st.system_id) {
                st.set_bucket_config(ACCOUNTS_BUCKET, &entry, None).await?;
            }
            st.account_blocks.invalidate();
            tracing::info!(account = %caller.account_id, "account public access block removed");
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(S3Error::method_not_allowed()),
    }
}

/// Makes sure [`ACCOUNTS_BUCKET`] is the system account's before an entry is
/// written to it (an operator must clear a non-empty bucket another account took
/// before the reserved prefix existed).
async fn accounts_bucket(st: &State) -> S3Result<()> {
    crate::system::ensure_system_bucket(st, ACCOUNTS_BUCKET, &[]).await?;
    match st.meta.bucket(ACCOUNTS_BUCKET).await? {
        Some(b) if b.owner.id == st.system_id => Ok(()),
        _ => Err(S3Error::new(
            "ServiceUnavailable",
            503,
            format!("The bucket {ACCOUNTS_BUCKET} belongs to another account; an operator must remove it."),
        )),
    }
}
