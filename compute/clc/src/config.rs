//! The `[clc]` section of the TOML config: where the cloud controller listens and
//! what its EC2 API offers (the zone, the instance types, and the capacity
//! DescribeAvailabilityZones `verbose` and DescribeInstanceTypes `Availability`
//! report until a cluster controller reports its nodes' live view).
use serde::Deserialize;
use std::net::SocketAddr;

/// Where the cloud controller listens unless told otherwise. (Eucalyptus served
/// its CLC on 8773; here that is Walrus's port, so the CLC takes 8777.)
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8777";

/// The disk budget (GiB) assumed when `[clc] capacity` names none.
pub const DEFAULT_DISK_GIB: u64 = 100;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClcConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    /// The availability zone (one per cluster; default `<region>a`).
    pub zone: Option<String>,
    /// The instance types offered (`[[clc.instance_types]]`; default: Eucalyptus
    /// 4's table, [`default_instance_types`]). Listing any replaces the whole table.
    pub instance_types: Vec<InstanceType>,
    /// What the zone's nodes hold in all (`[clc.capacity]`); each field defaults
    /// to this machine's (CPUs, memory) or [`DEFAULT_DISK_GIB`].
    pub capacity: CapacityConfig,
    /// The cluster controllers to use (`[[clc.clusters]]`), for a CLC run alone;
    /// `euca up` connects its own.
    pub clusters: Vec<ClusterConfig>,
    /// Where the dynamic DNS server listens, UDP and TCP (`[clc] dns_listen`;
    /// `"off"` or `""` turns it off).
    #[serde(deserialize_with = "dns_listen")]
    pub dns_listen: Option<SocketAddr>,
    /// The domain of instances' public names (`euca-A-B-C-D.eucalyptus.<domain>`).
    pub dns_domain: String,
    /// How many elastic IPs one account may hold (`[clc] max_elastic_ips`;
    /// [`DEFAULT_MAX_ELASTIC_IPS`], EC2's default; 0: none).
    pub max_elastic_ips: u32,
    /// How the nodes reach EBS volumes (`[clc] volume_protocol`): `"nbd"` (the
    /// default) or `"iscsi"` (each attachment an iSCSI target with its own CHAP
    /// secret; the SC's `iscsi_listen` must be on).
    #[serde(deserialize_with = "volume_protocol")]
    pub volume_protocol: String,
    /// The records (and, for `euca clc`, the accounts and keys) in PostgreSQL
    /// instead of `clc.redb`: `postgres://user[:password]@host[:port]/dbname`.
    /// Several `euca clc` on one database serve the same cloud; the instance
    /// reconciler runs on one of them at a time (a lease).
    pub meta_url: Option<String>,
}

/// `volume_protocol`: exactly `nbd` or `iscsi`.
fn volume_protocol<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "nbd" | "iscsi" => Ok(s),
        other => Err(serde::de::Error::custom(format!(
            "volume_protocol {other:?} is neither \"nbd\" nor \"iscsi\""
        ))),
    }
}

/// Elastic IPs per account unless told otherwise (EC2's default quota).
pub const DEFAULT_MAX_ELASTIC_IPS: u32 = 5;

/// Where the dynamic DNS listens unless told otherwise.
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:8753";

/// `dns_listen`: an address, or `"off"`/`""` for none.
fn dns_listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    match s.trim() {
        "" | "off" => Ok(None),
        a => a.parse().map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "dns_listen {a:?} is not an address:port or \"off\": {e}"
            ))
        }),
    }
}

/// One `[[clc.clusters]]`: a zone's cluster controller.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub zone: String,
    /// The CC API's base URL (`http://host:port`).
    pub url: String,
    /// A file holding the cluster token.
    pub token_file: std::path::PathBuf,
}

impl Default for ClcConfig {
    fn default() -> Self {
        ClcConfig {
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            max_connections: 256,
            zone: None,
            instance_types: default_instance_types(),
            capacity: CapacityConfig::default(),
            clusters: Vec::new(),
            dns_listen: Some(DEFAULT_DNS_LISTEN.parse().expect("constant address")),
            dns_domain: "localhost".into(),
            max_elastic_ips: DEFAULT_MAX_ELASTIC_IPS,
            volume_protocol: "nbd".into(),
            meta_url: None,
        }
    }
}

/// One instance type (an Eucalyptus "VM type").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceType {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

/// `[clc.capacity]` as written (unset fields are detected).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapacityConfig {
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
}

/// The zone's total resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

impl Capacity {
    /// How many instances of `t` fit (the smallest of the CPU, memory and disk
    /// quotients).
    pub fn max_of(&self, t: &InstanceType) -> u64 {
        let by_cpu = u64::from(self.cpus) / u64::from(t.cpus.max(1));
        let by_mem = self.memory_mib / t.memory_mib.max(1);
        let by_disk = self.disk_gib / t.disk_gib.max(1);
        by_cpu.min(by_mem).min(by_disk)
    }
}

impl ClcConfig {
    /// Refuses a type table clients could not use: empty, a name given twice or
    /// empty, a zero size.
    pub fn validate(&self) -> Result<(), String> {
        if self.instance_types.is_empty() {
            return Err("[clc] instance_types must name at least one type".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.instance_types {
            if t.name.is_empty() || t.name.len() > 64 || t.name.chars().any(char::is_whitespace) {
                return Err(format!(
                    "[clc] instance_types: {:?} is not a usable type name",
                    t.name
                ));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(format!("[clc] instance_types: {} is listed twice", t.name));
            }
            if t.cpus == 0 || t.memory_mib == 0 || t.disk_gib == 0 {
                return Err(format!(
                    "[clc] instance_types: {} needs cpus, memory_mib and disk_gib above 0",
                    t.name
                ));
            }
        }
        let d = self.dns_domain.trim_matches('.');
        if d.is_empty()
            || d.len() > 200
            || !d
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(format!(
                "[clc] dns_domain {:?} is not a domain name",
                self.dns_domain
            ));
        }
        Ok(())
    }

    /// The capacity: what `[clc.capacity]` says, the rest from this machine
    /// (online CPUs, `MemTotal` of /proc/meminfo) and [`DEFAULT_DISK_GIB`].
    pub fn capacity(&self) -> Capacity {
        let c = &self.capacity;
        Capacity {
            cpus: c.cpus.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                    .unwrap_or(1)
            }),
            memory_mib: c.memory_mib.unwrap_or_else(machine_memory_mib),
            disk_gib: c.disk_gib.unwrap_or(DEFAULT_DISK_GIB),
        }
    }

    /// The type named `name` (exactly).
    pub fn instance_type(&self, name: &str) -> Option<&InstanceType> {
        self.instance_types.iter().find(|t| t.name == name)
    }
}

/// This machine's memory in MiB (1024 if /proc/meminfo cannot be read).
fn machine_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(1024)
}

/// Eucalyptus 4's default VM types: name, CPUs, memory MiB, disk GiB.
const EUCALYPTUS_TYPES: &[(&str, u32, u64, u64)] = &[
    ("t1.micro", 1, 256, 5),
    ("m1.small", 1, 256, 5),
    ("m1.medium", 1, 512, 10),
    ("c1.medium", 2, 512, 10),
    ("m1.large", 2, 512, 10),
    ("m1.xlarge", 2, 1024, 10),
    ("c1.xlarge", 2, 2048, 10),
    ("m2.xlarge", 2, 2048, 10),
    ("m3.xlarge", 4, 2048, 15),
    ("m2.2xlarge", 2, 4096, 30),
    ("m3.2xlarge", 4, 4096, 30),
    ("cc1.4xlarge", 8, 3072, 60),
    ("m2.4xlarge", 8, 4096, 60),
    ("hi1.4xlarge", 8, 6144, 120),
    ("cc2.8xlarge", 16, 6144, 120),
    ("cg1.4xlarge", 16, 12288, 200),
    ("cr1.8xlarge", 16, 16384, 240),
    ("hs1.8xlarge", 48, 119808, 24000),
];

/// The default type table ([`EUCALYPTUS_TYPES`]).
pub fn default_instance_types() -> Vec<InstanceType> {
    EUCALYPTUS_TYPES
        .iter()
        .map(|&(name, cpus, memory_mib, disk_gib)| InstanceType {
            name: name.to_string(),
            cpus,
            memory_mib,
            disk_gib,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_eucalyptus_table_and_valid() {
        let c = ClcConfig::default();
        c.validate().unwrap();
        assert_eq!(c.instance_types.len(), 18);
        let small = c.instance_type("m1.small").unwrap();
        assert_eq!((small.cpus, small.memory_mib, small.disk_gib), (1, 256, 5));
        let hs1 = c.instance_type("hs1.8xlarge").unwrap();
        assert_eq!(
            (hs1.cpus, hs1.memory_mib, hs1.disk_gib),
            (48, 119808, 24000)
        );
        assert!(c.instance_type("M1.small").is_none());
    }

    #[test]
    fn configured_types_and_capacity() {
        let c: ClcConfig = toml_like(
            r#"{"instance_types":[{"name":"tiny","cpus":1,"memory_mib":128,"disk_gib":1}],
                "capacity":{"cpus":4,"memory_mib":1000}}"#,
        );
        c.validate().unwrap();
        assert_eq!(c.instance_types.len(), 1);
        let cap = c.capacity();
        assert_eq!(
            (cap.cpus, cap.memory_mib, cap.disk_gib),
            (4, 1000, DEFAULT_DISK_GIB)
        );
        // 4 by CPU, 7 by memory, 100 by disk.
        assert_eq!(cap.max_of(&c.instance_types[0]), 4);
    }

    #[test]
    fn bad_tables_are_refused() {
        let mut c = ClcConfig::default();
        c.instance_types.push(c.instance_types[0].clone());
        assert!(c.validate().unwrap_err().contains("twice"));
        c.instance_types.pop();
        c.instance_types[0].cpus = 0;
        assert!(c.validate().is_err());
        c.instance_types.clear();
        assert!(c.validate().is_err());
    }

    #[test]
    fn dns_listen_and_domain() {
        let c = ClcConfig::default();
        assert_eq!(c.dns_listen, Some(DEFAULT_DNS_LISTEN.parse().unwrap()));
        assert_eq!(c.dns_domain, "localhost");
        let off: ClcConfig = toml_like(r#"{"dns_listen":"off","dns_domain":"cloud.example"}"#);
        assert_eq!(off.dns_listen, None);
        off.validate().unwrap();
        let empty: ClcConfig = toml_like(r#"{"dns_listen":""}"#);
        assert_eq!(empty.dns_listen, None);
        let port: ClcConfig = toml_like(r#"{"dns_listen":"127.0.0.2:5353"}"#);
        assert_eq!(port.dns_listen, Some("127.0.0.2:5353".parse().unwrap()));
        assert!(serde_json::from_str::<ClcConfig>(r#"{"dns_listen":"nope"}"#).is_err());
        let bad: ClcConfig = toml_like(r#"{"dns_domain":"a..b"}"#);
        assert!(bad.validate().is_err());
    }

    #[test]
    fn max_elastic_ips_default_and_set() {
        assert_eq!(ClcConfig::default().max_elastic_ips, 5);
        let none: ClcConfig = toml_like(r#"{"max_elastic_ips":0}"#);
        assert_eq!(none.max_elastic_ips, 0);
        assert!(serde_json::from_str::<ClcConfig>(r#"{"max_elastic_ips":-1}"#).is_err());
        assert_eq!(ClcConfig::default().volume_protocol, "nbd");
        let iscsi: ClcConfig = toml_like(r#"{"volume_protocol":"iscsi"}"#);
        assert_eq!(iscsi.volume_protocol, "iscsi");
        assert!(serde_json::from_str::<ClcConfig>(r#"{"volume_protocol":"ISCSI"}"#).is_err());
    }

    fn toml_like(json: &str) -> ClcConfig {
        serde_json::from_str(json).unwrap()
    }
}
