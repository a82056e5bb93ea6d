"""What each endpoint's form accepts, and a streaming check of a multipart body against it.

BentoML 1.4 parses an API's multipart form itself, and it is lenient in ways a counting service
cannot be: a text value where a file is expected is taken for a URL and fetched server-side, a
binary part under a text name is decoded as UTF-8 JSON (``UnicodeDecodeError``: a 500), parts it
does not know are read anyway. :class:`FormCheck` reads the same bytes with the parser BentoML
and Starlette use (python-multipart), part by part as they arrive, and keeps the first thing
wrong as an :class:`~ctcid.errors.InputRejected` naming the part. It stores nothing but the text
values (a few bytes), so a field upload is parsed once more, not copied.

Text parts are JSON to BentoML (its client sends ``json.dumps`` of each value) or, failing that,
the bare text. A sample named ``2024017`` sent with ``curl -F sample=2024017`` would reach the
API as a number and be refused; the check notes where such a value lies in the body
(:attr:`FormCheck.rewrites`) so the guard hands BentoML the same text as a JSON string.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ctcid.errors import InputRejected

BAD_REQUEST, TOO_LARGE = 400, 413
MAX_TEXT_BYTES = 64 * 1024  # a text field holds a name or a channel map, never more
MAX_PARTS = 1000  # Starlette's own default limit on files per form
_NO_FETCH = "the service reads uploaded files only and never fetches a URL"


@dataclass(frozen=True)
class FormSpec:
    """One endpoint's form: its file fields (and whether each takes several files), its text fields."""

    route: str
    files: Mapping[str, bool]  # file field -> takes several files
    texts: frozenset[str]
    required: frozenset[str]

    @classmethod
    def of_schema(cls, route: str, schema: Mapping[str, Any]) -> FormSpec:
        """From the JSON schema of a BentoML API's input model (``type: file`` marks an upload)."""
        files: dict[str, bool] = {}
        texts = set()
        for name, prop in schema.get("properties", {}).items():
            if prop.get("type") == "file":
                files[name] = False
            elif prop.get("type") == "array" and prop.get("items", {}).get("type") == "file":
                files[name] = True
            else:
                texts.add(name)
        return cls(route, files, frozenset(texts), frozenset(schema.get("required", ())))

    def accepted(self) -> str:
        """The form in a sentence, for hints: ``field (file, one or more), channel_map (text)``."""
        parts = [f"{name} (file{', one or more' if many else ''})" for name, many in self.files.items()]
        parts += [f"{name} (text)" for name in sorted(self.texts)]
        return ", ".join(parts)

    def example(self) -> str:
        """A curl line that sends the form's required parts."""
        args = [f"-F {name}=@<file>" for name in self.files if name in self.required]
        args += [f"-F {name}=<text>" for name in sorted(self.texts) if name in self.required]
        return f"curl {' '.join(args)} http://<host>{self.route}"


def form_specs(apis: Mapping[str, Any]) -> dict[str, FormSpec]:
    """Route -> form of every API of a BentoML service (``Service.apis``)."""
    return {
        api.route: FormSpec.of_schema(api.route, api.input_spec.model_json_schema()) for api in apis.values()
    }


def _preview(data: bytes, limit: int = 60) -> str:
    text = data[:limit].decode("utf-8", "replace")
    return repr(text + ("..." if len(data) > limit else ""))


class FormCheck:
    """Feed a multipart body with :meth:`feed`; :meth:`finish` raises the first problem found."""

    def __init__(self, spec: FormSpec, boundary: bytes, charset: str) -> None:
        self.spec, self.charset = spec, charset
        self.problem: InputRejected | None = None
        self.seen: dict[str, int] = {}
        self.parts = 0
        self.complete = False
        self.rewrites: list[tuple[int, int, bytes]] = []  # (start, end, new bytes) of text values
        self._chunk, self._offset, self._fed = b"", 0, 0
        self._span: list[int] = []  # where the current text value lies in the body
        self._header_name = self._header_value = b""
        self._disposition = b""
        self._part: str | None = None  # name of the text part being read (None: a file or nothing)
        self._text = bytearray()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        if self.problem is not None or not chunk:
            return  # the rest is read (so the client gets the answer) but not parsed
        self._chunk, self._offset = chunk, self._fed
        self._fed += len(chunk)
        try:
            self._parser.write(chunk)
        except MultipartParseError as error:
            self.problem = InputRejected(
                BAD_REQUEST,
                "request",
                f"is not a well-formed multipart/form-data body ({error})",
                "Let the HTTP client build the form (curl -F, requests' files=)",
            )
        except InputRejected as error:  # raised by a callback to stop at the first problem
            self.problem = error

    def finish(self) -> None:
        """Raise the first problem, or a missing part, or a body cut before its closing boundary."""
        if self.problem is not None:
            raise self.problem
        if not self.complete:
            raise InputRejected(
                BAD_REQUEST,
                "request",
                "the multipart body ends before its closing boundary (cut off, or not multipart)",
                "Send the whole form again; let the HTTP client build it (curl -F, requests' files=)",
            )
        missing = sorted(self.spec.required - set(self.seen))
        if missing:
            raise InputRejected(
                BAD_REQUEST,
                missing[0],
                "is missing from the form",
                f"{self.spec.route} takes {self.spec.accepted()}: {self.spec.example()}",
            )

    def _on_part_begin(self) -> None:
        self._disposition, self._part = b"", None
        self._text.clear()
        self._span = []
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise InputRejected(
                TOO_LARGE, "request", f"has more than {MAX_PARTS} parts", "Send fewer files per request"
            )

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        raw_name = options.get(b"name")
        if not raw_name:
            raise InputRejected(
                BAD_REQUEST,
                "request",
                "a part of the form has no name (Content-Disposition: form-data; name=...)",
                f"{self.spec.route} takes {self.spec.accepted()}",
            )
        name = raw_name.decode("utf-8", "replace")
        shown = name if name.isprintable() else ascii(name)  # a name is echoed in the answer and log
        is_file = b"filename" in options
        if name in self.spec.files:
            self._file_part(name, is_file)
        elif name in self.spec.texts:
            self._text_part(name, is_file)
        else:
            raise InputRejected(
                BAD_REQUEST,
                shown,
                f"is not a field of {self.spec.route}",
                f"{self.spec.route} takes {self.spec.accepted()}",
            )
        self.seen[name] = self.seen.get(name, 0) + 1

    def _file_part(self, name: str, is_file: bool) -> None:
        if not is_file:
            self._part = name  # its text is read, to quote it in the refusal
            return
        if self.seen.get(name) and not self.spec.files[name]:
            raise InputRejected(BAD_REQUEST, name, "holds more than one file", f"Send one file as {name}")

    def _text_part(self, name: str, is_file: bool) -> None:
        if is_file:
            raise InputRejected(
                BAD_REQUEST,
                name,
                "is a file upload; this field takes text",
                f"Send it as a text field: curl -F {name}=<text>",
            )
        if self.seen.get(name):
            raise InputRejected(BAD_REQUEST, name, "is sent more than once", f"Send {name} once")
        self._part = name

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part is None:
            return
        self._text += data[start:end]
        # the parser hands over the current chunk, or the tail of the previous one that looked
        # like the start of a boundary (its look-behind buffer), which ends where this chunk starts
        if data is self._chunk:
            at, to = self._offset + start, self._offset + end
        else:
            at, to = self._offset - (end - start), self._offset
        self._span = [min(self._span[0], at), max(self._span[1], to)] if self._span else [at, to]
        if len(self._text) > MAX_TEXT_BYTES:
            raise InputRejected(
                TOO_LARGE,
                self._part,
                f"is more than {MAX_TEXT_BYTES // 1024} KB of text",
                "A text field holds a name or a channel map; upload data as a file",
            )

    def _on_part_end(self) -> None:
        name = self._part
        if name is None:
            return
        data = bytes(self._text)
        if name in self.spec.files:
            raise InputRejected(
                BAD_REQUEST,
                name,
                f"is text ({_preview(data)}), not a file upload; {_NO_FETCH}",
                f"Upload the file itself: curl -F {name}=@<file> (the @ sends the file's bytes)",
            )
        self._check_text(name, data)

    def _check_text(self, name: str, data: bytes) -> None:
        try:
            text = data.decode(self.charset)
        except UnicodeDecodeError:
            raise InputRejected(
                BAD_REQUEST,
                name,
                f"is not {self.charset} text (binary data: {_preview(data)})",
                f"Send {name} as text; upload files under the file fields ({self.spec.accepted()})",
            ) from None
        # BentoML reads a text part as JSON when it parses as JSON, else as the bare text: 123 or
        # [1] would reach the text field as a number or a list, so they are handed on as JSON strings
        try:
            value = json.loads(text)
        except ValueError:
            return
        if not isinstance(value, str) and self._span:
            self.rewrites.append((self._span[0], self._span[1], json.dumps(text).encode("ascii")))

    def _on_end(self) -> None:
        self.complete = True


def form_charset(content_type_params: Mapping[bytes, bytes]) -> str | None:
    """The charset text parts are decoded with (UTF-8 unless the Content-Type names another).

    None for a charset Python does not know or that does not keep ASCII as ASCII (UTF-16): text
    values are re-encoded as ASCII JSON strings, which must read the same in the form's charset.
    """
    charset = content_type_params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        name = codecs.lookup(charset).name
        return name if "ascii text".encode(name) == b"ascii text" else None
    except (LookupError, ValueError, TypeError):  # unknown, or not a text codec ('hex', 'rot13')
        return None
