//! Key pairs: created (the private key returned once, PEM) or imported (RSA,
//! ed25519). Only the public half is stored. Key names are the caller's bytes
//! (1–255 printable ASCII characters, never trimmed), unique per account.
use crate::call::Call;
use crate::describe::{self, Describe, Filterable, Tags};
use crate::error::Ec2Error;
use crate::keymat::{self, KeyType};
use crate::model::{now_iso, KeyPair};
use crate::offload::{all_of, blocking};
use crate::params::Params;
use crate::store::{Db, Owned, Write};
use base64::Engine;
use euca_aws::xml::XmlWriter;

fn not_found(name: &str) -> Ec2Error {
    Ec2Error::not_found("InvalidKeyPair.NotFound", "key pair", name)
}

/// A key name: 1–255 printable ASCII characters (spaces included), as given.
pub fn check_key_name(name: &str) -> Result<(), Ec2Error> {
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Ec2Error::invalid(format!(
            "Value ({name}) for parameter KeyName is invalid: 1 to 255 ASCII characters"
        )));
    }
    Ok(())
}

impl Filterable for KeyPair {
    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        Some(vec![match name {
            "key-name" => self.name.clone(),
            "fingerprint" => self.fingerprint.clone(),
            "key-pair-id" => self.id.clone(),
            "key-type" => self.key_type.clone(),
            _ => return None,
        }])
    }
    fn tags(&self) -> &Tags {
        &self.tags
    }
}

/// Stores a new key pair for `owner`, unless the name is taken.
fn store_key(db: &Db, owner: &str, key: &KeyPair) -> Result<(), Ec2Error> {
    if db.insert(owner, key, |k: &KeyPair| k.name == key.name)? {
        Ok(())
    } else {
        Err(Ec2Error::duplicate(
            "InvalidKeyPair.Duplicate",
            format!("The keypair '{}' already exists.", key.name),
        ))
    }
}

fn new_record(
    p: &Params,
    name: &str,
    key_type: KeyType,
    public_line: String,
    fingerprint: String,
) -> Result<KeyPair, Ec2Error> {
    Ok(KeyPair {
        id: crate::ids::new_id("key"),
        name: name.to_string(),
        fingerprint,
        key_type: key_type.as_str().to_string(),
        public_key: public_line,
        created: now_iso(),
        tags: super::tags::tag_specs(p, "key-pair")?,
    })
}

pub async fn create_key_pair(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let name = cx.params.required("KeyName")?.to_string();
    check_key_name(&name)?;
    let kind = match cx.params.get("KeyType") {
        None => KeyType::Rsa,
        Some(t) => KeyType::parse(t).ok_or_else(|| {
            Ec2Error::invalid(format!(
                "Value ({t}) for parameter KeyType is invalid: rsa or ed25519"
            ))
        })?,
    };
    if let Some(f) = cx.params.get("KeyFormat").filter(|f| *f != "pem") {
        return Err(Ec2Error::invalid(format!(
            "Value ({f}) for parameter KeyFormat is invalid: only pem is supported"
        )));
    }
    let (db, owner, p) = (
        cx.clc.db.clone(),
        cx.account().to_string(),
        cx.params.clone(),
    );
    super::tags::tag_specs(&p, "key-pair")?;
    let (key, material) = blocking(move || {
        // Refuse a taken name before spending the key generation on it.
        if all_of::<KeyPair>(&db, Some(&owner))?
            .iter()
            .any(|k| k.record.name == name)
        {
            return Err(Ec2Error::duplicate(
                "InvalidKeyPair.Duplicate",
                format!("The keypair '{name}' already exists."),
            ));
        }
        let g = keymat::generate(kind).map_err(Ec2Error::internal)?;
        let key = new_record(&p, &name, kind, g.public_line, g.fingerprint)?;
        store_key(&db, &owner, &key)?;
        Ok((key, g.private_pem))
    })
    .await?;
    x.elem("keyName", &key.name)
        .elem("keyFingerprint", &key.fingerprint)
        .elem("keyMaterial", material)
        .elem("keyPairId", &key.id);
    describe::tag_set(x, &key.tags);
    Ok(())
}

pub async fn import_key_pair(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let name = cx.params.required("KeyName")?.to_string();
    check_key_name(&name)?;
    let sent = cx.params.required("PublicKeyMaterial")?;
    // The material arrives base64-encoded (a blob); a bare key line is taken too.
    let material = base64::engine::general_purpose::STANDARD
        .decode(sent)
        .unwrap_or_else(|_| sent.as_bytes().to_vec());
    let k = keymat::import(&material).map_err(|e| Ec2Error::Parameter {
        code: "InvalidKey.Format",
        message: e.to_string(),
    })?;
    let key = new_record(cx.params, &name, k.key_type, k.public_line, k.fingerprint)?;
    let (db, owner, rec) = (cx.clc.db.clone(), cx.account().to_string(), key.clone());
    blocking(move || store_key(&db, &owner, &rec)).await?;
    x.elem("keyName", &key.name)
        .elem("keyFingerprint", &key.fingerprint)
        .elem("keyPairId", &key.id);
    describe::tag_set(x, &key.tags);
    Ok(())
}

/// The key pairs a DescribeKeyPairs asks for.
fn describe_sync(db: &Db, owner: &str, p: &Params) -> Result<Vec<Owned<KeyPair>>, Ec2Error> {
    let d = Describe::from_params(p, "KeyPairId")?;
    let names = p.list("KeyName");
    let mine = all_of::<KeyPair>(db, Some(owner))?;
    for id in &d.ids {
        if !mine.iter().any(|k| &k.record.id == id) {
            return Err(not_found(id));
        }
    }
    for n in &names {
        if !mine.iter().any(|k| k.record.name == *n) {
            return Err(not_found(n));
        }
    }
    let mut out = Vec::new();
    for k in mine {
        let by_id = d.ids.is_empty() || d.ids.contains(&k.record.id);
        let by_name = names.is_empty() || names.contains(&k.record.name.as_str());
        if by_id && by_name && describe::matches(&d.filters, &k.record)? {
            out.push(k);
        }
    }
    Ok(out)
}

pub async fn describe_key_pairs(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let (db, owner, p) = (
        cx.clc.db.clone(),
        cx.account().to_string(),
        cx.params.clone(),
    );
    let include_public = cx.params.bool("IncludePublicKey")?.unwrap_or(false);
    let keys = blocking(move || describe_sync(&db, &owner, &p)).await?;
    x.open("keySet");
    for k in keys {
        let k = k.record;
        x.open("item")
            .elem("keyPairId", &k.id)
            .elem("keyName", &k.name)
            .elem("keyFingerprint", &k.fingerprint)
            .elem("keyType", &k.key_type);
        describe::tag_set(x, &k.tags);
        if include_public {
            x.elem("publicKey", &k.public_key);
        }
        x.elem("createTime", &k.created);
        x.close();
    }
    x.close();
    Ok(())
}

pub async fn delete_key_pair(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let name = cx.params.get("KeyName").map(String::from);
    let id = cx.params.get("KeyPairId").map(String::from);
    if name.is_none() && id.is_none() {
        return Err(Ec2Error::MissingParameter("KeyName or KeyPairId".into()));
    }
    let (db, owner) = (cx.clc.db.clone(), cx.account().to_string());
    let deleted = blocking(move || {
        let target = match (&id, &name) {
            (Some(id), _) => Some(id.clone()),
            (None, Some(name)) => all_of::<KeyPair>(&db, Some(&owner))?
                .into_iter()
                .find(|k| &k.record.name == name)
                .map(|k| k.record.id),
            (None, None) => None,
        };
        let Some(target) = target else {
            return Ok(None);
        };
        // Deleted only if it is still the caller's (and still has that name).
        db.update::<KeyPair, _>(&target, |cur| {
            Ok(match cur {
                Some(k)
                    if k.owner == owner && name.as_ref().is_none_or(|n| *n == k.record.name) =>
                {
                    (Write::Delete, Some(k.record.id.clone()))
                }
                _ => (Write::Keep, None),
            })
        })
    })
    .await?;
    // Deleting a key pair that does not exist succeeds, as in AWS.
    x.elem("return", "true");
    if let Some(id) = deleted {
        x.elem("keyPairId", id);
    }
    Ok(())
}
