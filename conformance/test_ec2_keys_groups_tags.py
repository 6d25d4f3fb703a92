"""EC2 key pairs, security groups and tags on the cloud controller, driven by boto3,
awscli v2 and awscli v1 (issue 12)."""
import base64
import hashlib
import json
import subprocess
import uuid

import pytest
from botocore.exceptions import ClientError


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def code_of(call, *args, **kw):
    with pytest.raises(ClientError) as e:
        call(*args, **kw)
    return e.value.response["Error"]["Code"]


def ssh_keygen(*args):
    return subprocess.run(["ssh-keygen", *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def other_account(cloud):
    acct = cloud.new_account(uniq("other"))
    return acct, cloud.ec2(access_key=acct["AWS_ACCESS_KEY_ID"],
                           secret_key=acct["AWS_SECRET_ACCESS_KEY"])


# ---- key pairs ----

@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
def test_created_key_material_is_a_private_key_ssh_keygen_accepts(cloud, tmp_path, key_type):
    ec2 = cloud.ec2()
    name = uniq("made")
    r = ec2.create_key_pair(KeyName=name, KeyType=key_type)
    assert r["KeyName"] == name
    assert r["KeyPairId"].startswith("key-")
    pem = r["KeyMaterial"]
    head = ("-----BEGIN RSA PRIVATE KEY-----" if key_type == "rsa"
            else "-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pem.startswith(head)
    f = tmp_path / "k"
    f.write_text(pem)
    f.chmod(0o600)
    pub = ssh_keygen("-y", "-f", str(f)).split()
    assert pub[0] == ("ssh-rsa" if key_type == "rsa" else "ssh-ed25519")
    (tmp_path / "k.pub").write_text(" ".join(pub[:2]) + "\n")
    if key_type == "rsa":
        # SHA-1 of the PKCS#8 DER private key, as AWS.
        der = subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-outform", "DER",
                              "-in", str(f)], capture_output=True, check=True).stdout
        want = ":".join(f"{b:02x}" for b in hashlib.sha1(der).digest())
    else:
        fp = ssh_keygen("-l", "-E", "sha256", "-f", str(tmp_path / "k.pub")).split()[1]
        b64 = fp.removeprefix("SHA256:")
        want = b64 + "=" * (-len(b64) % 4)
    assert r["KeyFingerprint"] == want
    d = ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"]
    assert [(k["KeyName"], k["KeyPairId"], k["KeyFingerprint"], k["KeyType"]) for k in d] == \
        [(name, r["KeyPairId"], want, key_type)]
    # The private key is never stored: describe has no material; the public key matches.
    d = ec2.describe_key_pairs(KeyPairIds=[r["KeyPairId"]], IncludePublicKey=True)["KeyPairs"]
    assert d[0]["PublicKey"].split()[:2] == pub[:2]
    assert "KeyMaterial" not in d[0]
    assert code_of(ec2.create_key_pair, KeyName=name) == "InvalidKeyPair.Duplicate"


def test_import_rsa_and_ed25519_with_awscli2_and_fingerprints(cloud, tmp_path):
    names = {}
    for kt in ("rsa", "ed25519"):
        f = tmp_path / f"id_{kt}"
        ssh_keygen("-q", "-t", kt, "-N", "", "-C", "me@host", "-f", str(f))
        name = uniq(f"imp-{kt}")
        out = json.loads(cloud.aws_ec2("import-key-pair", "--key-name", name,
                                       "--public-key-material", f"fileb://{f}.pub").stdout)
        assert out["KeyName"] == name and out["KeyPairId"].startswith("key-")
        if kt == "rsa":
            spki = ssh_keygen("-e", "-m", "PKCS8", "-f", f"{f}.pub")
            der = base64.b64decode("".join(l for l in spki.splitlines() if "-----" not in l))
            want = ":".join(f"{b:02x}" for b in hashlib.md5(der).digest())
        else:
            b64 = ssh_keygen("-l", "-E", "sha256", "-f", f"{f}.pub").split()[1][7:]
            want = b64 + "=" * (-len(b64) % 4)
        assert out["KeyFingerprint"] == want
        names[name] = (kt, want)
    out = json.loads(cloud.aws_ec2("describe-key-pairs", "--key-names", *names).stdout)
    got = {k["KeyName"]: (k["KeyType"], k["KeyFingerprint"]) for k in out["KeyPairs"]}
    assert got == names
    # Filters by type and fingerprint.
    ed = [n for n, (t, _) in names.items() if t == "ed25519"][0]
    ec2 = cloud.ec2()
    f = ec2.describe_key_pairs(Filters=[{"Name": "key-type", "Values": ["ed25519"]},
                                        {"Name": "fingerprint", "Values": [names[ed][1]]}])
    assert [k["KeyName"] for k in f["KeyPairs"]] == [ed]


def test_import_garbage_and_unknown_names(cloud):
    ec2 = cloud.ec2()
    assert code_of(ec2.import_key_pair, KeyName=uniq("bad"),
                   PublicKeyMaterial=b"not a key at all") == "InvalidKey.Format"
    assert code_of(ec2.describe_key_pairs, KeyNames=[uniq("nope")]) == "InvalidKeyPair.NotFound"
    assert code_of(ec2.create_key_pair, KeyName="") in ("InvalidParameterValue",
                                                       "MissingParameter")
    # Deleting a key pair that does not exist succeeds, as in AWS.
    ec2.delete_key_pair(KeyName=uniq("never"))


def test_key_names_are_bytes_and_delete_by_name_or_id(cloud):
    ec2 = cloud.ec2()
    spaced = " " + uniq("sp") + " "
    a = ec2.create_key_pair(KeyName=spaced, KeyType="ed25519")
    assert a["KeyName"] == spaced
    assert ec2.describe_key_pairs(KeyNames=[spaced])["KeyPairs"][0]["KeyName"] == spaced
    assert code_of(ec2.describe_key_pairs, KeyNames=[spaced.strip()]) == \
        "InvalidKeyPair.NotFound"
    b = ec2.create_key_pair(KeyName=uniq("byid"), KeyType="ed25519")
    ec2.delete_key_pair(KeyName=spaced)
    ec2.delete_key_pair(KeyPairId=b["KeyPairId"])
    mine = {k["KeyPairId"] for k in ec2.describe_key_pairs()["KeyPairs"]}
    assert a["KeyPairId"] not in mine and b["KeyPairId"] not in mine


def test_awscli1_create_and_delete_key_pair(cloud):
    name = uniq("v1")
    out = json.loads(cloud.aws_ec2("create-key-pair", "--key-name", name, v1=True).stdout)
    assert out["KeyName"] == name and "BEGIN RSA PRIVATE KEY" in out["KeyMaterial"]
    cloud.aws_ec2("delete-key-pair", "--key-name", name, v1=True)
    r = cloud.aws_ec2("describe-key-pairs", "--key-names", name, v1=True, check=False)
    assert r.returncode != 0 and "InvalidKeyPair.NotFound" in r.stderr


# ---- security groups ----

def test_default_group_exists_for_a_fresh_account(cloud):
    acct, ec2 = other_account(cloud)
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [(g["GroupName"], g["Description"], g["OwnerId"]) for g in groups] == \
        [("default", "default group", acct["ACCOUNT_ID"])]
    gid = groups[0]["GroupId"]
    assert gid.startswith("sg-")
    # Stable: the same group every time, by name too.
    again = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"]
    assert [g["GroupId"] for g in again] == [gid]
    assert code_of(ec2.delete_security_group, GroupName="default") == "InvalidGroup.Reserved"
    assert code_of(ec2.create_security_group, GroupName="default",
                   Description="x") == "InvalidGroup.Duplicate"


def test_authorize_revoke_by_cidr_and_by_source_group(cloud):
    ec2 = cloud.ec2()
    web, app = uniq("web"), uniq("app")
    web_id = ec2.create_security_group(GroupName=web, Description="web tier")["GroupId"]
    app_id = ec2.create_security_group(GroupName=app, Description="app tier")["GroupId"]
    assert code_of(ec2.create_security_group, GroupName=web,
                   Description="again") == "InvalidGroup.Duplicate"
    # awscli v2's flat options (sent as IpPermissions.1.*, see the fixture).
    cloud.aws_ec2("authorize-security-group-ingress", "--group-name", web,
                  "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0")
    ec2.authorize_security_group_ingress(GroupId=web_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "IpRanges": [{"CidrIp": "10.0.0.0/8"}, {"CidrIp": "192.168.0.0/16"}]},
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
         "UserIdGroupPairs": [{"GroupId": app_id}]},
    ])
    # The legacy flat form (euca2ools, awscli --source-group).
    ec2.authorize_security_group_ingress(GroupName=web, IpProtocol="icmp", FromPort=-1,
                                         ToPort=-1, CidrIp="172.16.0.0/12")
    g = ec2.describe_security_groups(GroupIds=[web_id])["SecurityGroups"][0]
    perms = {(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")):
             (sorted(r["CidrIp"] for r in p["IpRanges"]),
              [(u["GroupId"], u["GroupName"]) for u in p["UserIdGroupPairs"]])
             for p in g["IpPermissions"]}
    assert perms == {
        ("tcp", 22, 22): (["0.0.0.0/0"], []),
        ("tcp", 80, 80): (["10.0.0.0/8", "192.168.0.0/16"], []),
        ("tcp", 8080, 8080): ([], [(app_id, app)]),
        ("icmp", -1, -1): (["172.16.0.0/12"], []),
    }
    # Filters over the rules.
    for name, value in [("ip-permission.cidr", "10.0.0.0/8"),
                        ("ip-permission.group-id", app_id),
                        ("ip-permission.from-port", "8080"),
                        ("group-name", web)]:
        got = ec2.describe_security_groups(Filters=[{"Name": name, "Values": [value]}])
        assert web_id in [x["GroupId"] for x in got["SecurityGroups"]], name
        assert app_id not in [x["GroupId"] for x in got["SecurityGroups"]], name

    assert code_of(ec2.authorize_security_group_ingress, GroupId=web_id, IpPermissions=[
        {"IpProtocol": "6", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]) == "InvalidPermission.Duplicate"
    assert code_of(ec2.authorize_security_group_ingress, GroupId=web_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "10.0.0.0/33"}]}]) == "InvalidParameterValue"
    # The group in use by web's rule cannot go.
    assert code_of(ec2.delete_security_group, GroupId=app_id) == "DependencyViolation"

    ec2.revoke_security_group_ingress(GroupName=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
         "UserIdGroupPairs": [{"GroupName": app}]}])
    cloud.aws_ec2("revoke-security-group-ingress", "--group-id", web_id,
                  "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0")
    assert code_of(ec2.revoke_security_group_ingress, GroupId=web_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]) == "InvalidPermission.NotFound"
    g = ec2.describe_security_groups(GroupIds=[web_id])["SecurityGroups"][0]
    assert {(p["IpProtocol"], p.get("FromPort")) for p in g["IpPermissions"]} == \
        {("tcp", 80), ("icmp", -1)}
    ec2.delete_security_group(GroupId=app_id)
    ec2.delete_security_group(GroupName=web)
    assert code_of(ec2.describe_security_groups, GroupIds=[web_id]) == "InvalidGroup.NotFound"


# ---- tags ----

def test_tags_on_a_key_pair_and_a_group_filters_and_pages(cloud):
    ec2 = cloud.ec2()
    kp = ec2.create_key_pair(KeyName=uniq("tagged"), KeyType="ed25519")["KeyPairId"]
    sg = ec2.create_security_group(GroupName=uniq("tagged"), Description="t")["GroupId"]
    marker = uniq("Name")
    ec2.create_tags(Resources=[kp, sg], Tags=[{"Key": "Name", "Value": marker},
                                              {"Key": "role", "Value": " web "}])
    for i in range(4):
        ec2.create_tags(Resources=[kp], Tags=[{"Key": f"k{i}", "Value": str(i)}])
    keys = ec2.describe_key_pairs(Filters=[{"Name": "tag:Name", "Values": [marker]}])
    assert [k["KeyPairId"] for k in keys["KeyPairs"]] == [kp]
    assert {t["Key"]: t["Value"] for t in keys["KeyPairs"][0]["Tags"]}["role"] == " web "
    groups = ec2.describe_security_groups(Filters=[{"Name": "tag:Name", "Values": [marker]}])
    assert [g["GroupId"] for g in groups["SecurityGroups"]] == [sg]

    # DescribeTags over both resources, 5 at a time: every tag exactly once.
    want = {(kp, "key-pair", "Name", marker), (kp, "key-pair", "role", " web "),
            (sg, "security-group", "Name", marker), (sg, "security-group", "role", " web ")}
    want |= {(kp, "key-pair", f"k{i}", str(i)) for i in range(4)}
    filt = [{"Name": "resource-id", "Values": [kp, sg]}]
    seen, token, pages = [], None, 0
    while pages < 10:
        kw = {"Filters": filt, "MaxResults": 5}
        if token:
            kw["NextToken"] = token
        r = ec2.describe_tags(**kw)
        pages += 1
        assert len(r["Tags"]) <= 5
        seen += [(t["ResourceId"], t["ResourceType"], t["Key"], t["Value"]) for t in r["Tags"]]
        token = r.get("NextToken")
        if not token:
            break
    assert pages == 2 and len(seen) == len(want) == 8 and set(seen) == want
    # awscli v2 paginates by itself.
    out = json.loads(cloud.aws_ec2("describe-tags", "--filters",
                                   f"Name=resource-id,Values={kp}", "Name=key,Values=k*").stdout)
    assert sorted(t["Key"] for t in out["Tags"]) == ["k0", "k1", "k2", "k3"]

    # DeleteTags: a value given must match; no value deletes whatever it is.
    ec2.delete_tags(Resources=[kp], Tags=[{"Key": "Name", "Value": "not-it"},
                                          {"Key": "role"}])
    left = {t["Key"] for t in ec2.describe_tags(
        Filters=[{"Name": "resource-id", "Values": [kp]}])["Tags"]}
    assert left == {"Name", "k0", "k1", "k2", "k3"}
    assert code_of(ec2.create_tags, Resources=[kp],
                   Tags=[{"Key": "aws:x", "Value": "y"}]) == "InvalidParameterValue"
    assert code_of(ec2.create_tags, Resources=[kp],
                   Tags=[{"Key": f"t{i}", "Value": ""} for i in range(46)]) == "TagLimitExceeded"
    assert code_of(ec2.create_tags, Resources=["vol-0badc0de"],
                   Tags=[{"Key": "a", "Value": "b"}]) == "InvalidVolume.NotFound"


def test_another_account_sees_none_of_it(cloud):
    ec2 = cloud.ec2()
    name = uniq("mine")
    kp = ec2.create_key_pair(KeyName=name, KeyType="ed25519")["KeyPairId"]
    sg_name = uniq("mine")
    sg = ec2.create_security_group(GroupName=sg_name, Description="mine")["GroupId"]
    ec2.create_tags(Resources=[kp, sg], Tags=[{"Key": "owner", "Value": "me"}])

    _, other = other_account(cloud)
    assert code_of(other.describe_key_pairs, KeyNames=[name]) == "InvalidKeyPair.NotFound"
    assert code_of(other.describe_key_pairs, KeyPairIds=[kp]) == "InvalidKeyPair.NotFound"
    assert other.describe_key_pairs()["KeyPairs"] == []
    assert code_of(other.describe_security_groups, GroupIds=[sg]) == "InvalidGroup.NotFound"
    assert code_of(other.describe_security_groups, GroupNames=[sg_name]) == \
        "InvalidGroup.NotFound"
    assert [g["GroupName"] for g in other.describe_security_groups()["SecurityGroups"]] == \
        ["default"]
    assert other.describe_tags()["Tags"] == []
    assert code_of(other.create_tags, Resources=[kp],
                   Tags=[{"Key": "x", "Value": "y"}]) == "InvalidKeyPair.NotFound"
    assert code_of(other.delete_tags, Resources=[sg]) == "InvalidGroup.NotFound"
    assert code_of(other.delete_security_group, GroupId=sg) == "InvalidGroup.NotFound"
    assert code_of(other.authorize_security_group_ingress, GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]) == "InvalidGroup.NotFound"
    # Naming our group (with our account id) in its rule is refused exactly as
    # naming one that does not exist: nothing to probe, nothing pinned.
    me = ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]["OwnerId"]
    pinned = other.create_security_group(GroupName=uniq("pin"), Description="p")["GroupId"]
    answers = set()
    for pair in ({"GroupId": sg, "UserId": me}, {"GroupId": "sg-00000000", "UserId": me},
                 {"GroupName": sg_name, "UserId": me}, {"GroupName": "no-such", "UserId": me}):
        with pytest.raises(ClientError) as e:
            other.authorize_security_group_ingress(GroupId=pinned, IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 5, "ToPort": 5, "UserIdGroupPairs": [pair]}])
        answers.add((e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]))
    assert answers == {("InvalidParameterValue",
                        "source groups of another account are not supported yet")}, answers
    # The other account's DeleteKeyPair does not touch ours.
    other.delete_key_pair(KeyName=name)
    other.delete_key_pair(KeyPairId=kp)
    assert [k["KeyPairId"] for k in ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"]] == [kp]
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [kp, sg]}])["Tags"]
    assert {(t["ResourceId"], t["Key"], t["Value"]) for t in tags} == \
        {(kp, "owner", "me"), (sg, "owner", "me")}
    ec2.delete_security_group(GroupId=sg)


def test_tag_specifications_on_create(cloud):
    ec2 = cloud.ec2()
    marker = uniq("spec")
    kp = ec2.create_key_pair(KeyName=uniq("spec"), KeyType="ed25519", TagSpecifications=[
        {"ResourceType": "key-pair", "Tags": [{"Key": "Name", "Value": marker}]}])
    assert kp["Tags"] == [{"Key": "Name", "Value": marker}]
    sg = ec2.create_security_group(GroupName=uniq("spec"), Description="d", TagSpecifications=[
        {"ResourceType": "security-group", "Tags": [{"Key": "Name", "Value": marker}]}])
    tags = ec2.describe_tags(Filters=[{"Name": "value", "Values": [marker]}])["Tags"]
    assert {(t["ResourceId"], t["ResourceType"]) for t in tags} == \
        {(kp["KeyPairId"], "key-pair"), (sg["GroupId"], "security-group")}
    assert code_of(ec2.create_security_group, GroupName=uniq("spec"), Description="d",
                   TagSpecifications=[{"ResourceType": "volume", "Tags": [
                       {"Key": "a", "Value": "b"}]}]) == "InvalidParameterValue"
