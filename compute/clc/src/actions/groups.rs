//! Security groups and their ingress rules; a `default` group per account.
use super::Call;
use crate::error::Ec2Error;
use euca_aws::xml::XmlWriter;

pub async fn create_security_group(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("CreateSecurityGroup".into()))
}

pub async fn describe_security_groups(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DescribeSecurityGroups".into()))
}

pub async fn delete_security_group(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DeleteSecurityGroup".into()))
}

pub async fn authorize_security_group_ingress(
    cx: &Call<'_>,
    x: &mut XmlWriter,
) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction(
        "AuthorizeSecurityGroupIngress".into(),
    ))
}

pub async fn revoke_security_group_ingress(
    cx: &Call<'_>,
    x: &mut XmlWriter,
) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("RevokeSecurityGroupIngress".into()))
}
