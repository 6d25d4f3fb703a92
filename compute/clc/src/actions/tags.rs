//! Tags on every kind of resource.
use super::Call;
use crate::error::Ec2Error;
use euca_aws::xml::XmlWriter;

pub async fn create_tags(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("CreateTags".into()))
}

pub async fn delete_tags(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DeleteTags".into()))
}

pub async fn describe_tags(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DescribeTags".into()))
}
