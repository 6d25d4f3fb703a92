"""The cloud controller's EC2 Query API basics with real clients: discovery
(regions, zones, instance types) through boto3, awscli v2 (--endpoint-url) and
awscli v1 through the `euca` profile alone; the client setups `euca up` writes;
the request forms (POST body, GET query, the three paths) and errors (unknown
action, wrong secret); and every Describe surviving `kill -9` unchanged."""
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError


def signed(cloud, params, method="POST", path="/", secret=None, region=None):
    """Sends an EC2 Query request signed (SigV4, service ec2) with the admin's key;
    returns (status, body text)."""
    body = urllib.parse.urlencode(params)
    url = cloud.clc_url + path
    if method == "GET":
        url, data, headers = url + "?" + body, None, {}
    else:
        data = body.encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    req = AWSRequest(method=method, url=url, data=data, headers=headers)
    SigV4Auth(Credentials(cloud.access_key, secret or cloud.secret_key), "ec2",
              region or cloud.region).add_auth(req)
    r = urllib.request.Request(url, data=data, method=method, headers=dict(req.headers))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def code_of(body):
    m = re.search(r"<Code>([^<]*)</Code>", body)
    return m.group(1) if m else None


def test_eucarc_and_aws_config_name_the_ec2_endpoint(cloud):
    rc = cloud.eucarc
    assert rc["EC2_URL"] == cloud.clc_url + "/"
    assert rc["AWS_ENDPOINT_URL_EC2"] == cloud.clc_url + "/"
    assert rc["AWS_AUTH_REGION"] == rc["AWS_DEFAULT_REGION"] == cloud.region
    assert rc["AWS_ENDPOINT_URL_S3"] == rc["S3_URL"] == cloud.endpoint + "/"
    text = cloud.aws_config.read_text()
    assert "[services euca-services]\nec2 =\n    endpoint_url = " + cloud.clc_url + "/\n" in text
    assert "s3 =\n    endpoint_url = " + cloud.endpoint + "/\n" in text


def test_boto3_discovery(cloud):
    ec2 = cloud.ec2()
    regions = ec2.describe_regions()["Regions"]
    assert regions == [{"RegionName": cloud.region, "Endpoint": cloud.clc_url + "/",
                        "OptInStatus": "opt-in-not-required"}]
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert len(zones) == 1
    z = zones[0]
    assert (z["ZoneName"], z["State"], z["RegionName"], z["Messages"]) == \
        (cloud.region + "a", "available", cloud.region, [])
    assert ec2.describe_availability_zones(
        Filters=[{"Name": "state", "Values": ["impaired"]}])["AvailabilityZones"] == []
    types = ec2.describe_instance_types(InstanceTypes=["m1.small", "c1.medium"])["InstanceTypes"]
    got = {t["InstanceType"]: (t["VCpuInfo"]["DefaultVCpus"], t["MemoryInfo"]["SizeInMiB"],
                               t["InstanceStorageInfo"]["TotalSizeInGB"]) for t in types}
    assert got == {"m1.small": (1, 256, 5), "c1.medium": (2, 512, 10)}
    with pytest.raises(ClientError) as e:
        ec2.describe_instance_types(InstanceTypes=["m9.enormous"])
    assert e.value.response["Error"]["Code"] == "InvalidInstanceType"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # boto3's paginator walks every type once.
    pages = ec2.get_paginator("describe_instance_types").paginate(
        PaginationConfig={"PageSize": 5})
    names = [t["InstanceType"] for p in pages for t in p["InstanceTypes"]]
    assert len(names) == len(set(names)) == 18


def test_verbose_zones_carry_capacity_lines(cloud):
    zones = cloud.ec2().describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
    assert zones[0]["ZoneName"] == cloud.region + "a"
    assert (zones[1]["ZoneName"], zones[1]["State"]) == ("|- vm types", "free / max   cpu   ram  disk")
    small = next(z for z in zones if z["ZoneName"] == "|- m1.small")
    assert re.fullmatch(r"\d{4} / \d{4}   1    256     5", small["State"]), small
    assert all(z["Messages"] == [] for z in zones)


def test_awscli_v2_with_endpoint_url(cloud):
    r = cloud.aws_ec2("describe-availability-zones")
    assert json.loads(r.stdout)["AvailabilityZones"][0]["ZoneName"] == cloud.region + "a"
    r = cloud.aws_ec2("describe-instance-types", "--instance-types", "m1.large")
    t = json.loads(r.stdout)["InstanceTypes"][0]
    assert (t["InstanceType"], t["VCpuInfo"]["DefaultVCpus"], t["MemoryInfo"]["SizeInMiB"]) == \
        ("m1.large", 2, 512)
    r = cloud.aws_ec2("describe-instance-types", "--instance-types", "x9.none", check=False)
    assert r.returncode != 0 and "InvalidInstanceType" in r.stderr


def test_awscli_v1_reaches_ec2_and_s3_through_the_profile_alone(cloud):
    """No --endpoint-url: the `euca` profile's services section routes each."""
    env = cloud.client_env()
    r = subprocess.run([sys.executable, "-m", "awscli", "--output", "json", "ec2",
                        "describe-regions"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Regions"][0]["Endpoint"] == cloud.clc_url + "/"
    r = subprocess.run([sys.executable, "-m", "awscli", "s3api", "list-buckets"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "Buckets" in json.loads(r.stdout)


def test_boto3_session_profile_reaches_ec2_and_s3(cloud, monkeypatch):
    import boto3
    monkeypatch.setenv("AWS_CONFIG_FILE", str(cloud.aws_config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(cloud.aws_credentials))
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
              "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    s = boto3.Session(profile_name="euca")
    assert s.client("ec2").describe_regions()["Regions"][0]["RegionName"] == cloud.region
    assert "Buckets" in s.client("s3").list_buckets()


def test_request_forms_and_paths(cloud):
    for path in ("/", "/services/compute", "/services/Eucalyptus"):
        for method in ("POST", "GET"):
            st, body = signed(cloud, {"Action": "DescribeRegions", "Version": "2016-11-15"},
                              method=method, path=path)
            assert st == 200, (path, method, body)
            assert "<DescribeRegionsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">" \
                in body and "<requestId>" in body
    # euca2ools signs with region undefined-<pid>: the key comes from the scope.
    st, body = signed(cloud, {"Action": "DescribeAvailabilityZones", "Version": "2015-10-01"},
                      path="/services/compute", region="undefined-4242")
    assert st == 200, body
    assert "doc/2015-10-01/" in body


def test_unknown_action_is_invalid_action_with_request_id(cloud):
    st, body = signed(cloud, {"Action": "LaunchTheRockets", "Version": "2016-11-15"})
    assert st == 400, body
    assert code_of(body) == "InvalidAction"
    assert re.search(r"<RequestID>[0-9A-F]+</RequestID>", body), body
    st, body = signed(cloud, {"Version": "2016-11-15"})
    assert (st, code_of(body)) == (400, "MissingParameter"), body


def test_dry_run_is_refused_and_does_nothing(cloud):
    """`--dry-run` must never perform the action it was meant to check."""
    ec2 = cloud.ec2()
    name = f"dry-{time.time_ns()}"
    with pytest.raises(ClientError) as e:
        ec2.create_key_pair(KeyName=name, DryRun=True)
    assert e.value.response["Error"]["Code"] == "UnsupportedOperation"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as e:
        ec2.describe_key_pairs(KeyNames=[name])
    assert e.value.response["Error"]["Code"] == "InvalidKeyPair.NotFound"


def test_wrong_secret_is_auth_failure(cloud):
    ec2 = cloud.ec2(secret_key="not-the-secret-" + "x" * 25)
    with pytest.raises(ClientError) as e:
        ec2.describe_regions()
    assert e.value.response["Error"]["Code"] == "AuthFailure"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    st, body = signed(cloud, {"Action": "DescribeRegions"}, secret="wrong" * 8)
    assert (st, code_of(body)) == (403, "AuthFailure"), body
    assert "<RequestID>" in body


# Every Describe action; those that answer 200 on this build are compared.
DESCRIBES = ["DescribeRegions", "DescribeAvailabilityZones", "DescribeInstanceTypes",
             "DescribeKeyPairs", "DescribeSecurityGroups", "DescribeImages",
             "DescribeVolumes", "DescribeSnapshots", "DescribeTags"]

# Things to create first, where the action exists on this build (InvalidAction: skipped).
CREATES = [
    {"Action": "CreateKeyPair", "KeyName": "durable-key"},
    {"Action": "CreateSecurityGroup", "GroupName": "durable", "GroupDescription": "kept"},
]


def describe_all(cloud):
    out = {}
    for action in DESCRIBES:
        for params in ({"Action": action}, {"Action": action, "ZoneName.1": "verbose"}
                       if action == "DescribeAvailabilityZones" else None):
            if params is None:
                continue
            params = {**params, "Version": "2016-11-15"}
            if action in ("DescribeImages", "DescribeSnapshots"):
                params["Owner.1"] = "self"
            st, body = signed(cloud, params)
            if st == 200:
                out[json.dumps(params, sort_keys=True)] = re.sub(
                    r"<requestId>[^<]*</requestId>", "", body)
            else:
                assert code_of(body) == "InvalidAction", (params, st, body)
    return out


def test_describe_output_survives_kill_9(fresh_cloud):
    cloud = fresh_cloud
    for params in CREATES:
        st, body = signed(cloud, {**params, "Version": "2016-11-15"})
        assert st == 200 or code_of(body) == "InvalidAction", (params, body)
    st, body = signed(cloud, {"Action": "CreateVolume", "Version": "2016-11-15", "Size": "1",
                              "AvailabilityZone": cloud.region + "a"})
    assert st == 200 or code_of(body) == "InvalidAction", body
    # Let what was created settle (a volume goes from creating to available).
    before = describe_all(cloud)
    for _ in range(30):
        time.sleep(1)
        again = describe_all(cloud)
        if again == before:
            break
        before = again
    assert len(before) >= 4, before.keys()
    cloud.kill9()
    cloud.start()
    # The zones' capacity lines come from the CC's view of its nodes, rebuilt by
    # its first polls after the restart.
    for _ in range(50):
        after = describe_all(cloud)
        if after == before:
            break
        time.sleep(0.2)
    assert after.keys() == before.keys()
    for k in before:
        assert after[k] == before[k], k
