"""A catalog in an S3-compatible bucket (s3://bucket/prefix): conditional writes keep concurrent
publishers from losing an update, botocore's errors become one line that says what to do."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path

from vagabond import redaction
from vagabond.catalog.documents import METADATA, Conflict, parse_json
from vagabond.errors import PublishError, UsageError

AWS_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
log = logging.getLogger(__name__)  # --debug: every request to a bucket, by URL


class S3Store:
    """A catalog in an S3-compatible bucket (s3://bucket/prefix). Endpoint and credentials come from
    the usual AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), never from the command line."""

    def __init__(self, bucket: str, prefix: str, base_url: str | None, acl: str | None = None) -> None:
        if acl and acl not in S3_CANNED_ACLS:
            raise UsageError(f"--s3-acl {acl[:40]!r}: not a canned ACL", hint=f"use one of {', '.join(S3_CANNED_ACLS)}")
        try:
            import boto3  # only publishers to S3 pay for importing it (and need the s3 extra)
        except ImportError:
            raise UsageError("s3:// catalogs need boto3", hint="pip install 'vagabond-vm[s3]'") from None
        for name in AWS_SECRETS:  # whatever botocore or an error message repeats, the output does not
            redaction.register_secret(os.environ.get(name, ""))
        with _s3_errors(f"s3://{bucket}"):
            self.client = boto3.client("s3")
        # Vagrant downloads with plain HTTP GETs: the objects must be readable that way (a bucket
        # policy, a CDN in front, or a canned ACL such as public-read given here).
        self.acl = {"ACL": acl} if acl else {}
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        endpoint = self.client.meta.endpoint_url.rstrip("/")
        default = f"{endpoint}/{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.base_url = (base_url or default).rstrip("/")

    def _key(self, key: str) -> str:
        """The object key for ``key``, refused unless it lies under the catalog's prefix."""
        full = posixpath.normpath(f"{self.prefix}/{key}" if self.prefix else key)
        inside = full.startswith(f"{self.prefix}/") if self.prefix else not full.startswith(("..", "/"))
        if not inside or key.startswith("/") or ".." in key.split("/"):
            raise PublishError(f"refusing {key!r}: it points outside s3://{self.bucket}/{self.prefix}")
        return full

    def url(self, key: str) -> str:
        return f"{self.base_url}/{key}"

    def exists(self, key: str) -> bool:
        log.debug("s3: HEAD %s", self.url(key))
        try:
            with _s3_errors(self.url(key), missing_ok=True):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except _Missing:
            return False

    def put_file(self, key: str, source: Path, *, replace: bool = False) -> None:
        """Without replace, a conditional PUT (If-None-Match: *): an object that appeared meanwhile
        (a concurrent publish of the same version) is never overwritten."""
        log.debug("s3: PUT %s%s", self.url(key), "" if replace else " (If-None-Match: *)")
        with _s3_errors(self.url(key)):
            if replace:
                self.client.upload_file(
                    str(source),
                    self.bucket,
                    self._key(key),
                    ExtraArgs={"ContentType": "application/octet-stream", **self.acl},
                )
                return
            with source.open("rb") as body:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=body,
                    IfNoneMatch="*",
                    ContentType="application/octet-stream",
                    **self.acl,
                )

    def read_back(self, key: str) -> tuple[int, str]:
        log.debug("s3: GET %s (read back)", self.url(key))
        with _s3_errors(self.url(key)):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            digest, size = hashlib.sha256(), 0
            for block in body.iter_chunks(8 * 2**20):
                digest.update(block)
                size += len(block)
        return size, digest.hexdigest()

    def delete(self, key: str) -> None:
        log.debug("s3: DELETE %s", self.url(key))
        with _s3_errors(self.url(key)):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        yield  # no lock: put_metadata is a conditional write (If-Match / If-None-Match)

    def get_metadata(self) -> tuple[dict | None, str | None]:
        log.debug("s3: GET %s", self.url(METADATA))
        try:
            with _s3_errors(self.url(METADATA), missing_ok=True):
                obj = self.client.get_object(Bucket=self.bucket, Key=self._key(METADATA))
                raw = obj["Body"].read()
        except _Missing:
            return None, None
        return parse_json(raw, self.url(METADATA)), obj["ETag"]

    def put_metadata(self, data: dict, token: str | None) -> None:
        condition = {"IfMatch": token} if token else {"IfNoneMatch": "*"}
        log.debug("s3: PUT %s (%s)", self.url(METADATA), f"If-Match: {token}" if token else "If-None-Match: *")
        with _s3_errors(self.url(METADATA)):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(METADATA),
                ContentType="application/json",
                Body=(json.dumps(data, indent=2) + "\n").encode(),
                **condition,
                **self.acl,
            )


class _Missing(Exception):
    """An S3 object that does not exist (where that is an answer, not an error)."""


@contextlib.contextmanager
def _s3_errors(where: str, *, missing_ok: bool = False) -> Iterator[None]:
    """botocore's exceptions as one line that says what to do; conditional-write losses as Conflict."""
    try:
        yield
    except (PublishError, UsageError, Conflict, _Missing):
        raise
    except Exception as exc:  # botocore's classes: imported lazily with boto3
        kind = type(exc).__name__
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if missing_ok and code in ("404", "NoSuchKey", "NotFound"):
            raise _Missing from None
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
            raise Conflict from None
        if kind in ("NoCredentialsError", "PartialCredentialsError"):
            raise PublishError(
                f"{where}: no S3 credentials", hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        if code == "NoSuchBucket":
            raise PublishError(f"{where}: the bucket does not exist", hint="create it, or fix the s3:// URL") from None
        if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
            endpoint = os.environ.get("AWS_ENDPOINT_URL", "AWS's default endpoint")
            raise PublishError(
                f"{where}: cannot reach the S3 endpoint ({endpoint})", hint="check AWS_ENDPOINT_URL and the network"
            ) from None
        detail = " ".join(str(exc).split())[:200]
        raise PublishError(f"{where}: S3 said {code or kind}: {detail}") from None


# S3's canned ACLs: the only values --s3-acl takes.
S3_CANNED_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
)
