"""The Open Inference Protocol tensor codec: JSON and the binary tensor extension."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from shipyard.errors import InvalidInputError
from shipyard.server import tensors
from shipyard.server.tensors import decode_request, encode_response


def binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, str]:
    """A binary-extension body and its Inference-Header-Content-Length value."""
    json_part = orjson.dumps(header)
    return json_part + b"".join(blobs), str(len(json_part))


def test_json_tensor_is_reshaped_to_its_shape() -> None:
    body = orjson.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}
            ],
        }
    )
    decoded = decode_request(body, None)
    assert decoded.id == "r1"
    np.testing.assert_array_equal(decoded.inputs["input"], [[1, 2, 3], [4, 5, 6]])
    assert decoded.outputs is None
    assert not decoded.binary_all


def test_nested_json_data_is_accepted() -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]}]}
    )
    np.testing.assert_array_equal(decode_request(body, None).inputs["x"], [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("datatype", "dtype"),
    [("FP32", np.float32), ("FP64", np.float64), ("INT64", np.int64), ("INT32", np.int32)],
)
def test_binary_inputs_are_read_in_order(datatype: str, dtype: type[np.generic]) -> None:
    first = np.arange(6, dtype=dtype).reshape(2, 3)
    second = np.array([7, 8], dtype=dtype)
    header = {
        "inputs": [
            {
                "name": "a",
                "shape": [2, 3],
                "datatype": datatype,
                "parameters": {"binary_data_size": first.nbytes},
            },
            {
                "name": "b",
                "shape": [2],
                "datatype": datatype,
                "parameters": {"binary_data_size": second.nbytes},
            },
        ],
        "parameters": {"binary_data_output": True},
    }
    body, length = binary_body(header, first.tobytes(), second.tobytes())
    decoded = decode_request(body, length)
    np.testing.assert_array_equal(decoded.inputs["a"], first)
    np.testing.assert_array_equal(decoded.inputs["b"], second)
    assert decoded.binary_all


def test_binary_and_json_inputs_mix() -> None:
    blob = np.array([1.5, 2.5], dtype=np.float32)
    header = {
        "inputs": [
            {"name": "j", "shape": [1], "datatype": "FP32", "data": [9]},
            {
                "name": "b",
                "shape": [2],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 8},
            },
        ]
    }
    body, length = binary_body(header, blob.tobytes())
    decoded = decode_request(body, length)
    np.testing.assert_array_equal(decoded.inputs["b"], blob)
    np.testing.assert_array_equal(decoded.inputs["j"], [9])


def one_input(**tensor: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", **tensor}]}


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"{not json", None, "malformed JSON"),
        (b"[1, 2]", None, "the request body must be a JSON object"),
        (b"{}", None, "`inputs` must be a non-empty list"),
        (orjson.dumps({"inputs": []}), None, "`inputs` must be a non-empty list"),
        (orjson.dumps({"inputs": [1]}), None, "inputs[0] must be a JSON object"),
        (orjson.dumps({"inputs": [{"shape": [1], "datatype": "FP32"}]}), None, "needs a `name`"),
        (orjson.dumps(one_input(shape=[-1, 2], data=[1, 2])), None, "non-negative integers"),
        (orjson.dumps(one_input(shape="1,2", data=[1, 2])), None, "non-negative integers"),
        (
            orjson.dumps(one_input(datatype="STRING", data=["a", "b"])),
            None,
            "'STRING' is not supported",
        ),
        (orjson.dumps(one_input(datatype="BYTES", data=[1, 2])), None, "list of strings"),
        (orjson.dumps(one_input(datatype=["FP32"], data=[1, 2])), None, "is not supported"),
        (orjson.dumps(one_input(data=["a", "b"])), None, "must hold only numbers"),
        (orjson.dumps(one_input(data=[1, 2, 3])), None, "needs 2 values, `data` has 3"),
        (orjson.dumps(one_input()), None, "neither `data` nor binary_data_size"),
        (
            orjson.dumps({**one_input(data=[1, 2]), "outputs": {"name": "x"}}),
            None,
            "`outputs` must be a list",
        ),
        (
            orjson.dumps({**one_input(data=[1, 2]), "outputs": [{}]}),
            None,
            "outputs[0] needs a `name`",
        ),
        (b"{}", "twelve", "must be a whole number, got 'twelve'"),
        (b"{}", "0", "it must be the length of the JSON part"),
        (b"{}", "3", "is 3 but the body has 2 bytes"),
    ],
)
def test_malformed_requests_say_what_is_wrong(
    body: bytes, header: str | None, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        decode_request(body, header)


@pytest.mark.parametrize(
    ("size", "blob", "message"),
    [
        (4, b"\0" * 4, "binary_data_size 4 does not match shape [1, 2] of FP32 (8 bytes)"),
        (8, b"\0" * 4, "binary_data_size 8 runs past the end of the body"),
        (8, b"\0" * 12, "add up to 8 bytes but 12 follow the JSON header"),
        (-8, b"", "binary_data_size must be a whole number"),
        (True, b"\0", "binary_data_size must be a whole number"),
        ("8", b"\0" * 8, "binary_data_size must be a whole number"),
    ],
)
def test_binary_sizes_that_do_not_add_up_are_refused(size: Any, blob: bytes, message: str) -> None:
    body, length = binary_body(one_input(parameters={"binary_data_size": size}), blob)
    with pytest.raises(InvalidInputError) as caught:
        decode_request(body, length)
    assert message in str(caught.value)


def test_leftover_bytes_without_binary_inputs_are_refused() -> None:
    body, length = binary_body(one_input(data=[1, 2]), b"junk")
    with pytest.raises(InvalidInputError, match="add up to 0 bytes but 4 follow"):
        decode_request(body, length)


def outputs() -> dict[str, np.ndarray[Any, Any]]:
    return {
        "probability": np.array([0.25, 0.75], dtype=np.float32),
        "label": np.array([0, 1], dtype=np.int64),
    }


def test_json_response_carries_model_version_and_id() -> None:
    request = decode_request(orjson.dumps({"id": "x", **one_input(data=[1, 2])}), None)
    body, header_length = encode_response("fraud", 3, request, outputs())
    assert header_length is None
    answer = orjson.loads(body)
    assert answer == {
        "model_name": "fraud",
        "model_version": "3",
        "id": "x",
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [2], "data": [0.25, 0.75]},
            {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 1]},
        ],
    }


def test_binary_outputs_follow_the_json_header() -> None:
    request = decode_request(
        orjson.dumps(
            {
                **one_input(data=[1, 2]),
                "outputs": [
                    {"name": "label", "parameters": {"binary_data": True}},
                    {"name": "probability"},
                ],
            }
        ),
        None,
    )
    body, header_length = encode_response("fraud", 1, request, outputs())
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert [o["name"] for o in header["outputs"]] == ["label", "probability"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert header["outputs"][1]["data"] == [0.25, 0.75]
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], np.int64), [0, 1])


def test_binary_data_output_makes_every_output_binary_and_strings_length_prefixed() -> None:
    request = decode_request(
        orjson.dumps({**one_input(data=[1, 2]), "parameters": {"binary_data_output": True}}), None
    )
    strings = {"label": np.array(["no", "yes"])}
    body, header_length = encode_response("m", 1, request, strings)
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert header["outputs"][0]["datatype"] == "BYTES"
    expected = struct.pack("<I", 2) + b"no" + struct.pack("<I", 3) + b"yes"
    assert body[header_length:] == expected


def test_unknown_requested_output_is_refused() -> None:
    request = decode_request(
        orjson.dumps({**one_input(data=[1, 2]), "outputs": [{"name": "p"}]}), None
    )
    with pytest.raises(InvalidInputError, match="unknown output"):
        encode_response("fraud", 1, request, outputs())


def test_bytes_inputs_decode_to_byte_strings() -> None:
    """JSON strings (nested as the shape says) and length-prefixed binary elements."""
    request = decode_request(
        orjson.dumps(one_input(datatype="BYTES", shape=[2, 1], data=[["aGk="], ["eW8="]])), None
    )
    assert request.inputs["input"].tolist() == [["aGk="], ["eW8="]]
    blob = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0)
    header = orjson.dumps(
        one_input(datatype="BYTES", shape=[2], parameters={"binary_data_size": len(blob)})
    )
    binary = decode_request(header + blob, str(len(header)))
    assert binary.inputs["input"].tolist() == [b"hi", b""]
    short = struct.pack("<I", 2) + b"hi" + b"\0\0"
    header = orjson.dumps(
        one_input(datatype="BYTES", shape=[2], parameters={"binary_data_size": len(short)})
    )
    with pytest.raises(InvalidInputError, match="element 1 lacks its 4-byte length prefix"):
        decode_request(header + short, str(len(header)))


PLAIN = {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2.5, -3]}


LEFT_TO_THE_GENERAL_WAY = [
    {"inputs": [{**PLAIN, "data": [[1, 2.5, -3]]}]},
    {"inputs": [{**PLAIN, "data": [True, 2.5, -3]}]},
    {"inputs": [{**PLAIN, "data": [None, 2.5, -3]}]},
    {"inputs": [PLAIN], "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]},
    {"inputs": [PLAIN], "parameters": {"binary_data_output": True, "other": 1}},
    {"inputs": [{**PLAIN, "name": "é"}]},
    {"inputs": [{**PLAIN, "data": [3.40283e38, 1, 2]}]},
    {"inputs": [{**PLAIN, "data": [2**60 + 1, 1, 2]}]},  # float64 would round it first
    {"inputs": [{**PLAIN, "datatype": "BYTES"}]},
    {"id": 2**63, "inputs": [PLAIN]},
    {"inputs": [{**PLAIN, "shape": [2**63, 0], "data": []}]},
]
ROW = np.array([1, 2.5, -3], dtype=np.float32)
BLOB = {
    "name": "input",
    "shape": [1, 3],
    "datatype": "FP32",
    "parameters": {"binary_data_size": 12},
}
BINARY_OUT = {"outputs": [{"name": "label", "parameters": {"binary_data": True}}]}


@pytest.mark.parametrize(
    ("request_body", "blob"),
    [
        ({"inputs": [PLAIN]}, b""),
        ({"id": "r-1", "inputs": [PLAIN]}, b""),
        ({"id": 42, "inputs": [PLAIN]}, b""),
        ({"inputs": [{**PLAIN, "datatype": "FP64", "shape": [3]}]}, b""),
        ({"inputs": [{**PLAIN, "shape": [0, 3], "data": []}]}, b""),
        ({"inputs": [{**PLAIN, "data": [3.4028234e38, -3.4028234e38, 1e-45]}]}, b""),
        ({"inputs": [{**PLAIN, "name": "a", "shape": [3]}, {**PLAIN, "name": "b"}]}, b""),
        ({"inputs": [PLAIN], "outputs": [{"name": "label"}], "parameters": None}, b""),
        ({"inputs": [PLAIN], "parameters": {"binary_data_output": True}}, b""),
        ({"inputs": [PLAIN], "outputs": [{"name": "label", "parameters": {}}]}, b""),
        ({"inputs": [BLOB], **BINARY_OUT}, ROW.tobytes()),
        ({"inputs": [{**BLOB, "data": [9, 9, 9]}]}, ROW.tobytes()),  # the binary data wins
        ({"inputs": [{**BLOB, "datatype": "INT32"}]}, np.arange(3, dtype="<i4").tobytes()),
        ({"inputs": [BLOB, {**BLOB, "name": "x"}]}, ROW.tobytes() * 2),
        ({"inputs": [BLOB, {**PLAIN, "name": "x"}]}, ROW.tobytes()),
        ({"inputs": [{**BLOB, "parameters": {}}]}, b""),  # neither data nor binary
        # the general way only: the typed pass leaves each of these to it
        *((body, b"") for body in LEFT_TO_THE_GENERAL_WAY),
    ],
)
def test_the_typed_pass_decodes_as_the_general_way_does(
    request_body: dict[str, Any], blob: bytes
) -> None:
    header = orjson.dumps(request_body)
    typed = tensors._typed_request(header, blob)
    try:
        general = tensors._decode_request(header, blob)
    except InvalidInputError:
        assert typed is None  # what the general way refuses, the typed pass leaves to it
        return
    if typed is None:
        return  # decode_request then goes the general way
    assert (typed.id, typed.outputs, typed.binary_outputs, typed.binary_all) == (
        general.id,
        general.outputs,
        general.binary_outputs,
        general.binary_all,
    )
    assert typed.inputs.keys() == general.inputs.keys()
    for name, array in typed.inputs.items():
        assert array.dtype == general.inputs[name].dtype
        np.testing.assert_array_equal(array, general.inputs[name])
    assert typed.finite == (not blob)  # binary floats may hold NaN: those are looked for


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1e39, 0, 0], "beyond the float32 range"),
        ([1, "2", 3], "must hold only numbers"),
        ([1, 2], "needs 3 values"),
    ],
)
def test_what_the_typed_pass_refuses_the_general_way_explains(data: Any, message: str) -> None:
    body = orjson.dumps({"inputs": [{**PLAIN, "data": data}]})
    with pytest.raises(InvalidInputError, match=message):
        decode_request(body, None)


@pytest.mark.parametrize("request_body", LEFT_TO_THE_GENERAL_WAY)
def test_the_typed_pass_steps_aside(request_body: dict[str, Any]) -> None:
    assert tensors._typed_request(orjson.dumps(request_body), b"") is None


def test_integers_beyond_float64_become_the_float32_the_general_way_makes() -> None:
    big = 2**60 + 2**37 + 1  # float64 rounds it down, float32 then to another value
    decoded = decode_request(orjson.dumps({"inputs": [{**PLAIN, "data": [big, 1, 2]}]}), None)
    expected = np.array([big, 1], dtype=np.int64).astype(np.float32)[0]
    assert decoded.inputs["input"][0, 0] == expected


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"id": 2**64, "inputs": [PLAIN]}, "the id of the request"),
        ({"inputs": [{**PLAIN, "shape": [2**63, 0], "data": []}]}, "is too large"),
        ({"inputs": [{**PLAIN, "shape": [2**62, 2**62, 0], "data": []}]}, "is too large"),
    ],
)
def test_ids_and_shapes_beyond_what_numpy_holds_are_400(
    request_body: dict[str, Any], message: str
) -> None:
    body = json.dumps(request_body).encode()  # orjson writes no integer beyond 64 bits
    with pytest.raises(InvalidInputError, match=message):
        decode_request(body, None)


def test_the_typed_pass_takes_the_common_requests() -> None:
    # The tests above would pass with no typed pass at all; this one would not.
    decoded = tensors._typed_request(orjson.dumps({"id": "r", "inputs": [PLAIN]}), b"")
    assert decoded is not None
    assert decoded.id == "r"
    assert decoded.inputs["input"].dtype == np.float32
    header = orjson.dumps({"inputs": [BLOB], **BINARY_OUT})
    decoded = tensors._typed_request(header, ROW.tobytes())
    assert decoded is not None
    assert decoded.binary_outputs == {"label"}
    np.testing.assert_array_equal(decoded.inputs["input"], [ROW])


@pytest.mark.parametrize(
    ("size", "blob", "message"),
    [
        (12, ROW.tobytes()[:8], "runs past the end of the body"),
        (8, ROW.tobytes()[:8], "does not match shape"),
        (12, ROW.tobytes() + b"x", "add up to 12 bytes but 13 follow"),
    ],
)
def test_binary_inputs_the_typed_pass_leaves_are_explained(
    size: int, blob: bytes, message: str
) -> None:
    body, length = binary_body(
        {"inputs": [{**BLOB, "parameters": {"binary_data_size": size}}]}, blob
    )
    with pytest.raises(InvalidInputError, match=message):
        decode_request(body, length)
