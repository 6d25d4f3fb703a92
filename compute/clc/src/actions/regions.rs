//! Regions, availability zones and instance types.
//!
//! The cloud is one region (Walrus's, the one the eucarc names) with one zone per
//! cluster: the CLC's own ([`Clc::zone`](crate::Clc::zone), `euca up`'s CC) and
//! each `[[clc.clusters]]` zone ([`Clc::zones`](crate::Clc::zones) order; zone ids
//! `<region>-az<k>` by that order). Instance types come from
//! `[clc] instance_types`; the capacity reported for them (DescribeAvailabilityZones
//! `verbose`, per zone from that zone's CC; DescribeInstanceTypes
//! `Availability=true`, the CLC's zone) from `[clc.capacity]` until a cluster
//! controller reports its nodes (then a launch lowers `free`).
use crate::call::Call;
use crate::config::InstanceType;
use crate::describe::{self, Describe, Filterable, Tags};
use crate::error::Ec2Error;
use euca_aws::xml::XmlWriter;

/// Resources without tags (regions, zones, types) filter as having none.
static NO_TAGS: Tags = Tags::new();

/// The zone name euca2ools sends to ask for the capacity lines.
pub const VERBOSE: &str = "verbose";

struct Region<'a> {
    name: &'a str,
    endpoint: &'a str,
}

impl Filterable for Region<'_> {
    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        Some(vec![match name {
            "region-name" => self.name.to_string(),
            "endpoint" => self.endpoint.to_string(),
            "opt-in-status" => "opt-in-not-required".to_string(),
            _ => return None,
        }])
    }
    fn tags(&self) -> &Tags {
        &NO_TAGS
    }
}

pub async fn describe_regions(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let d = Describe::from_params(cx.params, "RegionName")?;
    let clc = cx.clc;
    if let Some(bad) = d.ids.iter().find(|n| **n != clc.region) {
        return Err(Ec2Error::invalid(format!("Invalid region: {bad}")));
    }
    let region = Region {
        name: &clc.region,
        endpoint: &clc.endpoint,
    };
    x.open("regionInfo");
    if describe::matches(&d.filters, &region)? {
        x.open("item")
            .elem("optInStatus", "opt-in-not-required")
            .elem("regionName", region.name)
            .elem("regionEndpoint", region.endpoint)
            .close();
    }
    x.close();
    Ok(())
}

struct Zone<'a> {
    name: &'a str,
    id: String,
    region: &'a str,
}

impl Filterable for Zone<'_> {
    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        Some(vec![match name {
            "zone-name" => self.name.to_string(),
            "zone-id" => self.id.clone(),
            "region-name" => self.region.to_string(),
            "state" => "available".to_string(),
            "zone-type" => "availability-zone".to_string(),
            "opt-in-status" => "opt-in-not-required".to_string(),
            "group-name" => self.region.to_string(),
            _ => return None,
        }])
    }
    fn tags(&self) -> &Tags {
        &NO_TAGS
    }
}

/// Each instance type with how many more fit (`free`) and how many fit in all
/// (`max`) in the zone.
pub fn zone_capacity(cx: &Call<'_>) -> Vec<(InstanceType, u64, u64)> {
    let cap = cx.clc.config.capacity();
    cx.clc
        .config
        .instance_types
        .iter()
        .map(|t| {
            let max = cap.max_of(t);
            // No instances run until the cluster controller exists.
            (t.clone(), max, max)
        })
        .collect()
}

/// [`zone_capacity`] from the cluster's live view when one is connected and
/// answers: per type, `free` and `max` summed over the zone's nodes that are up
/// (`NodeView.free` / `NodeView.limit`, counted with `Resources::copies`).
pub async fn live_zone_capacity(cx: &Call<'_>, zone: &str) -> Vec<(InstanceType, u64, u64)> {
    let clc = cx.clc;
    let nodes = match clc.cluster(zone) {
        Ok(c) => c.nodes().await.ok(),
        Err(_) => None,
    };
    let Some(nodes) = nodes else {
        return zone_capacity(cx);
    };
    clc.config
        .instance_types
        .iter()
        .map(|t| {
            let need = euca_compute_proto::Resources {
                cores: t.cpus,
                memory_mib: t.memory_mib,
                disk_gib: t.disk_gib,
            };
            let (mut free, mut max) = (0u64, 0u64);
            for n in nodes
                .iter()
                .filter(|n| n.state == euca_compute_proto::NodeState::Up)
            {
                free = free.saturating_add(n.free.copies(&need));
                max = max.saturating_add(n.limit.copies(&need));
            }
            (t.clone(), free, max)
        })
        .collect()
}

pub async fn describe_availability_zones(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let mut d = Describe::from_params(cx.params, "ZoneName")?;
    let verbose = d.ids.iter().any(|n| n == VERBOSE);
    d.ids.retain(|n| n != VERBOSE);
    let ids: Vec<String> = cx
        .params
        .list("ZoneId")
        .into_iter()
        .map(String::from)
        .collect();
    let clc = cx.clc;
    let names = clc.zones();
    let zones: Vec<Zone> = names
        .iter()
        .enumerate()
        .map(|(k, name)| Zone {
            id: format!("{}-az{}", clc.region, k + 1),
            name,
            region: &clc.region,
        })
        .collect();
    if let Some(bad) = d.ids.iter().find(|n| !zones.iter().any(|z| z.name == *n)) {
        return Err(Ec2Error::invalid(format!(
            "The zone '{bad}' does not exist in region {}",
            clc.region
        )));
    }
    if let Some(bad) = ids.iter().find(|n| !zones.iter().any(|z| z.id == **n)) {
        return Err(Ec2Error::invalid(format!(
            "The zone id '{bad}' does not exist in region {}",
            clc.region
        )));
    }
    x.open("availabilityZoneInfo");
    for zone in &zones {
        let named = (d.ids.is_empty() && ids.is_empty())
            || d.ids.iter().any(|n| n == zone.name)
            || ids.contains(&zone.id);
        if !named || !describe::matches(&d.filters, zone)? {
            continue;
        }
        x.open("item").elem("optInStatus", "opt-in-not-required");
        x.open("messageSet").close();
        x.elem("regionName", zone.region)
            .elem("zoneName", zone.name)
            .elem("zoneId", &zone.id)
            .elem("groupName", zone.region)
            .elem("zoneType", "availability-zone")
            .elem("zoneState", "available")
            .close();
        if verbose {
            // Eucalyptus's capacity lines, after each zone's item: extra items
            // whose zoneName is the label and zoneState the figures (euca2ools
            // prints both columns); each zone's from its own CC.
            capacity_line(x, "|- vm types", "free / max   cpu   ram  disk");
            for (t, free, max) in live_zone_capacity(cx, zone.name).await {
                capacity_line(
                    x,
                    &format!("|- {}", t.name),
                    &format!(
                        "{:04} / {:04} {:3} {:6} {:5}",
                        free, max, t.cpus, t.memory_mib, t.disk_gib
                    ),
                );
            }
        }
    }
    x.close();
    Ok(())
}

fn capacity_line(x: &mut XmlWriter, label: &str, text: &str) {
    x.open("item");
    x.open("messageSet").close();
    x.elem("zoneName", label).elem("zoneState", text).close();
}

impl Filterable for InstanceType {
    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        Some(match name {
            "instance-type" => vec![self.name.clone()],
            "vcpu-info.default-vcpus" => vec![self.cpus.to_string()],
            "memory-info.size-in-mib" => vec![self.memory_mib.to_string()],
            "instance-storage-info.total-size-in-gb" => vec![self.disk_gib.to_string()],
            "instance-storage-supported" => vec!["true".into()],
            "current-generation" => vec!["false".into()],
            "free-tier-eligible" => vec!["false".into()],
            "bare-metal" => vec!["false".into()],
            "hypervisor" => vec![HYPERVISOR.into()],
            "processor-info.supported-architecture" => {
                ARCHITECTURES.iter().map(|a| a.to_string()).collect()
            }
            "supported-root-device-type" => vec!["ebs".into(), "instance-store".into()],
            "supported-virtualization-type" => vec!["hvm".into()],
            "supported-usage-class" => vec!["on-demand".into()],
            _ => return None,
        })
    }
    fn tags(&self) -> &Tags {
        &NO_TAGS
    }
}

/// What runs the instances (the node controller's QEMU/KVM).
const HYPERVISOR: &str = "kvm";
const ARCHITECTURES: &[&str] = &["i386", "x86_64"];

/// The largest `MaxResults` DescribeInstanceTypes takes (as AWS's).
const MAX_TYPES_PAGE: usize = 100;

pub async fn describe_instance_types(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let d = Describe::from_params(cx.params, "InstanceType")?;
    let availability = cx.params.bool("Availability")?.unwrap_or(false);
    let config = &cx.clc.config;
    let unknown: Vec<&str> = d
        .ids
        .iter()
        .filter(|n| config.instance_type(n).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(Ec2Error::Parameter {
            code: "InvalidInstanceType",
            message: format!(
                "The following supplied instance types do not exist: [{}]",
                unknown.join(", ")
            ),
        });
    }
    if let Some(m) = d.max {
        if m > MAX_TYPES_PAGE {
            return Err(Ec2Error::invalid(format!(
                "Value ({m}) for parameter maxResults is invalid. Expect a number between 1 and {MAX_TYPES_PAGE}."
            )));
        }
    }
    // The page: types in table order, after the one NextToken names.
    let start = match &d.token {
        None => 0,
        Some(t) => match config.instance_types.iter().position(|it| it.name == *t) {
            Some(i) => i + 1,
            None => {
                return Err(Ec2Error::Parameter {
                    code: "InvalidNextToken",
                    message: "The specified NextToken is not valid".into(),
                })
            }
        },
    };
    let limit = d.max.unwrap_or(usize::MAX);
    let mut chosen: Vec<&InstanceType> = Vec::new();
    let mut next = None;
    for t in config.instance_types.iter().skip(start) {
        if !d.ids.is_empty() && !d.ids.contains(&t.name) {
            continue;
        }
        if !describe::matches(&d.filters, t)? {
            continue;
        }
        if chosen.len() == limit {
            next = chosen.last().map(|c| c.name.clone());
            break;
        }
        chosen.push(t);
    }
    let zone = cx.clc.zone();
    let capacity = if availability {
        zone_capacity(cx)
    } else {
        Vec::new()
    };
    // The AWS shape (awscli, boto3).
    x.open("instanceTypeSet");
    for t in &chosen {
        x.open("item")
            .elem("instanceType", &t.name)
            .elem("currentGeneration", "false")
            .elem("freeTierEligible", "false");
        x.open("supportedUsageClasses")
            .elem("item", "on-demand")
            .close();
        x.open("supportedRootDeviceTypes")
            .elem("item", "ebs")
            .elem("item", "instance-store")
            .close();
        x.open("supportedVirtualizationTypes")
            .elem("item", "hvm")
            .close();
        x.elem("bareMetal", "false").elem("hypervisor", HYPERVISOR);
        x.open("processorInfo").open("supportedArchitectures");
        for a in ARCHITECTURES {
            x.elem("item", a);
        }
        x.close().close();
        x.open("vCpuInfo")
            .elem("defaultVCpus", t.cpus.to_string())
            .elem("defaultCores", t.cpus.to_string())
            .elem("defaultThreadsPerCore", "1")
            .close();
        x.open("memoryInfo")
            .elem("sizeInMiB", t.memory_mib.to_string())
            .close();
        x.elem("instanceStorageSupported", "true");
        x.open("instanceStorageInfo")
            .elem("totalSizeInGB", t.disk_gib.to_string())
            .close();
        x.close();
    }
    x.close();
    // The Eucalyptus shape (euca2ools' euca-describe-instance-types).
    x.open("instanceTypeDetails");
    for t in &chosen {
        x.open("item")
            .elem("name", &t.name)
            .elem("cpu", t.cpus.to_string())
            .elem("memory", t.memory_mib.to_string())
            .elem("disk", t.disk_gib.to_string())
            .elem("networkInterfaces", "1");
        if let Some((_, free, max)) = capacity.iter().find(|(c, _, _)| c.name == t.name) {
            x.open("availability")
                .open("item")
                .elem("zoneName", &zone)
                .elem("max", max.to_string())
                .elem("available", free.to_string())
                .close()
                .close();
        }
        x.close();
    }
    x.close();
    describe::next_token(x, &next);
    Ok(())
}
