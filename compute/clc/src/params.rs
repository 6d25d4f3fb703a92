//! The parameters of one EC2 Query request (form body or query string), and the
//! EC2 conventions for lists (`InstanceId.1`, `InstanceId.2`, …) and lists of
//! structures (`Filter.1.Name`, `Filter.1.Value.1`, …). Values are what the client
//! sent, decoded and never trimmed.
use crate::error::Ec2Error;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: BTreeMap<String, String>,
}

impl Params {
    /// The parameters from decoded pairs; a name given twice is refused (which of
    /// the two was meant is not ours to guess).
    pub fn new(pairs: Vec<(String, String)>) -> Result<Params, Ec2Error> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if map.contains_key(&k) {
                return Err(Ec2Error::invalid(format!(
                    "the parameter {k} is given more than once"
                )));
            }
            map.insert(k, v);
        }
        Ok(Params { pairs: map })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.get(name).map(String::as_str)
    }

    /// The parameter, or `MissingParameter`.
    pub fn required(&self, name: &str) -> Result<&str, Ec2Error> {
        self.get(name)
            .ok_or_else(|| Ec2Error::MissingParameter(name.to_string()))
    }

    /// A whole number, if given.
    pub fn int(&self, name: &str) -> Result<Option<i64>, Ec2Error> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    Ec2Error::invalid(format!(
                        "Value ({v}) for parameter {name} is invalid. Expected a number."
                    ))
                })
            })
            .transpose()
    }

    /// `true` / `false` (any case), if given.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, Ec2Error> {
        self.get(name)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(Ec2Error::invalid(format!(
                    "Value ({v}) for parameter {name} is invalid. Expected 'true' or 'false'."
                ))),
            })
            .transpose()
    }

    /// The values of `prefix.1`, `prefix.2`, … in index order.
    pub fn list(&self, prefix: &str) -> Vec<&str> {
        let mut out: Vec<(u32, &str)> = self
            .with_prefix(prefix)
            .filter_map(|(rest, v)| rest.parse::<u32>().ok().map(|n| (n, v)))
            .collect();
        out.sort_by_key(|(n, _)| *n);
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// The structures `prefix.N.*`, in index order, each as its own parameters
    /// (`Filter.2.Value.1` is `Value.1` of the second).
    pub fn members(&self, prefix: &str) -> Vec<Params> {
        let mut groups: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
        for (rest, v) in self.with_prefix(prefix) {
            if let Some((n, field)) = rest.split_once('.') {
                if let Ok(n) = n.parse::<u32>() {
                    groups
                        .entry(n)
                        .or_default()
                        .insert(field.to_string(), v.to_string());
                }
            }
        }
        groups.into_values().map(|pairs| Params { pairs }).collect()
    }

    /// `(rest, value)` of every parameter named `prefix.rest`.
    fn with_prefix<'a>(&'a self, prefix: &str) -> impl Iterator<Item = (&'a str, &'a str)> {
        let prefix = format!("{prefix}.");
        self.pairs.iter().filter_map(move |(k, v)| {
            k.strip_prefix(prefix.as_str())
                .map(|rest| (rest, v.as_str()))
        })
    }

    /// Parameters from literal pairs (tests).
    #[cfg(test)]
    pub(crate) fn of(pairs: &[(&str, &str)]) -> Params {
        Params::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .expect("test parameters are distinct")
    }

    /// Every parameter, for tests and logs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params::of(pairs)
    }

    #[test]
    fn lists_in_index_order_not_text_order() {
        let q = p(&[
            ("VolumeId.10", "vol-j"),
            ("VolumeId.2", "vol-b"),
            ("VolumeId.1", "vol-a"),
            ("VolumeIdX", "no"),
        ]);
        assert_eq!(q.list("VolumeId"), ["vol-a", "vol-b", "vol-j"]);
    }

    #[test]
    fn members_group_structures() {
        let q = p(&[
            ("Filter.1.Name", "status"),
            ("Filter.1.Value.1", "available"),
            ("Filter.1.Value.2", " in-use "),
            ("Filter.2.Name", "tag:Name"),
            ("Filter.2.Value.1", "x"),
        ]);
        let m = q.members("Filter");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].get("Name"), Some("status"));
        assert_eq!(m[0].list("Value"), ["available", " in-use "]);
        assert_eq!(m[1].list("Value"), ["x"]);
    }

    #[test]
    fn duplicates_and_bad_numbers_are_refused() {
        let dup = Params::new(vec![("A".into(), "1".into()), ("A".into(), "2".into())]);
        assert_eq!(dup.unwrap_err().code(), "InvalidParameterValue");
        let q = p(&[("Size", "ten"), ("Force", "maybe")]);
        assert!(q.int("Size").is_err());
        assert!(q.bool("Force").is_err());
        assert_eq!(q.required("Nope").unwrap_err().code(), "MissingParameter");
    }
}
