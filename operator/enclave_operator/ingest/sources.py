"""Sources: deterministic discovery and per-item fetch (DICOMweb, S3).

Why the care with errors: URLs, object keys and exception messages of these clients
carry study/series/instance UIDs or object names, which may identify patients. Errors
leave this module as :class:`FetchError` / :class:`SourceUnavailable` whose messages are
built from fixed words, HTTP status codes and exception *type names* only.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import pydicom
import requests
import urllib3
from dicomweb_client.api import DICOMwebClient
from minio.error import S3Error
from pydicom.dataset import Dataset

from .retry import Permanent, with_retries
from .s3client import s3_client
from .spec import DicomWebSpec, S3SourceSpec

# third-party loggers put UIDs (URLs) and object names into their messages: keep them quiet
for _name in ("dicomweb_client", "requests"):  # minio's and urllib3's: s3client
    logging.getLogger(_name).setLevel(logging.CRITICAL + 1)

TIMEOUT = (10.0, 120.0)
PAGE_SIZE = 1000
MAX_PAGES = 100_000
TAG_STUDY, TAG_SERIES, TAG_SOP = "0020000D", "0020000E", "00080018"


class SourceUnavailable(RuntimeError):
    """The source cannot be listed (unreachable, credentials refused): fatal for the shard."""


class FetchError(RuntimeError):
    """One item could not be fetched (message is generic, e.g. ``fetch failed: HTTP 503``)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class UnreadableError(FetchError):
    """The fetched bytes are not readable DICOM."""


@dataclass(frozen=True)
class Item:
    """One unit of work. ``stable_key`` holds original identifiers: hash it, never log or write it."""

    stable_key: str
    ref: tuple[str, ...]
    kind: str = "dicom"


class Source(Protocol):
    name: str

    def discover(self) -> list[Item]: ...

    def fetch(self, item: Item) -> Dataset: ...

    def fetch_bytes(self, item: Item) -> bytes: ...

    def close(self) -> None: ...


def _http_reason(exc: BaseException) -> str:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


def _permanent_status(exc: BaseException) -> int | None:
    """HTTP status of errors that retrying cannot fix: refused credentials, or a query the server rejects."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = int(exc.response.status_code)
        return status if status in (400, 401, 403) else None
    return None


def _value(ds: dict[str, Any], tag: str) -> str | None:
    try:
        v = ds[tag]["Value"][0]
    except (KeyError, IndexError, TypeError):
        return None
    return str(v).strip() if v else None


class DicomWebSource:
    """QIDO-RS studies -> series -> instances; WADO-RS instance retrieval (original transfer syntax)."""

    def __init__(self, spec: DicomWebSpec, username: str | None, password: str | None, retries: int,
                 page_size: int = PAGE_SIZE) -> None:  # fmt: skip
        self.spec = spec
        self.retries = retries
        self.page_size = page_size
        self.name = "dicomweb"
        self.session = requests.Session()
        if username is not None and password is not None:
            self.session.auth = (username, password)
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.client = DICOMwebClient(url=spec.url, session=self.session, timeout=TIMEOUT)

    def _qido(self, what: str, call: Any) -> list[dict[str, Any]]:
        def attempt() -> list[dict[str, Any]]:
            try:
                return list(call())
            except Exception as exc:  # noqa: BLE001 - mapped to a generic reason below
                status = _permanent_status(exc)
                if status is not None:
                    what_failed = f"{what} rejected" if status == 400 else "source refused the credentials"
                    raise Permanent(SourceUnavailable(f"{what_failed} (HTTP {status})")) from None
                raise SourceUnavailable(f"{what} failed: {_http_reason(exc)}") from None

        return with_retries(attempt, self.retries, retry_on=(SourceUnavailable,))

    def _paged(self, what: str, search: Any, tag: str, **kwargs: Any) -> set[str]:
        """All values of ``tag`` over QIDO pages (limit/offset), never silently fewer (issue 14.7).

        Not dicomweb-client's ``get_remaining``: it loops forever against servers that ignore
        ``offset``. Paging stops at an empty page or at a page that adds nothing new. A short page
        does not stop it: servers may cap a page below ``limit`` (PS3.18 6.7.1.2, with a Warning
        header the client hides).

        Servers that page wrongly end the pages early: Orthanc 1.10 applies ``offset`` only inside the
        ``limit`` window for some filters (``ModalitiesInStudy``: ``limit=2&offset=2`` is empty with
        three matches), others ignore ``offset``. So when a page came back full, one more query for
        one result more than found (``offset=0``) confirms the listing; if it shows anything new, the
        listing continues with growing ``limit`` from ``offset=0`` (no offset needed), and fails
        clearly if the server will not return more.
        """
        def values(limit: int, offset: int) -> tuple[int, set[str]]:
            page = self._qido(what, lambda: search(limit=limit, offset=offset, **kwargs))
            return len(page), {u for r in page if (u := _value(r, tag))}

        found: set[str] = set()
        offset, full, count = 0, False, 0
        for _ in range(MAX_PAGES):
            count, page = values(self.page_size, offset)
            full = full or count >= self.page_size
            new = page - found
            found |= new
            if not count or not new:
                break
            offset += count
        else:
            raise SourceUnavailable(f"{what} failed: more than {MAX_PAGES} pages")
        if not full:
            return found
        repeated = count > 0  # the last page was not empty and added nothing: offset is ignored
        limit = len(found) + 1
        for attempt in range(MAX_PAGES):  # whole prefixes from offset 0, each one page longer than what is known
            # (a server that caps answers silently, with no Warning header, is indistinguishable from a complete one)
            count, page = values(limit, 0)
            if not page - found:
                if count >= limit or (repeated and attempt == 0 and count == self.page_size):
                    raise SourceUnavailable(
                        f"{what} incomplete: the source ignores the QIDO offset and returns at most {count} "
                        "results; narrow spec.source.dicomweb.query or list spec.source.dicomweb.studies"
                    )
                return found  # fewer than asked for and nothing new: that is all the source holds
            found |= page
            if count < limit:
                return found
            limit = len(found) + self.page_size
        raise SourceUnavailable(f"{what} failed: more than {MAX_PAGES} pages")

    @staticmethod
    def study_filters(query: dict[str, str]) -> dict[str, str]:
        """QIDO-RS study-level filters. ``Modality`` is a series attribute: at study level it means
        ``ModalitiesInStudy`` (Orthanc silently matches nothing for ``/studies?Modality=CT``)."""
        out = dict(query)
        if "Modality" in out and "ModalitiesInStudy" not in out:
            out["ModalitiesInStudy"] = out.pop("Modality")
        return out

    def discover(self) -> list[Item]:
        spec = self.spec
        if spec.query or spec.studies is None:
            filters = self.study_filters(spec.query)
            studies = self._paged(
                "study search", self.client.search_for_studies, TAG_STUDY, search_filters=filters, fields=[TAG_STUDY]
            )
            if spec.studies is not None:
                studies &= set(spec.studies)
        else:
            studies = set(spec.studies)
        items: dict[str, Item] = {}
        for study in sorted(studies):
            all_series = self._paged(
                "series search", self.client.search_for_series, TAG_SERIES, study_instance_uid=study
            )
            for series in sorted(all_series):
                sops = self._paged(
                    "instance search",
                    self.client.search_for_instances,
                    TAG_SOP,
                    study_instance_uid=study,
                    series_instance_uid=series,
                )
                for sop in sops:
                    key = f"{study}/{series}/{sop}"
                    items[key] = Item(key, (study, series, sop))
        return [items[k] for k in sorted(items)]

    def fetch(self, item: Item) -> Dataset:
        study, series, sop = item.ref
        try:
            return self.client.retrieve_instance(study, series, sop)
        except requests.HTTPError as exc:
            permanent = exc.response is not None and exc.response.status_code in (401, 403, 404)
            raise FetchError(f"fetch failed: {_http_reason(exc)}", permanent=permanent) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise FetchError(f"fetch failed: {type(exc).__name__}") from None
        except Exception as exc:  # noqa: BLE001 - multipart/DICOM decoding failed
            raise UnreadableError(f"unreadable DICOM ({type(exc).__name__})") from None

    def fetch_bytes(self, item: Item) -> bytes:  # pragma: no cover - DICOMweb items are datasets
        raise NotImplementedError

    def close(self) -> None:
        self.session.close()


def _s3_reason(exc: BaseException) -> str:
    if isinstance(exc, S3Error):
        return f"S3 {exc.code}"
    return type(exc).__name__


class S3Source:
    """Objects under ``bucket/prefix`` (recursive); the object name is the stable key."""

    def __init__(self, spec: S3SourceSpec, username: str | None, password: str | None, retries: int) -> None:
        self.spec = spec
        self.retries = retries
        self.name = f"s3-{spec.format}"
        self.client = s3_client(spec.endpoint, username, password, spec.secure, spec.region or "us-east-1")

    def discover(self) -> list[Item]:
        def attempt() -> list[str]:
            try:
                return [
                    o.object_name
                    for o in self.client.list_objects(self.spec.bucket, prefix=self.spec.prefix, recursive=True)
                    if o.object_name and not o.object_name.endswith("/") and not o.is_dir
                ]
            except S3Error as exc:
                if exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"):
                    raise Permanent(SourceUnavailable(f"source listing refused ({_s3_reason(exc)})")) from None
                raise SourceUnavailable(f"source listing failed: {_s3_reason(exc)}") from None
            except Exception as exc:  # noqa: BLE001
                raise SourceUnavailable(f"source listing failed: {_s3_reason(exc)}") from None

        names = with_retries(attempt, self.retries, retry_on=(SourceUnavailable,))
        return [Item(n, (n,), self.spec.format) for n in sorted(set(names))]

    def fetch_bytes(self, item: Item) -> bytes:
        try:
            resp = self.client.get_object(self.spec.bucket, item.ref[0])
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()
        except S3Error as exc:
            permanent = exc.code in ("AccessDenied", "NoSuchKey")
            raise FetchError(f"fetch failed: {_s3_reason(exc)}", permanent=permanent) from None
        except Exception as exc:  # noqa: BLE001
            raise FetchError(f"fetch failed: {_s3_reason(exc)}") from None

    def fetch(self, item: Item) -> Dataset:
        data = self.fetch_bytes(item)
        try:
            return pydicom.dcmread(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001
            raise UnreadableError(f"unreadable DICOM ({type(exc).__name__})", permanent=True) from None

    def close(self) -> None:
        pass


def make_source(
    spec: DicomWebSpec | S3SourceSpec, username: str | None, password: str | None, retries: int
) -> DicomWebSource | S3Source:
    if isinstance(spec, DicomWebSpec):
        return DicomWebSource(spec, username, password, retries)
    return S3Source(spec, username, password, retries)
