"""Our own code for the instances: the project's wheel and its pinned dependencies, in a
private bucket of the cluster.

``up`` builds the wheel of this checkout (``pip wheel --no-deps``, from a copy of the tree so
the checkout stays clean), pins the runtime dependencies to the versions of the running venv
(``pip freeze`` filtered to the closure of hapair's declared dependencies), and uploads both
under ``artifacts/<digest>/`` of the cluster's bucket: private (public access blocked, objects
owned by the bucket owner), encrypted at rest (SSE-S3), tagged, TLS only, readable only by the
cluster's instance roles. The user data names the exact keys and the wheel's SHA-256.
``down`` deletes every object version and the bucket.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hapair.errors import CloudError, OperationError
from hapair.platforms.aws.client import TAG_CLUSTER, Aws, cluster_tags
from hapair.platforms.aws.iam import ARTIFACTS_PREFIX, Scope, bucket_policy

logger = logging.getLogger(__name__)

PROJECT = "hapair"
#: What a copy of the tree for building needs (nothing else is read by the build).
_BUILD_INPUTS = ("pyproject.toml", "README.md", "src")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".mypy_cache")


@dataclass(frozen=True)
class Bundle:
    """What the instances install: the wheel and the pinned requirements.

    :ivar wheel_name: the wheel's file name (``hapair-0.1.0-py3-none-any.whl``).
    :ivar wheel: its bytes.
    :ivar requirements: ``name==version`` lines of the runtime dependencies.
    """

    wheel_name: str
    wheel: bytes
    requirements: str

    @property
    def digest(self) -> str:
        """SHA-256 of the wheel and the requirements together (names the upload)."""
        h = hashlib.sha256(self.wheel)
        h.update(self.requirements.encode())
        return h.hexdigest()

    @property
    def wheel_sha256(self) -> str:
        """SHA-256 of the wheel alone (the instance checks it after download)."""
        return hashlib.sha256(self.wheel).hexdigest()

    @property
    def wheel_key(self) -> str:
        """The wheel's object key."""
        return f"{ARTIFACTS_PREFIX}{self.digest[:16]}/{self.wheel_name}"

    @property
    def requirements_key(self) -> str:
        """The requirements' object key."""
        return f"{ARTIFACTS_PREFIX}{self.digest[:16]}/requirements.txt"


BundleSource = Callable[[], Bundle]


def project_root() -> Path | None:
    """The checkout this hapair runs from (a directory with hapair's pyproject.toml above
    ``src/hapair``), or ``None`` when hapair is installed from a wheel."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        pyproject = parent / "pyproject.toml"
        if pyproject.is_file() and (parent / "src" / PROJECT).is_dir():
            if re.search(r'(?m)^name\s*=\s*"hapair"\s*$', pyproject.read_text()):
                return parent
            return None
    return None


def source_digest(root: Path) -> str:
    """SHA-256 of every build input of the tree at ``root`` (paths and contents)."""
    h = hashlib.sha256()
    for name in _BUILD_INPUTS:
        path = root / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            rel = f.relative_to(root).as_posix()
            if "__pycache__" in rel or rel.endswith(".pyc") or ".egg-info" in rel:
                continue
            h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _requirement_name(line: str) -> str | None:
    """The distribution a ``Requires-Dist`` line names, or ``None`` for an extra's."""
    if re.search(r"\bextra\s*==", line):
        return None
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return m.group(1) if m else None


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(
    root: str = PROJECT, requires: Callable[[str], Iterable[str] | None] | None = None
) -> set[str]:
    """Canonical names of every distribution ``root`` needs at run time (extras excluded),
    ``root`` itself not included.

    :param requires: name -> its ``Requires-Dist`` lines (default: the running environment's
        metadata; ``None`` for a distribution that is not installed).
    """
    lookup = requires or _installed_requires
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        for line in lookup(name) or ():
            dep = _requirement_name(line)
            if dep is not None and canonical(dep) not in seen:
                seen.add(canonical(dep))
                todo.append(dep)
    seen.discard(canonical(root))
    return seen


def _installed_requires(name: str) -> list[str] | None:
    try:
        return importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        return None


def pinned_requirements(freeze: str, wanted: set[str]) -> str:
    """The ``pip freeze`` lines of the distributions in ``wanted`` (canonical names), sorted;
    editable installs and comments are left out."""
    out = []
    for line in freeze.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-e", "--")) or "==" not in line:
            continue
        name = line.split("==", 1)[0]
        if canonical(name) in wanted:
            out.append(line)
    return "\n".join(sorted(out, key=str.lower)) + "\n"


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=600)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise OperationError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def build_bundle(root: Path, python: str = sys.executable) -> Bundle:
    """Build the wheel of the tree at ``root`` (from a copy: the checkout is left as it is)
    and pin the running environment's runtime dependencies.

    :raises OperationError: the build failed (its last lines are in the message).
    """
    with tempfile.TemporaryDirectory(prefix="hapair-wheel-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        for name in _BUILD_INPUTS:
            src = root / name
            if src.is_dir():
                shutil.copytree(src, tree / name, ignore=_IGNORED)
            elif src.is_file():
                shutil.copy2(src, tree / name)
        out = Path(tmp) / "dist"
        _run(
            [python, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(tree)],
            "building hapair's wheel (pip wheel --no-deps)",
        )
        wheels = sorted(out.glob(f"{PROJECT}-*.whl"))
        if len(wheels) != 1:
            raise OperationError(f"pip wheel made {len(wheels)} hapair wheels, expected one")
        freeze = _run([python, "-m", "pip", "freeze"], "pip freeze")
        return Bundle(
            wheels[0].name,
            wheels[0].read_bytes(),
            pinned_requirements(freeze, dependency_closure()),
        )


def cached_bundle(cache: Path | None = None) -> Bundle:
    """:func:`build_bundle` of this checkout, built once per source digest and kept in
    ``cache`` (default ``$XDG_CACHE_HOME/hapair/bundles`` or ``~/.cache/hapair/bundles``).

    :raises OperationError: hapair does not run from a checkout (set ``aws.pip_spec``), or
        the build failed.
    """
    root = project_root()
    if root is None:
        raise OperationError(
            "hapair does not run from a source checkout, so `up` cannot build its wheel: "
            "set aws.pip_spec to what the instances should `pip install`"
        )
    base = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = (base if cache else base / "hapair" / "bundles") / source_digest(root)[:16]
    meta = folder / "bundle.json"
    if meta.is_file():
        data = json.loads(meta.read_text())
        wheel = folder / data["wheel_name"]
        if wheel.is_file():
            return Bundle(data["wheel_name"], wheel.read_bytes(), data["requirements"])
    bundle = build_bundle(root)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / bundle.wheel_name).write_bytes(bundle.wheel)
    meta.write_text(
        json.dumps({"wheel_name": bundle.wheel_name, "requirements": bundle.requirements})
    )
    return bundle


# ---------------------------------------------------------------------------- the bucket
def bucket_name(cluster: str, account: str, region: str) -> str:
    """The cluster's bucket: unique per account and region, at most 63 characters."""
    return f"hapair-{cluster}-{account}-{region}"


def find_bucket(aws: Aws, name: str, cluster: str) -> dict[str, Any] | None:
    """``{"Name", "Tags"}`` of the cluster's bucket, ``None`` if it does not exist.

    :raises CloudError: it exists but is not this cluster's (code ``BucketNotOurs``).
    """
    head = aws.call(
        aws.s3.head_bucket,
        f"bucket {name}",
        ignore=("404", "NoSuchBucket", "NotFound"),
        Bucket=name,
    )
    if head is None:
        return None
    res = aws.call(
        aws.s3.get_bucket_tagging, f"bucket {name}", ignore=("NoSuchTagSet",), Bucket=name
    )
    tags = {t["Key"]: t["Value"] for t in (res["TagSet"] if res else [])}
    if tags.get(TAG_CLUSTER) != cluster:
        raise CloudError(
            f"bucket {name} exists but is not tagged {TAG_CLUSTER}={cluster}; remove it or "
            "choose another cluster name",
            "BucketNotOurs",
            f"bucket {name}",
        )
    return {"Name": name, "Tags": tags}


def ensure_bucket(aws: Aws, scope: Scope, reader_roles: list[str], exists: bool) -> None:
    """Create the bucket if missing and (re)apply what makes it private: public access
    blocked, bucket-owner-enforced ownership, SSE-S3 default encryption, tags, and the policy
    (TLS only, objects readable only by ``reader_roles``)."""
    s3, name = aws.s3, scope.bucket
    what = f"bucket {name}"
    if not exists:
        kwargs: dict[str, Any] = {"Bucket": name, "ObjectOwnership": "BucketOwnerEnforced"}
        if aws.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": aws.region}
        aws.call(s3.create_bucket, what, ignore=("BucketAlreadyOwnedByYou",), **kwargs)
    aws.must(
        s3.put_public_access_block,
        what,
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    aws.must(
        s3.put_bucket_encryption,
        what,
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    aws.must(
        s3.put_bucket_tagging,
        what,
        Bucket=name,
        Tagging={"TagSet": cluster_tags(scope.cluster, "artifacts")},
    )
    aws.must(
        s3.put_bucket_policy,
        what,
        retry=("MalformedPolicy",),  # a role made a moment ago may not be visible to S3 yet
        Bucket=name,
        Policy=json.dumps(bucket_policy(scope, reader_roles)),
    )


def put_object(aws: Aws, bucket: str, key: str, data: bytes, content_type: str) -> bool:
    """Upload ``data`` unless the object already holds exactly it (read before write: its
    listed ETag is the MD5 of its content under SSE-S3; the operator needs no GetObject).

    :returns: whether it was uploaded.
    """
    listed = aws.must(
        aws.s3.list_objects_v2, f"s3://{bucket}/{key}", Bucket=bucket, Prefix=key, MaxKeys=1
    )
    etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
    for obj in listed.get("Contents", []):
        if obj["Key"] == key and obj.get("ETag", "").strip('"') == etag:
            return False
    request = {
        "Bucket": bucket,
        "Key": key,
        "Body": data,
        "ContentType": content_type,
        "ServerSideEncryption": "AES256",
        "Metadata": {"sha256": hashlib.sha256(data).hexdigest()},
    }
    aws.must(aws.s3.put_object, f"s3://{bucket}/{key}", **request)
    return True


def upload_bundle(aws: Aws, bucket: str, bundle: Bundle) -> None:
    """Put the wheel and the requirements where the user data looks for them."""
    put_object(aws, bucket, bundle.wheel_key, bundle.wheel, "application/zip")
    put_object(aws, bucket, bundle.requirements_key, bundle.requirements.encode(), "text/plain")


def delete_bucket(aws: Aws, bucket: str) -> None:
    """Delete every object version and delete marker, then the bucket."""
    s3 = aws.s3
    gone = ("NoSuchBucket", "404")
    while True:
        res = aws.call(s3.list_object_versions, f"bucket {bucket}", ignore=gone, Bucket=bucket)
        if res is None:
            return
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in [*res.get("Versions", []), *res.get("DeleteMarkers", [])]
        ]
        if not doomed:
            break
        aws.must(
            s3.delete_objects,
            f"bucket {bucket}",
            Bucket=bucket,
            Delete={"Objects": doomed[:1000], "Quiet": True},
        )
    aws.call(s3.delete_bucket, f"bucket {bucket}", ignore=gone, Bucket=bucket)
