"""Open Inference Protocol (KServe V2) tensors: JSON and the binary tensor extension.

An input of datatype ``BYTES`` (an image model's images) holds one byte string per element:
in JSON a string each (base64 for binary data such as images), in binary the elements one
after another, each prefixed by its length (4 bytes, little-endian); it decodes to an object
array of ``str`` (JSON) or ``bytes`` (binary).

A request body is JSON, or — with the ``Inference-Header-Content-Length: N`` header — N bytes
of JSON followed by the raw bytes of every input whose ``parameters.binary_data_size`` says
how many are its own, in input order. Responses use the same layout for outputs the client
asked to get as binary (``parameters.binary_data`` per output, or ``binary_data_output``).
"""

from __future__ import annotations

import math
import struct
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from shipyard.errors import InvalidInputError
from shipyard.inference.inputs import PlainNumber, to_float32
from shipyard.monitoring.ids import check_id, new_ids

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
BYTES = "BYTES"
OUTPUT_DATATYPES = {"f": "FP32", "i": "INT64", "u": "UINT64", "b": "BOOL"}
HEADER_LENGTH = b"inference-header-content-length"


class InferRequest(NamedTuple):
    """A decoded infer request: named input arrays and what to send back how (a tuple:
    half the cost of a frozen dataclass, made once a request)."""

    id: str | None
    inputs: dict[str, npt.NDArray[Any]]
    outputs: list[str] | None
    binary_outputs: set[str]
    binary_all: bool
    finite: bool = False
    """Every input holds numbers only (the typed pass): no NaN to look for."""


_Dimension = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Id = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # others: the general way


class _TensorParameters(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    binary_data_size: Annotated[int, msgspec.Meta(ge=0)] | None = None


class _Tensor(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An input the typed pass takes: a flat list of numbers, or its binary data's size."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    shape: list[_Dimension]
    datatype: str
    data: list[PlainNumber] | None = None
    parameters: _TensorParameters | None = None


class _OutputParameters(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    binary_data: bool = False


class _Output(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    name: str
    parameters: _OutputParameters | None = None


class _RequestParameters(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    binary_data_output: bool = False


class _Request(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A request the typed pass takes: numeric inputs, outputs asked for by name."""

    inputs: list[_Tensor]
    outputs: list[_Output] | None = None
    parameters: _RequestParameters | None = None
    id: str | _Id | None = None


_decode_typed = msgspec.json.Decoder(_Request).decode


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    return value


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse a JSON or binary-extension infer request into arrays."""
    header, binary = (body, b"") if header_length is None else _split(body, header_length)
    return _typed_request(header, binary) or _decode_request(header, binary)


def _split(body: bytes, header_length: str) -> tuple[bytes, bytes]:
    """A binary-extension body's JSON header and binary part."""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInputError(
            f"Inference-Header-Content-Length must be a whole number, got {header_length!r}"
        ) from None
    if not 0 < length <= len(body):
        raise InvalidInputError(
            f"Inference-Header-Content-Length is {length} but the body has {len(body)} "
            "bytes; it must be the length of the JSON part"
        )
    return body[:length], body[length:]


def _decode_request(body: bytes, binary: bytes) -> InferRequest:
    """Any infer request, the general way: a JSON header and its binary part (or none)."""
    try:
        request = _object(orjson.loads(body), "the request body")
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"malformed JSON: {error}") from error
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInputError("`inputs` must be a non-empty list of tensors")
    inputs: dict[str, npt.NDArray[Any]] = {}
    offset = 0
    for position, raw in enumerate(raw_inputs):
        tensor = _object(raw, f"inputs[{position}]")
        name, array, used = _decode_tensor(tensor, position, binary, offset)
        if name in inputs:
            raise InvalidInputError(f"input {name!r} appears twice; give each input once")
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise InvalidInputError(
            f"binary data: the inputs' binary_data_size values add up to {offset} bytes but "
            f"{len(binary)} follow the JSON header"
        )
    parameters = request.get("parameters") or {}
    binary_all = bool(isinstance(parameters, dict) and parameters.get("binary_data_output"))
    outputs: list[str] | None = None
    binary_outputs: set[str] = set()
    if request.get("outputs") is not None:
        if not isinstance(request["outputs"], list):
            raise InvalidInputError("`outputs` must be a list of {name: …}")
        outputs = []
        for position, raw in enumerate(request["outputs"]):
            output = _object(raw, f"outputs[{position}]")
            if not isinstance(output.get("name"), str):
                raise InvalidInputError(f"outputs[{position}] needs a `name`")
            outputs.append(output["name"])
            params = output.get("parameters") or {}
            if isinstance(params, dict) and params.get("binary_data"):
                binary_outputs.add(output["name"])
    request_id = request.get("id")
    return InferRequest(
        id=None if request_id is None else check_id(request_id, "the request"),
        inputs=inputs,
        outputs=outputs,
        binary_outputs=binary_outputs,
        binary_all=binary_all,
    )


def _typed_request(header: bytes, binary: bytes) -> InferRequest | None:
    """The common request — numeric inputs, each a flat JSON list of plain numbers
    (``PlainNumber``) or its binary data, outputs asked for by name — in one typed pass;
    ``None`` for any other, which the general way decodes (or says what is wrong with),
    to the same result where both apply."""
    if not header.isascii():  # the typed pass would take text the general way checks
        return None
    try:
        request = _decode_typed(header)
    except msgspec.DecodeError:  # ValidationError included
        return None
    inputs: dict[str, npt.NDArray[Any]] = {}
    offset = 0
    finite = True
    for tensor in request.inputs:
        dtype = DATATYPES.get(tensor.datatype)
        if tensor.name in inputs or dtype is None:
            return None
        count = math.prod(tensor.shape)
        size = None if tensor.parameters is None else tensor.parameters.binary_data_size
        if size is not None:  # the general way's order: binary data first
            if size != count * dtype.itemsize or offset + size > len(binary):
                return None
            array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
            offset += size
            finite = False  # binary floats may be NaN
        elif tensor.data is not None and len(tensor.data) == count:
            array = np.array(tensor.data, dtype=np.float32)
        else:
            return None
        try:
            inputs[tensor.name] = array.reshape(tensor.shape)
        except (ValueError, OverflowError):  # a shape numpy cannot hold: the general way says so
            return None
    if not inputs or offset != len(binary):
        return None
    outputs = None if request.outputs is None else [o.name for o in request.outputs]
    binary_outputs = {
        o.name for o in request.outputs or () if o.parameters and o.parameters.binary_data
    }
    return InferRequest(
        id=None if request.id is None else check_id(request.id, "the request"),
        inputs=inputs,
        outputs=outputs,
        binary_outputs=binary_outputs,
        binary_all=request.parameters is not None and request.parameters.binary_data_output,
        finite=finite,
    )


def _decode_tensor(
    tensor: dict[str, Any], position: int, binary: bytes, offset: int
) -> tuple[str, npt.NDArray[Any], int]:
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"inputs[{position}] needs a `name`")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInputError(f"input {name!r}: `shape` must be a list of non-negative integers")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or (datatype not in DATATYPES and datatype != BYTES):
        raise InvalidInputError(
            f"input {name!r}: datatype {datatype!r} is not supported; use one of "
            f"{', '.join(DATATYPES)} or {BYTES} (images)"
        )
    count = math.prod(shape)
    parameters = tensor.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise InvalidInputError(f"input {name!r}: binary_data_size must be a whole number")
    if datatype == BYTES:
        return _decode_bytes(tensor, name, shape, count, size, binary, offset)
    dtype = DATATYPES[datatype]
    if size is not None:
        if size != count * dtype.itemsize:
            raise InvalidInputError(
                f"input {name!r}: binary_data_size {size} does not match shape {shape} of "
                f"{datatype} ({count * dtype.itemsize} bytes)"
            )
        if offset + size > len(binary):
            raise InvalidInputError(
                f"input {name!r}: binary_data_size {size} runs past the end of the body"
            )
        array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
        return name, _shaped(array, shape, name), size
    if "data" not in tensor:
        raise InvalidInputError(f"input {name!r} has neither `data` nor binary_data_size")
    array = to_float32(tensor["data"], f"inputs[{position}].data")
    if array.size != count:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} needs {count} values, `data` has {array.size}"
        )
    return name, _shaped(array, shape, name), 0


def _shaped(array: npt.NDArray[Any], shape: list[int], name: str) -> npt.NDArray[Any]:
    """``array`` in ``shape`` (of as many elements), or ``InvalidInputError`` for a shape
    numpy cannot hold (a dimension of 2**63, or of zero next to huge ones)."""
    try:
        return array.reshape(shape)
    except (ValueError, OverflowError) as error:
        raise InvalidInputError(f"input {name!r}: shape {shape} is too large ({error})") from None


def _decode_bytes(
    tensor: dict[str, Any],
    name: str,
    shape: list[int],
    count: int,
    size: int | None,
    binary: bytes,
    offset: int,
) -> tuple[str, npt.NDArray[Any], int]:
    """A ``BYTES`` input: JSON strings, or length-prefixed elements of the binary part."""
    elements: list[Any] = []
    if size is not None:
        if offset + size > len(binary):
            raise InvalidInputError(
                f"input {name!r}: binary_data_size {size} runs past the end of the body"
            )
        view, at, end = memoryview(binary), offset, offset + size
        while at < end:
            if at + 4 > end:
                raise InvalidInputError(
                    f"input {name!r}: element {len(elements)} lacks its 4-byte length prefix"
                )
            (length,) = struct.unpack_from("<I", binary, at)
            if at + 4 + length > end:
                raise InvalidInputError(
                    f"input {name!r}: element {len(elements)} says {length} bytes but "
                    f"binary_data_size leaves {end - at - 4}"
                )
            elements.append(bytes(view[at + 4 : at + 4 + length]))
            at += 4 + length
    elif "data" in tensor:
        data = tensor["data"]
        elements = _flatten(data) if isinstance(data, list) else []
        if not isinstance(data, list) or not all(isinstance(e, str) for e in elements):
            raise InvalidInputError(
                f"input {name!r}: BYTES `data` must be a list of strings (base64 for images)"
            )
    else:
        raise InvalidInputError(f"input {name!r} has neither `data` nor binary_data_size")
    if len(elements) != count:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} needs {count} elements, {len(elements)} were sent"
        )
    array = np.empty(count, dtype=object)
    array[:] = elements
    return name, _shaped(array, shape, name), size or 0


def _flatten(data: list[Any]) -> list[Any]:
    """Nested lists' items in row-major order."""
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        item = next(stack[-1], stack)
        if item is stack:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


def row_ids(request_id: str | None, rows: int) -> list[str]:
    """The id of each row of a request: its ``id`` for one row, ``{id}:{row}`` for several
    (``req-7:0``, ``req-7:1``, …); new UUIDv7s when the request has none."""
    if request_id is None:
        return new_ids(rows)
    if rows == 1:
        return [request_id]
    ids = [f"{request_id}:{row}" for row in range(rows)]
    check_id(ids[-1], f"row {rows - 1} (the request's id and row number)")
    return ids


def encode_response(
    model: str,
    version: int,
    request: InferRequest,
    outputs: dict[str, npt.NDArray[Any]],
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    wanted = outputs.keys() if request.outputs is None else request.outputs
    if request.outputs is not None:
        unknown = [name for name in wanted if name not in outputs]
        if unknown:
            raise InvalidInputError(
                f"unknown output(s) {', '.join(unknown)}; the model has {', '.join(outputs)}"
            )
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    binary_all, binary = request.binary_all, request.binary_outputs
    for name in wanted:
        entry, blob = _encode_tensor(name, outputs[name], binary_all or name in binary)
        tensors.append(entry)
        if blob is not None:
            blobs.append(blob)
    response: dict[str, Any] = {
        "model_name": model,
        "model_version": str(version),
        "outputs": tensors,
    }
    if request.id is not None:
        response["id"] = request.id
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def _encode_tensor(
    name: str, array: npt.NDArray[Any], binary: bool
) -> tuple[dict[str, Any], bytes | None]:
    if array.dtype.kind in ("U", "S", "O"):
        texts = [str(v) for v in array.ravel().tolist()]
        entry: dict[str, Any] = {"name": name, "datatype": "BYTES", "shape": list(array.shape)}
        if not binary:
            entry["data"] = texts
            return entry, None
        values = [text.encode() for text in texts]
        blob = b"".join(struct.pack("<I", len(v)) + v for v in values)
        entry["parameters"] = {"binary_data_size": len(blob)}
        return entry, blob
    datatype = OUTPUT_DATATYPES[array.dtype.kind]
    dtype = DATATYPES[datatype]
    if array.dtype != dtype or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=dtype)
    entry = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if binary:
        blob = array.tobytes()
        entry["parameters"] = {"binary_data_size": len(blob)}
        return entry, blob
    entry["data"] = array.ravel()
    return entry, None
