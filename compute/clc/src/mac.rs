//! The cloud's MAC addresses: a random locally-administered unicast prefix made
//! once per cloud and stored, then a random 24-bit suffix per instance. Each
//! address handed out is a record whose id is the address, so uniqueness across
//! the cloud is the store's id uniqueness, checked in the inserting transaction
//! (two launches cannot take the same address, whatever the account).
//!
//! An address is given back when its instance record is deleted (past retention,
//! or a launch that failed); one a crash left behind is given back by [`sweep`],
//! which the reconciler runs with the address sweep.
use crate::error::Ec2Error;
use crate::model::{Instance, MacRecord};
use crate::netalloc::LEAK_GRACE_SECS;
use crate::offload::all_of;
use crate::store::{Db, Write};

/// The id of the record holding the cloud's prefix.
pub const PREFIX_ID: &str = "prefix";
/// The owner of MAC records (no account).
const OWNER: &str = "cloud";
/// Tries for a free suffix before giving up (16.7 M suffixes per cloud).
const TRIES: usize = 64;

/// A random first octet with the locally-administered bit set and the multicast
/// bit clear.
fn local_unicast(b: u8) -> u8 {
    (b & 0xfc) | 0x02
}

/// The cloud's 3-octet prefix (`d2:0f:7a`), made on first use.
pub fn prefix(db: &Db) -> Result<String, Ec2Error> {
    if let Some(o) = db.get::<MacRecord>(PREFIX_ID)? {
        return Ok(o.record.value);
    }
    let r: [u8; 3] = rand::random();
    let made = format!("{:02x}:{:02x}:{:02x}", local_unicast(r[0]), r[1], r[2]);
    let rec = MacRecord {
        id: PREFIX_ID.into(),
        value: made,
        created: None,
    };
    // A concurrent first use may have stored another: that one is the prefix.
    db.insert_new(OWNER, &rec)?;
    db.get::<MacRecord>(PREFIX_ID)?
        .map(|o| o.record.value)
        .ok_or_else(|| Ec2Error::internal("the MAC prefix record vanished"))
}

/// A MAC address no instance of the cloud has, now held by `instance_id`.
pub fn allocate(db: &Db, instance_id: &str) -> Result<String, Ec2Error> {
    let prefix = prefix(db)?;
    for _ in 0..TRIES {
        let s: [u8; 3] = rand::random();
        let mac = format!("{prefix}:{:02x}:{:02x}:{:02x}", s[0], s[1], s[2]);
        let rec = MacRecord {
            id: mac.clone(),
            value: instance_id.into(),
            created: Some(crate::netalloc::unix_now()),
        };
        if db.insert_new(OWNER, &rec)? {
            return Ok(mac);
        }
    }
    Err(Ec2Error::internal(
        "no free MAC address found under the cloud's prefix",
    ))
}

/// Gives `mac` back (the instance record is gone).
pub fn release(db: &Db, mac: &str) -> Result<(), Ec2Error> {
    db.update::<MacRecord, _>(mac, |_| Ok((Write::Delete, ())))
}

/// Gives back every address whose holder's record is gone (the instance ended and
/// its record passed retention, or its launch died before writing it) once the
/// address is [`LEAK_GRACE_SECS`] old by `now` (one without a time, written by an
/// older version, at once), or whose holder's record names another address; the
/// prefix record stays. Returns the addresses given back.
pub fn sweep(db: &Db, now: i64) -> Result<Vec<String>, Ec2Error> {
    let mut out = Vec::new();
    for o in all_of::<MacRecord>(db, None)? {
        let r = o.record;
        if r.id == PREFIX_ID {
            continue;
        }
        let leaked = match db.get::<Instance>(&r.value)? {
            Some(i) => i.record.mac != r.id,
            // A launch takes its MAC before its addresses and writes the instance
            // after them: the same window as the address records'.
            None => r
                .created
                .is_none_or(|t| t.saturating_add(LEAK_GRACE_SECS) <= now),
        };
        if !leaked {
            continue;
        }
        // Only if the same instance still holds it (the record is read again in
        // the deleting transaction).
        let gone = db.update::<MacRecord, _>(&r.id, |cur| {
            Ok(match cur {
                Some(c) if c.record.value == r.value => (Write::Delete, true),
                _ => (Write::Keep, false),
            })
        })?;
        if gone {
            out.push(r.id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_octet_is_local_unicast() {
        for b in 0..=255u8 {
            let o = super::local_unicast(b);
            assert_eq!(o & 0x01, 0, "unicast");
            assert_eq!(o & 0x02, 0x02, "locally administered");
        }
    }
}
