//! What every Describe action shares: the ids asked for, `Filter.N`, `MaxResults` /
//! `NextToken` pagination, and `tag:` filters; and the `tagSet` every resource
//! carries.
//!
//! Filter values match exactly, or with the AWS wildcards `*` (any run) and `?`
//! (one character). A filter name a resource does not know is
//! `InvalidParameterValue`. Pages are in id order; `NextToken` is the last id of
//! the page: a position, not a secret — a page only ever holds records the
//! `visible` rule lets the caller see (one account's, or for images and snapshots
//! also those shared with it, whose tags it does not see).
use crate::error::Ec2Error;
use crate::params::Params;
use crate::store::{Db, Owned, Record};
use euca_aws::xml::XmlWriter;
use std::collections::BTreeMap;

/// A resource's tags (key → value).
pub type Tags = BTreeMap<String, String>;

/// The largest page a caller may ask for, and what a scan reads at a time.
pub const MAX_RESULTS: usize = 1000;

#[derive(Debug, Clone)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

/// The common Describe parameters.
#[derive(Debug, Clone, Default)]
pub struct Describe {
    pub ids: Vec<String>,
    pub filters: Vec<Filter>,
    /// `MaxResults`, if given.
    pub max: Option<usize>,
    pub token: Option<String>,
    /// For kinds other accounts may see (images, snapshots): the caller. Tags are
    /// their owner's own, so `tag:` filters see no tags on another's record.
    pub viewer: Option<String>,
    /// For instances: the cloud's DNS domain (`[clc] dns_domain`), which public
    /// names (the `dns-name` filter) are made in.
    pub dns_domain: Option<String>,
}

impl Describe {
    /// Reads `<id_param>.N`, `Filter.N.Name` / `Filter.N.Value.M`, `MaxResults` and
    /// `NextToken`.
    pub fn from_params(p: &Params, id_param: &str) -> Result<Describe, Ec2Error> {
        let ids: Vec<String> = p.list(id_param).into_iter().map(String::from).collect();
        let mut filters = Vec::new();
        for f in p.members("Filter") {
            let name = f.required("Name")?.to_string();
            filters.push(Filter {
                name,
                values: f.list("Value").into_iter().map(String::from).collect(),
            });
        }
        let max = match p.int("MaxResults")? {
            None => None,
            Some(n) if (1..=MAX_RESULTS as i64).contains(&n) => Some(n as usize),
            Some(n) => {
                return Err(Ec2Error::invalid(format!(
                    "Value ({n}) for parameter maxResults is invalid. Expect a number between 1 and {MAX_RESULTS}."
                )))
            }
        };
        if max.is_some() && !ids.is_empty() {
            return Err(Ec2Error::Parameter {
                code: "InvalidParameterCombination",
                message: format!(
                    "The parameter {id_param} cannot be used with the parameter maxResults"
                ),
            });
        }
        Ok(Describe {
            ids,
            filters,
            max,
            token: p.get("NextToken").map(String::from),
            viewer: None,
            dns_domain: None,
        })
    }
}

/// A resource as filters see it.
pub trait Filterable {
    /// The values of filter `name` for this resource; `None` if the resource has no
    /// such filter (then the request is refused).
    fn filter_values(&self, name: &str) -> Option<Vec<String>>;
    /// [`Filterable::filter_values`] for filters whose values depend on the
    /// cloud's DNS domain (instances' `dns-name`); the others by default.
    fn filter_values_in(&self, name: &str, _dns_domain: Option<&str>) -> Option<Vec<String>> {
        self.filter_values(name)
    }
    fn tags(&self) -> &Tags;
}

/// `*` and `?` wildcards, as AWS filters have them.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `r` passes every filter (filters AND, values OR).
pub fn matches<T: Filterable>(filters: &[Filter], r: &T) -> Result<bool, Ec2Error> {
    matches_tags(filters, r, r.tags(), None)
}

/// [`matches`] with `tags` standing for the record's (none, for another
/// account's record), public names made in `dns_domain`.
fn matches_tags<T: Filterable>(
    filters: &[Filter],
    r: &T,
    tags: &Tags,
    dns_domain: Option<&str>,
) -> Result<bool, Ec2Error> {
    for f in filters {
        let have: Vec<String> = if let Some(key) = f.name.strip_prefix("tag:") {
            tags.get(key).cloned().into_iter().collect()
        } else if f.name == "tag-key" {
            tags.keys().cloned().collect()
        } else if f.name == "tag-value" {
            tags.values().cloned().collect()
        } else {
            r.filter_values_in(&f.name, dns_domain)
                .ok_or_else(|| Ec2Error::invalid(format!("The filter '{}' is invalid", f.name)))?
        };
        if !f
            .values
            .iter()
            .any(|want| have.iter().any(|h| wildcard(want, h)))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Which records a Describe looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// One account's.
    Owner(&'a str),
    /// Everyone's (then `visible` decides, e.g. public images).
    All,
}

/// One page of a Describe: the records asked for by id (each must exist and be
/// visible, else `not_found`), or else a scan in id order from `NextToken`; both
/// filtered. Returns the page and the next token.
pub fn page<T: Record + Filterable>(
    db: &Db,
    scope: Scope,
    d: &Describe,
    visible: impl Fn(&Owned<T>) -> bool,
    not_found: impl Fn(&str) -> Ec2Error,
) -> Result<(Vec<Owned<T>>, Option<String>), Ec2Error> {
    if !d.ids.is_empty() {
        let mut out = Vec::with_capacity(d.ids.len());
        let mut seen = std::collections::HashSet::new();
        for id in &d.ids {
            // An id asked for twice is listed once.
            if !seen.insert(id.as_str()) {
                continue;
            }
            match db.get::<T>(id)? {
                Some(o) if scope_allows(scope, &o) && visible(&o) => {
                    if passes(d, &o)? {
                        out.push(o);
                    }
                }
                _ => return Err(not_found(id)),
            }
        }
        return Ok((out, None));
    }
    let limit = d.max.unwrap_or(usize::MAX);
    let owner = match scope {
        Scope::Owner(o) => Some(o),
        Scope::All => None,
    };
    let mut after = d.token.clone();
    let mut out = Vec::new();
    // Unfiltered pages read what they return; filtered ones read ahead.
    let batch_size = if d.filters.is_empty() {
        limit.min(MAX_RESULTS)
    } else {
        MAX_RESULTS
    };
    loop {
        let batch = db.scan::<T>(owner, after.as_deref(), batch_size)?;
        let exhausted = batch.len() < batch_size;
        for o in batch {
            after = Some(o.record.id().to_string());
            if visible(&o) && passes(d, &o)? {
                out.push(o);
                if out.len() == limit {
                    return Ok((out, after));
                }
            }
        }
        if exhausted {
            return Ok((out, None));
        }
    }
}

/// Whether `o` passes `d`'s filters, as `d.viewer` sees it.
fn passes<T: Filterable>(d: &Describe, o: &Owned<T>) -> Result<bool, Ec2Error> {
    let domain = d.dns_domain.as_deref();
    match &d.viewer {
        Some(v) if *v != o.owner => matches_tags(&d.filters, &o.record, &Tags::new(), domain),
        _ => matches_tags(&d.filters, &o.record, o.record.tags(), domain),
    }
}

fn scope_allows<T>(scope: Scope, o: &Owned<T>) -> bool {
    match scope {
        Scope::Owner(a) => o.owner == a,
        Scope::All => true,
    }
}

/// `<tagSet>` with one item per tag (always present, possibly empty).
pub fn tag_set(x: &mut XmlWriter, tags: &Tags) {
    x.open("tagSet");
    for (k, v) in tags {
        x.open("item").elem("key", k).elem("value", v).close();
    }
    x.close();
}

/// `<nextToken>` when there is a next page.
pub fn next_token(x: &mut XmlWriter, token: &Option<String>) {
    if let Some(t) = token {
        x.elem("nextToken", t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("vol-*", "vol-12"));
        assert!(wildcard("*", ""));
        assert!(wildcard("a?c", "abc"));
        assert!(!wildcard("a?c", "ac"));
        assert!(wildcard("*b*", "abc"));
        assert!(!wildcard("available", "available "));
        assert!(wildcard("in-use", "in-use"));
    }
}
