//! Volumes: the records, states and ownership here; the storage on the storage controller.
use super::Call;
use crate::error::Ec2Error;
use euca_aws::xml::XmlWriter;

pub async fn create_volume(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("CreateVolume".into()))
}

pub async fn describe_volumes(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DescribeVolumes".into()))
}

pub async fn delete_volume(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DeleteVolume".into()))
}
