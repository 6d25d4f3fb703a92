"""EC2 helpers shared by the instance tests: bundling a file into an image the
cloud installs (euca bundle-image + upload-bundle + RegisterImage), polling for a
state (`poll_until`) and for a line on an instance's console (`wait_console`)."""
import os
import re
import subprocess
import time
from pathlib import Path

from conftest import euca_bin

_n = [0]


def unique(prefix):
    _n[0] += 1
    return f"{prefix}-{os.getpid()}-{_n[0]}"


def bundle_file(cloud, tmp_path, bucket, path, *extra):
    """Bundles the file at `path` and uploads it to `bucket`; returns the
    ImageLocation."""
    env = {**os.environ, **cloud.eucarc}
    env.pop("AWS_CA_BUNDLE", None)
    name = unique("tg")
    img = Path(tmp_path) / name
    img.write_bytes(Path(path).read_bytes())
    out = Path(tmp_path) / f"{name}.bundle"
    r = subprocess.run([euca_bin(), "bundle-image", "-i", str(img), "-d", str(out), *extra],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    manifest = out / f"{name}.manifest.xml"
    r = subprocess.run([euca_bin(), "upload-bundle", "-b", bucket, "-m", str(manifest)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return f"{bucket}/{name}.manifest.xml"


def wait_image(ec2, image_id):
    ec2.get_waiter("image_available").wait(ImageIds=[image_id],
                                           WaiterConfig={"Delay": 1, "MaxAttempts": 300})


def register_plain_image(cloud, tmp_path, size=1 << 20):
    """A small machine image without kernel (whole-disk boot), installed and
    available; for nodes that do not boot it (simulated ones)."""
    s3 = cloud.boto3("s3")
    bucket = unique("plain-images")
    s3.create_bucket(Bucket=bucket)
    disk = Path(tmp_path) / unique("plain.raw")
    disk.write_bytes(b"\0" * size)
    ec2 = cloud.ec2()
    emi = ec2.register_image(ImageLocation=bundle_file(cloud, tmp_path, bucket, disk),
                             Name=unique("plain"))["ImageId"]
    wait_image(ec2, emi)
    return emi


ROOT = Path(__file__).resolve().parent.parent
# The tiny guest (tools/vm/build-tiny-guest.sh; scripts/test.sh builds it there).
GUEST = Path(os.environ.get("EUCA_GUEST_DIR", ROOT / "target" / "guest"))


def register_guest_image(cloud, tmp_path, root=None):
    """(emi, eki, eri) of the tiny guest: its kernel and initramfs as kernel and
    ramdisk images, a small raw disk (4 MiB of zeros, or the bytes `root`) as the
    machine image (the guest runs from its initramfs and leaves the disk alone)."""
    s3 = cloud.boto3("s3")
    bucket = unique("guest-images")
    s3.create_bucket(Bucket=bucket)
    ec2 = cloud.ec2()
    kernel = GUEST / "vmlinux" if (GUEST / "vmlinux").exists() else GUEST / "vmlinuz"
    eki = ec2.register_image(
        ImageLocation=bundle_file(cloud, tmp_path, bucket, kernel, "--kernel", "true"),
        Name=unique("tg-kernel"))["ImageId"]
    eri = ec2.register_image(
        ImageLocation=bundle_file(cloud, tmp_path, bucket, GUEST / "initramfs.gz",
                                  "--ramdisk", "true"),
        Name=unique("tg-ramdisk"))["ImageId"]
    disk = Path(tmp_path) / unique("root.raw")
    disk.write_bytes(b"\0" * (4 << 20) if root is None else root)
    emi = ec2.register_image(ImageLocation=bundle_file(cloud, tmp_path, bucket, disk),
                             Name=unique("tg-root"), KernelId=eki, RamdiskId=eri)["ImageId"]
    for i in (eki, eri, emi):
        wait_image(ec2, i)
    return emi, eki, eri


def console(ec2, instance_id):
    """The console output as text (boto3 may or may not have decoded it)."""
    import base64
    out = ec2.get_console_output(InstanceId=instance_id).get("Output") or ""
    try:
        decoded = base64.b64decode(out, validate=True).decode("utf-8", "replace")
        if "TG-" in decoded or not out:
            return decoded
    except Exception:
        pass
    return out


def poll_until(what, check, timeout=60, interval=0.3, detail=None):
    """Calls `check` every `interval` seconds until it returns something true and
    returns that; after `timeout` seconds fails saying `what` it waited for, with
    `detail()` (or the last value) so the failure shows how far things got. Polls
    are cheap local calls: a short interval costs little and a state change is
    seen within it."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    more = detail() if detail is not None else f"last: {last!r}"
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; {more}")


def wait_console(ec2, instance_id, pattern, timeout=120, after=0, logs=None):
    """Waits until `pattern` matches the console from character `after` on and
    returns the match; its positions are offsets in the whole console, so
    `m.end()` is the `after` of a wait for what comes next. On timeout the
    failure shows the console's tail and, when given, `logs()` (e.g. the node's)."""
    rx = re.compile(pattern)
    text = [""]

    def seen():
        text[0] = console(ec2, instance_id)
        return rx.search(text[0], after)

    def detail():
        return f"the console:\n{text[0][-4000:]}" + (f"\n{logs()}" if logs else "")

    return poll_until(f"{pattern!r} in the console of {instance_id}", seen, timeout,
                      interval=0.5, detail=detail)
