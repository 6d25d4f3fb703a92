//! Images: registered from a bundle in Walrus (installed in the background) or from a snapshot; launch permissions.
use super::Call;
use crate::error::Ec2Error;
use euca_aws::xml::XmlWriter;

pub async fn register_image(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("RegisterImage".into()))
}

pub async fn describe_images(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DescribeImages".into()))
}

pub async fn deregister_image(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DeregisterImage".into()))
}

pub async fn modify_image_attribute(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("ModifyImageAttribute".into()))
}

pub async fn describe_image_attribute(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("DescribeImageAttribute".into()))
}

pub async fn reset_image_attribute(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let _ = (cx, x);
    Err(Ec2Error::InvalidAction("ResetImageAttribute".into()))
}
