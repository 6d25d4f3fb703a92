"""The `euca` commands as euca2ools users run them: after `source eucarc` (the file is
parsed with conftest's parse_env_file and passed as the environment, the working
directory an empty temp dir, no --data), `euca-unbundle -m M -k KEY` without a
certificate, and startup failures reported as one line without a backtrace even
with RUST_BACKTRACE=1."""
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, euca_bin, free_port, parse_env_file

FIX = ROOT / "image-tools" / "tests" / "fixtures"
BUNDLE = FIX / "bundle-1MiB-parts"
INPUT_SHA256 = hashlib.sha256((FIX / "input" / "fixture.img").read_bytes()).hexdigest()
# Variables a sourced eucarc sets; none may leak in from the test's own environment.
EUCARC_PREFIXES = ("AWS_", "EC2_", "EUCA", "S3_")
# A tracing log line (`2026-…Z  INFO target: …`), as opposed to the error line.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s")


def sha256(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def base_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(EUCARC_PREFIXES)}
    env["RUST_BACKTRACE"] = "1"
    return env


def sourced(cloud):
    """The environment after `source <data>/credentials/eucarc`."""
    return {**base_env(), **parse_env_file(cloud.data / "credentials" / "eucarc")}


def run(args, env, cwd, timeout=120):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def ok(r):
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def assert_one_line_failure(r, *needles):
    """Exit code != 0 and the error is one line of stderr (tracing log lines and warnings
    aside), naming `needles`, with no backtrace."""
    assert r.returncode != 0, r.stdout + r.stderr
    assert "backtrace" not in r.stderr.lower(), r.stderr
    errors = [l for l in r.stderr.splitlines()
              if l.strip() and not LOG_LINE.match(l) and not l.startswith("warning: ")]
    assert len(errors) == 1, r.stderr
    for n in needles:
        assert n in errors[0], r.stderr
    return errors[0]


@pytest.fixture()
def empty_cwd(tmp_path):
    d = tmp_path / "cwd"
    d.mkdir()
    return d


# -- commands after `source eucarc` ----------------------------------------------------

def test_eucarc_names_the_cloud_dir(cloud):
    env = parse_env_file(cloud.data / "credentials" / "eucarc")
    cloud_dir = Path(env["EUCA_CLOUD_DIR"])
    assert cloud_dir == (cloud.data / "cloud").resolve()
    assert (cloud_dir / "system.json").is_file() and (cloud_dir / "cloud-pk.pem").is_file()


def test_volumes_and_snapshots_follow_a_sourced_eucarc(cloud, empty_cwd):
    env = sourced(cloud)
    vid = ok(run([euca_bin(), "volume", "create", "--size-gib", "1"], env, empty_cwd)).strip()
    assert re.fullmatch(r"vol-[0-9a-f]{8}", vid), vid
    assert vid in ok(run([euca_bin(), "volume", "list"], env, empty_cwd))
    sid = ok(run([euca_bin(), "snapshot", "create", vid, "--wait"], env, empty_cwd)).strip()
    assert re.fullmatch(r"snap-[0-9a-f]{8}", sid), sid
    listed = ok(run([euca_bin(), "snapshot", "list"], env, empty_cwd))
    assert re.search(rf"^{sid}\s+{vid}\s+completed\s", listed, re.M), listed
    ok(run([euca_bin(), "snapshot", "delete", sid], env, empty_cwd))
    ok(run([euca_bin(), "volume", "delete", vid], env, empty_cwd))
    assert vid not in ok(run([euca_bin(), "volume", "list"], env, empty_cwd))
    assert not (empty_cwd / "euca-data").exists()


def test_accounts_and_keys_follow_a_sourced_eucarc(cloud, empty_cwd):
    env = sourced(cloud)
    name = f"envacct{os.getpid()}"
    out = ok(run([euca_bin(), "account", "create", name], env, empty_cwd))
    created = dict(re.findall(r"^([A-Z_]+)=(\S+)$", out, re.M))
    assert created["ACCOUNT_NAME"] == name
    assert re.search(rf"^{name}\s+{created['ACCOUNT_ID']}\s+true\s", ok(
        run([euca_bin(), "account", "list"], env, empty_cwd)), re.M)
    keys = ok(run([euca_bin(), "key", "list", name], env, empty_cwd))
    assert created["AWS_ACCESS_KEY_ID"] in keys
    # The euca2ools names of the key variables work as well.
    env2 = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    assert set(env2) >= {"EC2_ACCESS_KEY", "EC2_SECRET_KEY"}
    env2.pop("AWS_ACCESS_KEY", None), env2.pop("AWS_SECRET_KEY", None)
    assert name in ok(run([euca_bin(), "account", "list"], env2, empty_cwd))


def test_an_older_eucarc_without_the_clc_url_says_what_to_do(cloud, empty_cwd):
    # A shell that sourced an eucarc written before accounts moved to the cloud
    # controller: S3_URL and the keys, no EUCA_CLC_URL.
    env = sourced(cloud)
    env.pop("EUCA_CLC_URL")
    r = run([euca_bin(), "account", "list"], env, empty_cwd)
    assert_one_line_failure(r, "EUCA_CLC_URL not set", "cloud controller", "source it again")


def test_data_flag_wins_over_the_environment(cloud, empty_cwd):
    env = sourced(cloud)
    dead = f"http://127.0.0.1:{free_port()}/"
    env.update(S3_URL=dead, EUCA_SC_URL=dead, EUCA_CLC_URL=dead)
    r = run([euca_bin(), "account", "list"], env, empty_cwd)
    assert_one_line_failure(r, dead.rstrip("/"))
    out = ok(run([euca_bin(), "account", "list", "--data", cloud.data], env, empty_cwd))
    assert "admin" in out
    ok(run([euca_bin(), "volume", "list", "--data", cloud.data], env, empty_cwd))


def test_without_eucarc_or_data_one_clear_line(empty_cwd):
    r = run([euca_bin(), "volume", "list"], base_env(), empty_cwd)
    assert_one_line_failure(r, "EUCA_SC_URL", "eucarc", "--data")


def test_image_install_follows_a_sourced_eucarc(cloud, empty_cwd, tmp_path):
    env = sourced(cloud)
    bucket = f"envimg{os.getpid()}"
    # The euca2ools fixture: signed and sealed with the fixture's own keys.
    ok(run([euca_bin(), "upload-bundle", "-b", bucket, "-m", BUNDLE / "fixture.img.manifest.xml"],
           env, empty_cwd))
    r = run([euca_bin(), "image", "install", f"{bucket}/fixture.img.manifest.xml",
             "-k", FIX / "keys" / "cloud-pk.pem", "-c", FIX / "keys" / "user-cert.pem"], env, empty_cwd)
    image_id = ok(r).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", image_id), r.stdout
    assert f"sha256 {INPUT_SHA256}" in r.stderr, r.stderr
    # A bundle made with the eucarc's keys installs with no flag at all: the cloud key
    # comes from EUCA_CLOUD_DIR, the signer's certificate from EC2_CERT.
    img = tmp_path / "disk.img"
    img.write_bytes(os.urandom(1 << 20) * 2)
    ok(run([euca_bin(), "bundle-image", "-i", img, "-d", tmp_path / "b"], env, empty_cwd))
    ok(run([euca_bin(), "upload-bundle", "-b", bucket, "-m", tmp_path / "b" / "disk.img.manifest.xml"],
           env, empty_cwd))
    r = run([euca_bin(), "image", "install", f"{bucket}/disk.img.manifest.xml"], env, empty_cwd)
    assert re.fullmatch(r"[0-9a-f]{64}", ok(r).strip()), r.stdout
    assert f"sha256 {sha256(img)}" in r.stderr, r.stderr
    assert list(empty_cwd.iterdir()) == []


# -- euca-unbundle as euca2ools users call it ---------------------------------------------

@pytest.fixture()
def unbundle_link(tmp_path):
    link = tmp_path / "euca-unbundle"
    link.symlink_to(euca_bin())
    return link


@pytest.fixture()
def bundle_dir(tmp_path):
    d = tmp_path / "bundle"
    shutil.copytree(BUNDLE, d)
    return d


def test_euca_unbundle_without_certificate_from_the_bundle_dir(unbundle_link, bundle_dir):
    r = run([unbundle_link, "-m", "fixture.img.manifest.xml", "-k", FIX / "keys" / "user-pk.pem"],
            base_env(), bundle_dir)
    assert r.returncode == 0, r.stderr
    assert "signature was not checked" in r.stderr, r.stderr
    assert sha256(bundle_dir / "fixture.img") == INPUT_SHA256


def test_euca_unbundle_checks_the_signature_with_ec2_cert(unbundle_link, bundle_dir, tmp_path):
    env = {**base_env(), "EC2_PRIVATE_KEY": str(FIX / "keys" / "cloud-pk.pem"),
           "EC2_CERT": str(FIX / "keys" / "user-cert.pem")}
    out = tmp_path / "out"
    r = run([unbundle_link, "-m", "fixture.img.manifest.xml", "-d", out, "--region", "admin@local"],
            env, bundle_dir)
    assert r.returncode == 0, r.stderr
    assert "not checked" not in r.stderr, r.stderr
    assert sha256(out / "fixture.img") == INPUT_SHA256
    # A certificate that did not sign the manifest: refused, nothing written.
    env["EC2_CERT"] = str(FIX / "keys" / "cloud-cert.pem")
    r = run([unbundle_link, "-m", "fixture.img.manifest.xml", "-d", tmp_path / "o2"], env, bundle_dir)
    assert_one_line_failure(r, "signature", "cloud-cert.pem")
    assert not (tmp_path / "o2" / "fixture.img").exists()
    # Same with -c.
    del env["EC2_CERT"]
    r = run([unbundle_link, "-m", "fixture.img.manifest.xml", "-c", FIX / "keys" / "cloud-cert.pem",
             "-d", tmp_path / "o3"], env, bundle_dir)
    assert_one_line_failure(r, "signature")
    assert not (tmp_path / "o3" / "fixture.img").exists()


def test_euca_unbundle_refuses_a_tampered_part_without_certificate(unbundle_link, bundle_dir, tmp_path):
    part = bundle_dir / "fixture.img.part.02"
    data = bytearray(part.read_bytes())
    data[4096] ^= 0x40
    part.write_bytes(bytes(data))
    out = tmp_path / "out"
    r = run([unbundle_link, "-m", "fixture.img.manifest.xml", "-k", FIX / "keys" / "user-pk.pem",
             "-d", out], base_env(), bundle_dir)
    assert_one_line_failure(r, "fixture.img.part.02", "digest")
    assert not (out / "fixture.img").exists()
    assert not list(out.glob("*")), list(out.iterdir())


def test_euca_unbundle_parts_default_to_the_current_directory(unbundle_link, bundle_dir, tmp_path):
    """-s defaults to `.` as in euca2ools: with the manifest elsewhere, the parts in the
    current directory are the ones read (here: tampered ones, so it must fail)."""
    manifest_dir = tmp_path / "m"
    manifest_dir.mkdir()
    # Parts beside the manifest are intact; those in the working directory are tampered.
    for p in bundle_dir.glob("fixture.img.*"):
        shutil.copy(p, manifest_dir)
    part = bundle_dir / "fixture.img.part.01"
    data = bytearray(part.read_bytes())
    data[0] ^= 1
    part.write_bytes(bytes(data))
    key = FIX / "keys" / "user-pk.pem"
    r = run([unbundle_link, "-m", manifest_dir / "fixture.img.manifest.xml", "-k", key,
             "-d", tmp_path / "o1"], base_env(), bundle_dir)
    assert_one_line_failure(r, "fixture.img.part.01")
    # -s names the directory explicitly.
    r = run([unbundle_link, "-m", manifest_dir / "fixture.img.manifest.xml", "-k", key,
             "-s", manifest_dir, "-d", tmp_path / "o2"], base_env(), bundle_dir)
    assert r.returncode == 0, r.stderr
    assert sha256(tmp_path / "o2" / "fixture.img") == INPUT_SHA256


# -- startup failures: one line, no backtrace -------------------------------------------

def up_args(data, walrus=None, sc=None):
    return [euca_bin(), "up", "--data", data,
            "--walrus-listen", f"127.0.0.1:{walrus or free_port()}",
            "--sc-listen", f"127.0.0.1:{sc or free_port()}",
            "--nbd-listen", f"127.0.0.1:{free_port()}",
            "--iscsi-listen", f"127.0.0.1:{free_port()}",
            "--cc-listen", f"127.0.0.1:{free_port()}",
            "--clc-listen", f"127.0.0.1:{free_port()}"]


@pytest.fixture()
def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_up_on_a_port_in_use_prints_one_line(busy_port, tmp_path):
    r = run(up_args(tmp_path / "data", walrus=busy_port), base_env(), tmp_path, timeout=60)
    line = assert_one_line_failure(r, f"127.0.0.1:{busy_port}", "in use")
    assert r.stderr.strip() == line, r.stderr
    r = run([euca_bin(), "walrus", "--data", tmp_path / "data", "--listen", f"127.0.0.1:{busy_port}"],
            base_env(), tmp_path, timeout=60)
    assert_one_line_failure(r, f"127.0.0.1:{busy_port}", "in use")
    r = run(up_args(tmp_path / "data", sc=busy_port), base_env(), tmp_path, timeout=60)
    assert_one_line_failure(r, f"127.0.0.1:{busy_port}", "in use")


def test_up_on_an_unreadable_data_dir_prints_one_line():
    tmp = Path(tempfile.mkdtemp(prefix="euca-unreadable-"))
    try:
        tmp.chmod(0o755)
        data = tmp / "data"
        data.mkdir(mode=0o000)
        data.chmod(0o000)
        args = up_args(data)
        if os.geteuid() == 0:
            # root reads anything: run as nobody, for whom the directory is unreadable.
            setpriv = shutil.which("setpriv")
            if not setpriv:
                pytest.skip("running as root without setpriv")
            args = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *args]
        r = run(args, base_env(), "/", timeout=60)
        line = assert_one_line_failure(r, str(data), "ermission denied")
        assert r.stderr.strip() == line, r.stderr
    finally:
        (tmp / "data").chmod(0o700)
        shutil.rmtree(tmp, ignore_errors=True)
