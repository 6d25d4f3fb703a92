"""The SC API's query parameters, through a SigV4-signed call as the cloud
controller makes it: values are percent-decoded by the shared S3 query rules, and
a parameter given twice is refused with the API's 400 JSON error (not silently
resolved to one of the values)."""
import json
import urllib.error
import urllib.request


def call(cloud, method, path_and_query):
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    url = cloud.sc_url + path_and_query
    req = botocore.awsrequest.AWSRequest(method=method, url=url)
    creds = botocore.credentials.Credentials(cloud.access_key, cloud.secret_key)
    botocore.auth.SigV4Auth(creds, "sc", cloud.region).add_auth(req)
    r = urllib.request.Request(url, method=method, headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_repeated_parameter_is_refused_and_creates_nothing(cloud):
    status, before = call(cloud, "GET", "/volumes")
    assert status == 200
    status, body = call(cloud, "POST", "/volumes?size_gib=1&size_gib=2")
    assert status == 400, body
    assert body["error"]["code"] == "InvalidParameterValue"
    assert "size_gib" in body["error"]["message"]
    status, after = call(cloud, "GET", "/volumes")
    assert status == 200 and len(after) == len(before)


def test_parameter_values_are_percent_decoded(cloud):
    status, v = call(cloud, "POST", "/volumes?size_gib=1")
    assert status == 200, v
    vid = v["id"]
    try:
        # `::1` as an AWS signer encodes it: the SC must see the decoded address.
        status, body = call(cloud, "POST", f"/volumes/{vid}/attach?node=%3A%3A1")
        assert status == 200, body
        assert body["volume"]["attachment"]["node"] == "::1", body
        status, body = call(cloud, "POST", f"/volumes/{vid}/detach")
        assert status == 200, body
    finally:
        call(cloud, "DELETE", f"/volumes/{vid}")
