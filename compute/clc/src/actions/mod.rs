//! The EC2 actions, one module per kind of resource. Each action reads its
//! parameters from [`Call::params`], acts as [`Call::caller`] (another account's
//! resources are `.NotFound` to it) and writes its elements into the response,
//! whose root element and `requestId` are already written.
use crate::call::Call;
use crate::error::Ec2Error;
use euca_aws::xml::XmlWriter;

pub mod addresses;
pub mod attachments;
pub mod groups;
pub mod images;
pub mod instances;
pub mod keypairs;
pub mod launch_volumes;
pub mod regions;
pub mod snapshots;
pub mod tags;
pub mod volumes;

/// Every action the API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    DescribeRegions,
    DescribeAvailabilityZones,
    DescribeInstanceTypes,
    CreateKeyPair,
    ImportKeyPair,
    DescribeKeyPairs,
    DeleteKeyPair,
    CreateSecurityGroup,
    DescribeSecurityGroups,
    DeleteSecurityGroup,
    AuthorizeSecurityGroupIngress,
    RevokeSecurityGroupIngress,
    RegisterImage,
    DescribeImages,
    DeregisterImage,
    ModifyImageAttribute,
    DescribeImageAttribute,
    ResetImageAttribute,
    CreateVolume,
    DescribeVolumes,
    DeleteVolume,
    CreateSnapshot,
    DescribeSnapshots,
    DeleteSnapshot,
    ModifySnapshotAttribute,
    DescribeSnapshotAttribute,
    CreateTags,
    DeleteTags,
    DescribeTags,
    RunInstances,
    DescribeInstances,
    TerminateInstances,
    RebootInstances,
    StopInstances,
    StartInstances,
    GetConsoleOutput,
    DescribeInstanceStatus,
    AttachVolume,
    DetachVolume,
    AllocateAddress,
    AssociateAddress,
    DisassociateAddress,
    ReleaseAddress,
    DescribeAddresses,
}

impl Action {
    pub const ALL: &'static [Action] = &[
        Action::DescribeRegions,
        Action::DescribeAvailabilityZones,
        Action::DescribeInstanceTypes,
        Action::CreateKeyPair,
        Action::ImportKeyPair,
        Action::DescribeKeyPairs,
        Action::DeleteKeyPair,
        Action::CreateSecurityGroup,
        Action::DescribeSecurityGroups,
        Action::DeleteSecurityGroup,
        Action::AuthorizeSecurityGroupIngress,
        Action::RevokeSecurityGroupIngress,
        Action::RegisterImage,
        Action::DescribeImages,
        Action::DeregisterImage,
        Action::ModifyImageAttribute,
        Action::DescribeImageAttribute,
        Action::ResetImageAttribute,
        Action::CreateVolume,
        Action::DescribeVolumes,
        Action::DeleteVolume,
        Action::CreateSnapshot,
        Action::DescribeSnapshots,
        Action::DeleteSnapshot,
        Action::ModifySnapshotAttribute,
        Action::DescribeSnapshotAttribute,
        Action::CreateTags,
        Action::DeleteTags,
        Action::DescribeTags,
        Action::RunInstances,
        Action::DescribeInstances,
        Action::TerminateInstances,
        Action::RebootInstances,
        Action::StopInstances,
        Action::StartInstances,
        Action::GetConsoleOutput,
        Action::DescribeInstanceStatus,
        Action::AttachVolume,
        Action::DetachVolume,
        Action::AllocateAddress,
        Action::AssociateAddress,
        Action::DisassociateAddress,
        Action::ReleaseAddress,
        Action::DescribeAddresses,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::DescribeRegions => "DescribeRegions",
            Action::DescribeAvailabilityZones => "DescribeAvailabilityZones",
            Action::DescribeInstanceTypes => "DescribeInstanceTypes",
            Action::CreateKeyPair => "CreateKeyPair",
            Action::ImportKeyPair => "ImportKeyPair",
            Action::DescribeKeyPairs => "DescribeKeyPairs",
            Action::DeleteKeyPair => "DeleteKeyPair",
            Action::CreateSecurityGroup => "CreateSecurityGroup",
            Action::DescribeSecurityGroups => "DescribeSecurityGroups",
            Action::DeleteSecurityGroup => "DeleteSecurityGroup",
            Action::AuthorizeSecurityGroupIngress => "AuthorizeSecurityGroupIngress",
            Action::RevokeSecurityGroupIngress => "RevokeSecurityGroupIngress",
            Action::RegisterImage => "RegisterImage",
            Action::DescribeImages => "DescribeImages",
            Action::DeregisterImage => "DeregisterImage",
            Action::ModifyImageAttribute => "ModifyImageAttribute",
            Action::DescribeImageAttribute => "DescribeImageAttribute",
            Action::ResetImageAttribute => "ResetImageAttribute",
            Action::CreateVolume => "CreateVolume",
            Action::DescribeVolumes => "DescribeVolumes",
            Action::DeleteVolume => "DeleteVolume",
            Action::CreateSnapshot => "CreateSnapshot",
            Action::DescribeSnapshots => "DescribeSnapshots",
            Action::DeleteSnapshot => "DeleteSnapshot",
            Action::ModifySnapshotAttribute => "ModifySnapshotAttribute",
            Action::DescribeSnapshotAttribute => "DescribeSnapshotAttribute",
            Action::CreateTags => "CreateTags",
            Action::DeleteTags => "DeleteTags",
            Action::DescribeTags => "DescribeTags",
            Action::RunInstances => "RunInstances",
            Action::DescribeInstances => "DescribeInstances",
            Action::TerminateInstances => "TerminateInstances",
            Action::RebootInstances => "RebootInstances",
            Action::StopInstances => "StopInstances",
            Action::StartInstances => "StartInstances",
            Action::GetConsoleOutput => "GetConsoleOutput",
            Action::DescribeInstanceStatus => "DescribeInstanceStatus",
            Action::AttachVolume => "AttachVolume",
            Action::DetachVolume => "DetachVolume",
            Action::AllocateAddress => "AllocateAddress",
            Action::AssociateAddress => "AssociateAddress",
            Action::DisassociateAddress => "DisassociateAddress",
            Action::ReleaseAddress => "ReleaseAddress",
            Action::DescribeAddresses => "DescribeAddresses",
        }
    }

    /// The action named `name` (exactly as sent).
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.name() == name)
    }
}

/// Runs `action`.
///
/// (Boxed: every action is compiled here once, not again in each binary that calls
/// one; see `euca_service::serve_api`.)
pub fn dispatch<'a>(
    action: Action,
    cx: &'a Call<'_>,
    x: &'a mut XmlWriter,
) -> futures::future::BoxFuture<'a, Result<(), Ec2Error>> {
    futures::FutureExt::boxed(dispatching(action, cx, x))
}

async fn dispatching(action: Action, cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    match action {
        Action::DescribeRegions => regions::describe_regions(cx, x).await,
        Action::DescribeAvailabilityZones => regions::describe_availability_zones(cx, x).await,
        Action::DescribeInstanceTypes => regions::describe_instance_types(cx, x).await,
        Action::CreateKeyPair => keypairs::create_key_pair(cx, x).await,
        Action::ImportKeyPair => keypairs::import_key_pair(cx, x).await,
        Action::DescribeKeyPairs => keypairs::describe_key_pairs(cx, x).await,
        Action::DeleteKeyPair => keypairs::delete_key_pair(cx, x).await,
        Action::CreateSecurityGroup => groups::create_security_group(cx, x).await,
        Action::DescribeSecurityGroups => groups::describe_security_groups(cx, x).await,
        Action::DeleteSecurityGroup => groups::delete_security_group(cx, x).await,
        Action::AuthorizeSecurityGroupIngress => {
            groups::authorize_security_group_ingress(cx, x).await
        }
        Action::RevokeSecurityGroupIngress => groups::revoke_security_group_ingress(cx, x).await,
        Action::RegisterImage => images::register_image(cx, x).await,
        Action::DescribeImages => images::describe_images(cx, x).await,
        Action::DeregisterImage => images::deregister_image(cx, x).await,
        Action::ModifyImageAttribute => images::modify_image_attribute(cx, x).await,
        Action::DescribeImageAttribute => images::describe_image_attribute(cx, x).await,
        Action::ResetImageAttribute => images::reset_image_attribute(cx, x).await,
        Action::CreateVolume => volumes::create_volume(cx, x).await,
        Action::DescribeVolumes => volumes::describe_volumes(cx, x).await,
        Action::DeleteVolume => volumes::delete_volume(cx, x).await,
        Action::CreateSnapshot => snapshots::create_snapshot(cx, x).await,
        Action::DescribeSnapshots => snapshots::describe_snapshots(cx, x).await,
        Action::DeleteSnapshot => snapshots::delete_snapshot(cx, x).await,
        Action::ModifySnapshotAttribute => snapshots::modify_snapshot_attribute(cx, x).await,
        Action::DescribeSnapshotAttribute => snapshots::describe_snapshot_attribute(cx, x).await,
        Action::CreateTags => tags::create_tags(cx, x).await,
        Action::DeleteTags => tags::delete_tags(cx, x).await,
        Action::DescribeTags => tags::describe_tags(cx, x).await,
        Action::RunInstances => instances::run_instances(cx, x).await,
        Action::DescribeInstances => instances::describe_instances(cx, x).await,
        Action::TerminateInstances => instances::terminate_instances(cx, x).await,
        Action::RebootInstances => instances::reboot_instances(cx, x).await,
        Action::StopInstances => instances::stop_instances(cx, x).await,
        Action::StartInstances => instances::start_instances(cx, x).await,
        Action::GetConsoleOutput => instances::get_console_output(cx, x).await,
        Action::DescribeInstanceStatus => instances::describe_instance_status(cx, x).await,
        Action::AttachVolume => attachments::attach_volume(cx, x).await,
        Action::DetachVolume => attachments::detach_volume(cx, x).await,
        Action::AllocateAddress => addresses::allocate_address(cx, x).await,
        Action::AssociateAddress => addresses::associate_address(cx, x).await,
        Action::DisassociateAddress => addresses::disassociate_address(cx, x).await,
        Action::ReleaseAddress => addresses::release_address(cx, x).await,
        Action::DescribeAddresses => addresses::describe_addresses(cx, x).await,
    }
}
