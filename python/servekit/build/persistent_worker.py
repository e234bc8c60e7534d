"""Bazel's persistent worker protocol (proto flavour), for the build tool.

Bazel starts a persistent worker once per worker key (for `model_export`: once
per source backend, as KERAS_BACKEND is part of the action's environment) and
sends it one length-delimited `WorkRequest` per action on stdin; the worker
answers each with a `WorkResponse` on stdout. See
https://bazel.build/remote/persistent (`worker_protocol.proto`).

The two messages are decoded here by hand instead of with generated protobuf
classes: Bazel does not ship `worker_protocol_pb2`, the proto flavour works
on every Bazel version without flags (the JSON one needs
`--experimental_worker_allow_json_protocol` on Bazel 4), and the decoder
reads only the three fields servekit uses and skips the rest.

    WorkRequest  { repeated string arguments = 1; repeated Input inputs = 2;
                   int32 request_id = 3; bool cancel = 4; int32 verbosity = 5;
                   string sandbox_dir = 6; }
    WorkResponse { int32 exit_code = 1; string output = 2; int32 request_id = 3; }
"""

from __future__ import annotations

import dataclasses
from typing import BinaryIO, Callable, Optional


class ProtocolError(ValueError):
    """A malformed message on the worker's stdin."""


@dataclasses.dataclass
class WorkRequest:
    arguments: list[str]
    request_id: int = 0
    sandbox_dir: str = ""


def _read_varint(stream: BinaryIO) -> Optional[int]:
    """The next varint on `stream`; None at a clean end of stream."""
    result, shift = 0, 0
    while True:
        byte = stream.read(1)
        if not byte:
            if shift == 0:
                return None
            raise ProtocolError("Truncated varint.")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift >= 64:
            raise ProtocolError("Varint longer than 64 bits.")


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ProtocolError("Truncated varint in a message.")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise ProtocolError("Varint longer than 64 bits.")


def parse_work_request(data: bytes) -> WorkRequest:
    """Decodes one `WorkRequest` (without its length prefix)."""
    request = WorkRequest(arguments=[])
    pos = 0
    while pos < len(data):
        key, pos = _varint_at(data, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _varint_at(data, pos)
            if field == 3:
                request.request_id = value
        elif wire_type == 2:
            length, pos = _varint_at(data, pos)
            if pos + length > len(data):
                raise ProtocolError("Truncated length-delimited field.")
            chunk = data[pos:pos + length]
            pos += length
            if field == 1:
                request.arguments.append(chunk.decode("utf-8"))
            elif field == 6:
                request.sandbox_dir = chunk.decode("utf-8")
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ProtocolError(f"Unsupported wire type {wire_type}.")
    if pos != len(data):
        raise ProtocolError("Truncated fixed-width field.")
    return request


def read_work_request(stream: BinaryIO) -> Optional[WorkRequest]:
    """The next request on `stream`; None when Bazel closed it."""
    length = _read_varint(stream)
    if length is None:
        return None
    data = stream.read(length)
    if len(data) != length:
        raise ProtocolError("Truncated WorkRequest.")
    return parse_work_request(data)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int32 fields: negative values take ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_work_response(exit_code: int, output: str, request_id: int = 0) -> bytes:
    """One length-prefixed `WorkResponse`."""
    text = output.encode("utf-8", errors="replace")
    body = b""
    if exit_code:
        body += b"\x08" + _varint(exit_code)
    if text:
        body += b"\x12" + _varint(len(text)) + text
    if request_id:
        body += b"\x18" + _varint(request_id)
    return _varint(len(body)) + body


def serve(handle: Callable[[WorkRequest], tuple[int, str]], requests: BinaryIO, responses: BinaryIO,
          after_response: Callable[[], None] = lambda: None) -> int:
    """Answers requests until Bazel closes stdin.

    Args:
        handle: runs one action; returns its exit code and the output Bazel
            shows for it (all of it on failure).
        requests, responses: the worker's binary stdin and (saved) stdout.
        after_response: called after each response, while Bazel waits on
            other workers, not this one.

    Returns:
        The process exit code: 0 when Bazel closed the stream.
    """
    while True:
        request = read_work_request(requests)
        if request is None:
            return 0
        exit_code, output = handle(request)
        responses.write(encode_work_response(exit_code, output, request.request_id))
        responses.flush()
        after_response()
