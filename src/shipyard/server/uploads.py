"""Tables sent to the server: a CSV or Parquet file in a multipart field or as the raw body.

The type is told by the file's name, else its media type, else Parquet's magic bytes;
anything else is refused with 415 before a parser sees it. A table that does not parse is a
400 that names the upload, never a temporary path. Bodies over ``max_body_bytes`` never get
here: ``BodySizeLimit`` answers 413 while they stream in.
"""

from __future__ import annotations

import hashlib
import tempfile
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Literal

import pandas as pd
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from shipyard.data import read_table
from shipyard.errors import InvalidInputError, UnsupportedMediaTypeError
from shipyard.files import write_whole

MULTIPART = "multipart/form-data"
CSV_TYPES = ("text/csv", "application/csv")
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet", "application/parquet")
TABLE_TYPES = (*CSV_TYPES, *PARQUET_TYPES)
SUFFIXES = {"csv": ".csv", "parquet": ".parquet"}
PARQUET_MAGIC = b"PAR1"
#: Text fields (a spec) are small; files are bounded by the body limit alone.
MAX_FIELD_BYTES = 1024 * 1024

TableKind = Literal["csv", "parquet"]


@dataclass(frozen=True)
class Upload:
    """One uploaded table, not yet parsed."""

    name: str
    """What the caller called it (the file name, else the field), for messages."""
    kind: TableKind
    content: bytes

    @property
    def sha256(self) -> str:
        """The SHA-256 of the bytes, as hex: the file's name once stored, and the dataset
        digest a run that trains on it records."""
        return hashlib.sha256(self.content).hexdigest()

    def read(self) -> pd.DataFrame:
        """The table; ``InvalidInputError`` (400) naming the upload if it does not parse or
        has no rows."""
        with tempfile.TemporaryDirectory(prefix="shipyard-upload-") as folder:
            path = Path(folder) / f"upload{SUFFIXES[self.kind]}"
            path.write_bytes(self.content)
            try:
                frame = read_table(path)
            except InvalidInputError as error:
                raise InvalidInputError(str(error).replace(str(path), self.name)) from error
        if frame.empty:
            raise InvalidInputError(f"{self.name} has no rows; send a table with a header and rows")
        return frame

    def path_in(self, folder: Path) -> Path:
        """Where ``store`` keeps it in ``folder``."""
        return folder / f"{self.sha256}{SUFFIXES[self.kind]}"

    def store(self, folder: Path) -> Path:
        """Keep the bytes as ``folder/<sha256>.<csv|parquet>`` (once: the same table sent
        again is the same file) and return that path."""
        path = self.path_in(folder)
        if not path.exists():
            write_whole(path, self.content, overwrite=False)
        return path


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower case, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def table_upload(content: bytes, *, name: str, filename: str | None, media: str) -> Upload:
    """An upload of a CSV or Parquet table; 400 if empty, 415 if it is neither."""
    shown = filename or name
    if not content:
        raise InvalidInputError(f"{shown} is empty; send a CSV or Parquet table")
    suffix = PurePath(filename or "").suffix.lower()
    kind: TableKind
    if suffix == ".csv" or (not suffix and media in CSV_TYPES):
        kind = "csv"
    elif suffix in (".parquet", ".pq") or (
        not suffix and (media in PARQUET_TYPES or content.startswith(PARQUET_MAGIC))
    ):
        kind = "parquet"
    else:
        raise UnsupportedMediaTypeError(
            f"{shown} ({media or 'no content type'}) is not a CSV or Parquet table; send a "
            ".csv or .parquet file, or say its type (text/csv or application/vnd.apache.parquet)"
        )
    return Upload(shown, kind, content)


def form_of(request: Request) -> AbstractAsyncContextManager[FormData]:
    """``async with form_of(request) as form``: the multipart form, its spooled files
    removed on leaving; a malformed one is a 400."""
    return request.form(max_files=4, max_fields=8, max_part_size=MAX_FIELD_BYTES)


async def form_table(form: FormData, field: str) -> Upload | None:
    """The table in multipart field ``field``, None if the form has no such field."""
    part = form.get(field)
    if part is None:
        return None
    if isinstance(part, UploadFile):
        content = await part.read()
        media = media_type(part.content_type)
        return table_upload(content, name=f"field {field!r}", filename=part.filename, media=media)
    raise InvalidInputError(
        f"multipart field {field!r} must be a file (curl -F '{field}=@table.csv'), not text"
    )


async def form_text(form: FormData, field: str) -> str | None:
    """The text of multipart field ``field`` (a text field or a UTF-8 file), None if absent."""
    part = form.get(field)
    if part is None:
        return None
    if isinstance(part, UploadFile):
        raw = await part.read()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidInputError(f"multipart field {field!r} is not UTF-8 text") from error
    return part


async def body_table(request: Request, *, field: str) -> Upload:
    """The table a request sends: multipart field ``field``, or the raw body typed
    ``text/csv`` or ``application/vnd.apache.parquet``; 415 for any other body."""
    media = media_type(request.headers.get("content-type"))
    if media == MULTIPART:
        async with form_of(request) as form:
            upload = await form_table(form, field)
            sent = ", ".join(repr(k) for k in form) or "none"
        if upload is None:
            raise InvalidInputError(
                f"no multipart field {field!r} (fields sent: {sent}); send the table as "
                f"-F '{field}=@table.csv'"
            )
        return upload
    if media not in TABLE_TYPES:
        raise UnsupportedMediaTypeError(
            f"content type {media or '(none)'!r} is not accepted here; send {MULTIPART} with a "
            f"field {field!r}, or the table itself as text/csv or application/vnd.apache.parquet"
        )
    return table_upload(await request.body(), name="the request body", filename=None, media=media)
