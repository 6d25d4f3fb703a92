//! Tags on every kind of resource, through the `tags` map each stored record has
//! (the record's JSON is patched in one [`RecordStore::update`], so a concurrent
//! change to the record is never lost). Keys and values are the caller's bytes:
//! never trimmed. Limits as AWS: 50 tags per resource, keys of 1–128 characters
//! not starting with `aws:`, values of at most 256 characters.
//!
//! DescribeTags lists the caller's tags kind by kind (in [`Kind::ALL`] order), by
//! resource id, by key; its `NextToken` is that position (`kind:id:hex(key)`).
//!
//! [`RecordStore::update`]: crate::store::RecordStore::update
use crate::call::Call;
use crate::describe::{self, Describe, Filter};
use crate::error::Ec2Error;
use crate::offload::blocking;
use crate::params::Params;
use crate::store::{Change, Db, Kind, Stored};
use euca_aws::xml::XmlWriter;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Tags one resource may have.
pub const MAX_TAGS: usize = 50;
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 256;

/// The `.NotFound` error for an id of `kind`.
pub fn not_found(kind: Kind, id: &str) -> Ec2Error {
    let (code, what) = match kind {
        Kind::KeyPair => ("InvalidKeyPair.NotFound", "key pair"),
        Kind::SecurityGroup => ("InvalidGroup.NotFound", "security group"),
        Kind::Image => ("InvalidAMIID.NotFound", "image id"),
        Kind::Volume => ("InvalidVolume.NotFound", "volume"),
        Kind::Snapshot => ("InvalidSnapshot.NotFound", "snapshot"),
        Kind::Instance => ("InvalidInstanceID.NotFound", "instance ID"),
        Kind::Mac | Kind::Address | Kind::Net => ("InvalidID", "resource"),
    };
    Ec2Error::not_found(code, what, id)
}

fn kind_of(id: &str) -> Result<Kind, Ec2Error> {
    Kind::of_id(id).ok_or_else(|| Ec2Error::Parameter {
        code: "InvalidID",
        message: format!("The ID '{id}' is not valid"),
    })
}

fn check_key(k: &str) -> Result<(), Ec2Error> {
    if k.is_empty() || k.chars().count() > MAX_KEY {
        return Err(Ec2Error::invalid(format!(
            "Tag key '{k}' must have 1 to {MAX_KEY} characters"
        )));
    }
    if k.len() >= 4 && k.as_bytes()[..4].eq_ignore_ascii_case(b"aws:") {
        return Err(Ec2Error::invalid(format!(
            "Tag key '{k}': keys starting with 'aws:' are reserved"
        )));
    }
    Ok(())
}

/// The resource ids of a CreateTags/DeleteTags, each a known kind.
fn resources(p: &Params) -> Result<Vec<(Kind, String)>, Ec2Error> {
    let ids = p.list("ResourceId");
    if ids.is_empty() {
        return Err(Ec2Error::MissingParameter("ResourceId.1".into()));
    }
    ids.into_iter()
        .map(|id| Ok((kind_of(id)?, id.to_string())))
        .collect()
}

/// A change to one record's tags.
type TagPatch<'a> = dyn Fn(&mut Map<String, Value>) -> Result<(), Ec2Error> + 'a;

/// Patches the `tags` map of `owner`'s record `id` with `f`; the record must be
/// the caller's.
fn patch_tags(db: &Db, owner: &str, kind: Kind, id: &str, f: &TagPatch) -> Result<(), Ec2Error> {
    db.store().update(kind, id, &mut |cur: Option<&Stored>| {
        let Some(s) = cur.filter(|s| s.owner == owner) else {
            return Err(not_found(kind, id));
        };
        let mut doc: Value = serde_json::from_slice(&s.value)?;
        let obj = doc
            .as_object_mut()
            .ok_or_else(|| Ec2Error::internal(format!("record {id} is not an object")))?;
        let tags = obj
            .entry("tags")
            .or_insert_with(|| Value::Object(Map::new()));
        if !tags.is_object() {
            *tags = Value::Object(Map::new());
        }
        let Some(map) = tags.as_object_mut() else {
            return Err(Ec2Error::internal(format!("record {id} has bad tags")));
        };
        f(map)?;
        Ok(Change::Put(serde_json::to_vec(&doc)?))
    })
}

/// Every resource must be the caller's before any is changed.
fn check_owned(db: &Db, owner: &str, res: &[(Kind, String)]) -> Result<(), Ec2Error> {
    for (kind, id) in res {
        match db.store().get(*kind, id)? {
            Some(s) if s.owner == owner => {}
            _ => return Err(not_found(*kind, id)),
        }
    }
    Ok(())
}

/// The tags of `TagSpecification.N` for `resource_type` (CreateKeyPair,
/// ImportKeyPair, CreateSecurityGroup), checked as CreateTags checks them.
pub fn tag_specs(p: &Params, resource_type: &str) -> Result<describe::Tags, Ec2Error> {
    let mut out = describe::Tags::new();
    for spec in p.members("TagSpecification") {
        let rt = spec.get("ResourceType").unwrap_or(resource_type);
        if rt != resource_type {
            return Err(Ec2Error::invalid(format!(
                "'{rt}' is not a valid taggable resource type for this operation."
            )));
        }
        for (k, v) in tag_params(&spec)? {
            out.insert(k, v);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Ec2Error::Parameter {
            code: "TagLimitExceeded",
            message: format!("A resource may have at most {MAX_TAGS} tags."),
        });
    }
    Ok(out)
}

/// `Tag.N.Key` / `Tag.N.Value` (value default empty), checked.
fn tag_params(p: &Params) -> Result<Vec<(String, String)>, Ec2Error> {
    let mut tags = Vec::new();
    for t in p.members("Tag") {
        let k = t.required("Key")?;
        let v = t.get("Value").unwrap_or("");
        check_key(k)?;
        if v.chars().count() > MAX_VALUE {
            return Err(Ec2Error::invalid(format!(
                "Tag value for key '{k}' exceeds {MAX_VALUE} characters"
            )));
        }
        tags.push((k.to_string(), v.to_string()));
    }
    Ok(tags)
}

pub async fn create_tags(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let res = resources(cx.params)?;
    let tags = tag_params(cx.params)?;
    if tags.is_empty() {
        return Err(Ec2Error::MissingParameter("Tag.1.Key".into()));
    }
    let (db, owner) = (cx.clc.db.clone(), cx.account().to_string());
    blocking(move || {
        check_owned(&db, &owner, &res)?;
        for (kind, id) in &res {
            patch_tags(&db, &owner, *kind, id, &|map| {
                for (k, v) in &tags {
                    map.insert(k.clone(), Value::String(v.clone()));
                }
                if map.len() > MAX_TAGS {
                    return Err(Ec2Error::Parameter {
                        code: "TagLimitExceeded",
                        message: format!(
                            "The maximum number of tags ({MAX_TAGS}) for resource {id} has been reached."
                        ),
                    });
                }
                Ok(())
            })?;
        }
        Ok(())
    })
    .await?;
    x.elem("return", "true");
    Ok(())
}

pub async fn delete_tags(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let res = resources(cx.params)?;
    // (key, value it must have); no tags named: all of them go.
    let mut tags: Vec<(String, Option<String>)> = Vec::new();
    for t in cx.params.members("Tag") {
        tags.push((
            t.required("Key")?.to_string(),
            t.get("Value").map(String::from),
        ));
    }
    let (db, owner) = (cx.clc.db.clone(), cx.account().to_string());
    blocking(move || {
        check_owned(&db, &owner, &res)?;
        for (kind, id) in &res {
            patch_tags(&db, &owner, *kind, id, &|map| {
                if tags.is_empty() {
                    map.clear();
                }
                for (k, want) in &tags {
                    let matches = match (map.get(k), want) {
                        (Some(_), None) => true,
                        (Some(have), Some(w)) => have.as_str() == Some(w.as_str()),
                        (None, _) => false,
                    };
                    if matches {
                        map.remove(k);
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    })
    .await?;
    x.elem("return", "true");
    Ok(())
}

/// One tag in DescribeTags order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEntry {
    pub kind: Kind,
    pub id: String,
    pub key: String,
    pub value: String,
}

fn kind_index(k: Kind) -> usize {
    Kind::ALL.iter().position(|x| *x == k).unwrap_or(0)
}

/// The token naming `e`'s position.
pub fn token_of(e: &TagEntry) -> String {
    format!("{}:{}:{}", kind_index(e.kind), e.id, hex::encode(&e.key))
}

fn parse_token(t: &str) -> Result<(usize, String, String), Ec2Error> {
    let bad = || Ec2Error::invalid(format!("Invalid NextToken '{t}'"));
    let mut parts = t.splitn(3, ':');
    let (Some(k), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let k: usize = k.parse().map_err(|_| bad())?;
    if k >= Kind::ALL.len() {
        return Err(bad());
    }
    let key = String::from_utf8(hex::decode(key).map_err(|_| bad())?).map_err(|_| bad())?;
    Ok((k, id.to_string(), key))
}

fn entry_matches(filters: &[Filter], e: &TagEntry) -> Result<bool, Ec2Error> {
    for f in filters {
        let have = match f.name.as_str() {
            "resource-id" => e.id.as_str(),
            "resource-type" => e.kind.resource_type(),
            "key" => e.key.as_str(),
            "value" => e.value.as_str(),
            _ => {
                return Err(Ec2Error::invalid(format!(
                    "The filter '{}' is invalid",
                    f.name
                )))
            }
        };
        if !f.values.iter().any(|w| describe::wildcard(w, have)) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn tags_of(s: &Stored) -> Result<BTreeMap<String, String>, Ec2Error> {
    #[derive(serde::Deserialize)]
    struct OnlyTags {
        #[serde(default)]
        tags: BTreeMap<String, String>,
    }
    Ok(serde_json::from_slice::<OnlyTags>(&s.value)?.tags)
}

/// One page of the caller's tags and the next page's token.
pub fn describe_tags_sync(
    db: &Db,
    owner: &str,
    d: &Describe,
) -> Result<(Vec<TagEntry>, Option<String>), Ec2Error> {
    let limit = d.max.unwrap_or(usize::MAX);
    let start = d.token.as_deref().map(parse_token).transpose()?;
    let mut out: Vec<TagEntry> = Vec::new();
    // Collects `s`'s tags after `after_key`; true once one more than a page is in.
    let mut take = |kind: Kind, s: &Stored, after_key: Option<&str>| -> Result<bool, Ec2Error> {
        for (key, value) in tags_of(s)? {
            if after_key.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            let e = TagEntry {
                kind,
                id: s.id.clone(),
                key,
                value,
            };
            if entry_matches(&d.filters, &e)? {
                out.push(e);
                if out.len() > limit {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    };
    let batch = describe::MAX_RESULTS;
    let mut full = false;
    'kinds: for (i, kind) in Kind::ALL.iter().copied().enumerate() {
        let mut after: Option<String> = None;
        if let Some((k, id, key)) = &start {
            if i < *k {
                continue;
            }
            if i == *k {
                if let Some(s) = db.store().get(kind, id)?.filter(|s| s.owner == owner) {
                    if take(kind, &s, Some(key))? {
                        full = true;
                        break 'kinds;
                    }
                }
                after = Some(id.clone());
            }
        }
        loop {
            let got = db
                .store()
                .scan(kind, Some(owner), after.as_deref(), batch)?;
            let done = got.len() < batch;
            for s in &got {
                if take(kind, s, None)? {
                    full = true;
                    break 'kinds;
                }
            }
            match got.last() {
                Some(s) if !done => after = Some(s.id.clone()),
                _ => break,
            }
        }
    }
    let token = if full {
        out.truncate(limit);
        out.last().map(token_of)
    } else {
        None
    };
    Ok((out, token))
}

pub async fn describe_tags(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let d = Describe::from_params(cx.params, "ResourceId")?;
    let (db, owner) = (cx.clc.db.clone(), cx.account().to_string());
    let (tags, token) = blocking(move || describe_tags_sync(&db, &owner, &d)).await?;
    x.open("tagSet");
    for t in &tags {
        x.open("item")
            .elem("resourceId", &t.id)
            .elem("resourceType", t.kind.resource_type())
            .elem("key", &t.key)
            .elem("value", &t.value)
            .close();
    }
    x.close();
    describe::next_token(x, &token);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KeyPair, SecurityGroup};
    use crate::store::RedbStore;
    use std::sync::Arc;

    #[test]
    fn tag_specifications_read_only_their_type() {
        let p = crate::params::Params::of(&[
            ("TagSpecification.1.ResourceType", "volume"),
            ("TagSpecification.1.Tag.1.Key", "Name"),
            ("TagSpecification.1.Tag.1.Value", " spaced "),
            ("TagSpecification.1.Tag.2.Key", "empty"),
        ]);
        let t = tag_specs(&p, "volume").unwrap();
        assert_eq!(t.get("Name").map(String::as_str), Some(" spaced "));
        assert_eq!(t.get("empty").map(String::as_str), Some(""));
        let e = tag_specs(&p, "snapshot").unwrap_err();
        assert_eq!(e.code(), "InvalidParameterValue");
        let none = tag_specs(&crate::params::Params::default(), "volume").unwrap();
        assert!(none.is_empty());
    }

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(Arc::new(
            RedbStore::open(&dir.path().join("c.redb")).unwrap(),
        ));
        (dir, db)
    }

    fn key(id: &str, tags: &[(&str, &str)]) -> KeyPair {
        KeyPair {
            id: id.into(),
            name: id.into(),
            fingerprint: String::new(),
            key_type: "rsa".into(),
            public_key: String::new(),
            created: String::new(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn pages_cover_every_tag_once_across_kinds_and_within_a_resource() {
        let (_d, db) = db();
        db.insert_new(
            "111",
            &key("key-00000001", &[("a", "1"), ("b", "2"), ("c", "3")]),
        )
        .unwrap();
        db.insert_new("111", &key("key-00000002", &[("Name", "x")]))
            .unwrap();
        db.insert_new("222", &key("key-00000003", &[("Name", "other")]))
            .unwrap();
        let g = SecurityGroup {
            id: "sg-00000001".into(),
            name: "g".into(),
            description: "d".into(),
            ingress: vec![],
            tags: [("Name".to_string(), " spaced ".to_string())].into(),
        };
        db.insert_new("111", &g).unwrap();

        let mut d = Describe {
            max: Some(2),
            ..Describe::default()
        };
        let mut seen = Vec::new();
        for _ in 0..10 {
            let (page, token) = describe_tags_sync(&db, "111", &d).unwrap();
            assert!(page.len() <= 2);
            seen.extend(page.into_iter().map(|e| (e.id, e.key, e.value)));
            match token {
                Some(t) => d.token = Some(t),
                None => break,
            }
        }
        let want = [
            ("key-00000001", "a", "1"),
            ("key-00000001", "b", "2"),
            ("key-00000001", "c", "3"),
            ("key-00000002", "Name", "x"),
            ("sg-00000001", "Name", " spaced "),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
        assert_eq!(seen, want);

        // Filters; the other account's tag never shows.
        let d = Describe {
            filters: vec![
                Filter {
                    name: "key".into(),
                    values: vec!["Name".into()],
                },
                Filter {
                    name: "resource-type".into(),
                    values: vec!["security-group".into()],
                },
            ],
            ..Describe::default()
        };
        let (page, token) = describe_tags_sync(&db, "111", &d).unwrap();
        assert_eq!(token, None);
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].id, "sg-00000001");
        let (other, _) = describe_tags_sync(&db, "222", &Describe::default()).unwrap();
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].value, "other");
    }

    #[test]
    fn patching_keeps_the_record_and_checks_the_owner() {
        let (_d, db) = db();
        db.insert_new("111", &key("key-00000001", &[])).unwrap();
        patch_tags(&db, "111", Kind::KeyPair, "key-00000001", &|m| {
            m.insert("k".into(), Value::String("v ".into()));
            Ok(())
        })
        .unwrap();
        let k = db.get::<KeyPair>("key-00000001").unwrap().unwrap();
        assert_eq!(k.record.tags.get("k").map(String::as_str), Some("v "));
        assert_eq!(k.record.name, "key-00000001");
        let e = patch_tags(&db, "222", Kind::KeyPair, "key-00000001", &|_| Ok(())).unwrap_err();
        assert_eq!(e.code(), "InvalidKeyPair.NotFound");
        assert_eq!(kind_of("eni-1234").unwrap_err().code(), "InvalidID");
        // Instances are taggable since they are records (tag: filters on them).
        assert_eq!(kind_of("i-1234").unwrap(), Kind::Instance);
        assert!(check_key("aws:x").is_err());
        assert!(check_key("AWS:x").is_err());
        assert!(check_key(&"k".repeat(129)).is_err());
        assert!(check_key(" k ").is_ok());
        assert!(parse_token("9:x:00").is_err());
        assert!(parse_token("0:key-1:zz").is_err());
    }
}
