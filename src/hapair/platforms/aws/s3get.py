#!/usr/bin/env python3
"""Fetch one object from S3 with the instance role's credentials; Python's standard library only.

It runs before hapair is installed (cloud-init writes this very file onto each instance), so
it cannot use boto3: it reads the role's credentials from the instance metadata service
(IMDSv2), signs one GET with Signature Version 4, checks the SHA-256 when given one, and
retries while the network or the role is not ready yet.

Usage: ``python3 s3get.py REGION BUCKET KEY DEST [SHA256]``. Credentials from the environment
(``AWS_ACCESS_KEY_ID``...), ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (path-style) and
``AWS_CA_BUNDLE`` are honoured, as by the AWS CLI, for tests against a local endpoint.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import ssl
import sys
import time
import urllib.parse
import urllib.request

IMDS = "http://169.254.169.254"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _imds(path: str, token: str | None = None, method: str = "GET") -> str:
    headers = {"X-aws-ec2-metadata-token-ttl-seconds": "300"} if token is None else {}
    if token is not None:
        headers["X-aws-ec2-metadata-token"] = token
    req = urllib.request.Request(IMDS + path, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=2) as res:
        return str(res.read().decode())


def credentials() -> dict[str, str]:
    """The role's temporary credentials (IMDSv2), or the environment's."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return {
            "AccessKeyId": os.environ["AWS_ACCESS_KEY_ID"],
            "SecretAccessKey": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            "Token": os.environ.get("AWS_SESSION_TOKEN", ""),
        }
    token = _imds("/latest/api/token", method="PUT")
    role = _imds("/latest/meta-data/iam/security-credentials/", token).split()[0]
    data: dict[str, str] = json.loads(
        _imds(f"/latest/meta-data/iam/security-credentials/{role}", token)
    )
    return data


def object_url(region: str, bucket: str, key: str) -> str:
    """The object's URL: the regional virtual-hosted endpoint, or a local one (path style)."""
    local = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    quoted = urllib.parse.quote(key, safe="/-_.~")
    if local:
        return f"{local.rstrip('/')}/{bucket}/{quoted}"
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{bucket}.s3.{region}.{suffix}/{quoted}"


def sign(url: str, region: str, creds: dict[str, str], now: datetime.datetime) -> dict[str, str]:
    """The headers of a SigV4-signed ``GET url`` (service s3, empty payload) at ``now`` (UTC)."""
    parts = urllib.parse.urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {"host": parts.netloc, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    if creds.get("Token"):
        headers["x-amz-security-token"] = creds["Token"]
    names = sorted(headers)
    canonical = "\n".join(
        [
            "GET",
            parts.path or "/",
            parts.query,
            "".join(f"{n}:{headers[n]}\n" for n in names),
            ";".join(names),
            EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + creds["SecretAccessKey"]).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds['AccessKeyId']}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    del headers["host"]
    return headers


def fetch(region: str, bucket: str, key: str, sha256: str = "") -> bytes:
    """One signed GET of the object; checks its SHA-256 when ``sha256`` is given.

    :raises OSError: the request failed or the content is not the expected one.
    """
    url = object_url(region, bucket, key)
    headers = sign(url, region, credentials(), datetime.datetime.now(datetime.UTC))
    req = urllib.request.Request(url, headers=headers)
    tls = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
    with urllib.request.urlopen(req, timeout=30, context=tls) as res:
        data = bytes(res.read())
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise OSError(f"s3://{bucket}/{key}: SHA-256 mismatch")
    return data


def main(argv: list[str]) -> int:
    """``s3get.py REGION BUCKET KEY DEST [SHA256]``: retries for about ten minutes."""
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    region, bucket, key, dest = argv[:4]
    sha256 = argv[4] if len(argv) == 5 else ""
    attempts = int(os.environ.get("S3GET_ATTEMPTS", "60"))
    for attempt in range(1, attempts + 1):
        try:
            data = fetch(region, bucket, key, sha256)
        except (OSError, ValueError, KeyError) as exc:
            print(f"s3get: s3://{bucket}/{key}: {exc} (attempt {attempt})", file=sys.stderr)
            if attempt < attempts:
                time.sleep(min(10.0, 0.5 * 2**attempt))
            continue
        tmp = dest + ".part"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
