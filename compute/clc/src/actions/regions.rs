//! Regions, availability zones and instance types.
use super::Call;
use crate::error::Ec2Error;
use euca_aws::xml::XmlWriter;

pub async fn describe_regions(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DescribeRegions".into()))
}

pub async fn describe_availability_zones(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DescribeAvailabilityZones".into()))
}

pub async fn describe_instance_types(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DescribeInstanceTypes".into()))
}
