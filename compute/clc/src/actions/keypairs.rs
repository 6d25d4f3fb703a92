//! Key pairs: created (the private key returned once, PEM) or imported (RSA, ed25519).
use super::Call;
use crate::error::Ec2Error;
use euca_aws::xml::XmlWriter;

pub async fn create_key_pair(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("CreateKeyPair".into()))
}

pub async fn import_key_pair(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("ImportKeyPair".into()))
}

pub async fn describe_key_pairs(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DescribeKeyPairs".into()))
}

pub async fn delete_key_pair(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DeleteKeyPair".into()))
}
