//! One authenticated EC2 request, as the actions see it.
use crate::params::Params;
use crate::Clc;
use euca_aws::Principal;

/// One EC2 request, authenticated.
pub struct Call<'a> {
    pub clc: &'a Clc,
    pub caller: &'a Principal,
    pub params: &'a Params,
    pub request_id: &'a str,
}

impl Call<'_> {
    /// The caller's account id (owner of what it creates).
    pub fn account(&self) -> &str {
        &self.caller.account_id
    }
}
