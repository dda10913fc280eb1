"""/v1/voices over a real uvicorn on loopback: the routes, every bad upload (with its PROTOCOL.md code and
status, nothing stored, no temp file left), the size limit from Content-Length and while streaming, and two
server processes sharing one store."""

from __future__ import annotations

import http.client
import os
import select
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.audiofiles import encode, speechlike
from tests.voices_app import multipart, request, serving, serving_process, temp_files, upload
from voxws import voices

TEXT = "what I said in it"


def wav(seconds: float, rate: int = 44100) -> bytes:
    return encode("wav", speechlike(seconds, rate), rate)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != voices.LOCK and not voices.valid_id(p.name))




def test_create_list_show_delete(tmp_path: Path) -> None:
    with serving(tmp_path, default_voice="me") as srv:
        assert request(srv.port, "GET", "/v1/voices") == (200, {"voices": [], "default": None})
        status, v = upload(srv.port, encode("webm", speechlike(3, 48000, 2), 48000), name="Me", voice_id="me")
        assert status == 201, v
        assert set(v) == {"id", "name", "text", "duration_s", "created"}
        assert (v["id"], v["name"], v["text"]) == ("me", "Me", TEXT) and 2.9 < v["duration_s"] < 3.3
        assert request(srv.port, "GET", "/v1/voices") == (200, {"voices": [v], "default": "me"})
        assert request(srv.port, "GET", "/v1/voices/me") == (200, v)
        status, made = upload(srv.port, wav(2))
        assert status == 201 and voices.valid_id(made["id"]) and made["name"] == made["id"]
        assert request(srv.port, "DELETE", "/v1/voices/me") == (204, b"")
        for method in ("GET", "DELETE"):
            status, body = request(srv.port, method, "/v1/voices/me")
            assert status == 404 and body["error"]["code"] == "unknown_voice"
        assert request(srv.port, "GET", "/v1/voices") == (200, {"voices": [made], "default": None})
        assert srv.errors == []


@pytest.mark.parametrize(("kind", "code", "status"), [
    ("undecodable", "bad_audio", 400),
    ("empty", "bad_audio", 400),
    ("short", "audio_too_short", 400),
    ("five_minutes", "audio_too_long", 400),
    ("no_text", "missing_text", 400),
    ("blank_text", "missing_text", 400),
    ("no_audio_part", "bad_request", 400),
    ("bad_id", "bad_request", 400),
    ("dot_id", "bad_request", 400),
    ("exists", "voice_exists", 409),
    ("full", "too_many_voices", 409),
    ("not_multipart", "bad_request", 400),
    ("no_boundary", "bad_request", 400),
    ("truncated", "bad_request", 400),
    ("twice", "bad_request", 400),
    ("latin1_text", "bad_request", 400),
])
def test_bad_uploads(tmp_path: Path, kind: str, code: str, status: int) -> None:
    with serving(tmp_path, max_voices=2) as srv:
        assert upload(srv.port, wav(2), voice_id="taken")[0] == 201
        before = temp_files()  # pytest's own capture files
        good = wav(2)
        if kind == "full":
            assert upload(srv.port, good, voice_id="second")[0] == 201
        body, ctype = multipart([("audio", good, "a.wav"), ("text", TEXT.encode(), None)])
        got = {
            "undecodable": lambda: upload(srv.port, os.urandom(5000)),
            "empty": lambda: upload(srv.port, b""),
            "short": lambda: upload(srv.port, wav(0.5)),
            "five_minutes": lambda: upload(srv.port, wav(300, 8000)),
            "no_text": lambda: upload(srv.port, good, text=None),
            "blank_text": lambda: upload(srv.port, good, text="  "),
            "no_audio_part": lambda: upload(srv.port, None),
            "bad_id": lambda: upload(srv.port, good, voice_id="../etc"),
            "dot_id": lambda: upload(srv.port, good, voice_id=".."),
            "exists": lambda: upload(srv.port, good, voice_id="taken"),
            "full": lambda: upload(srv.port, good, voice_id="third"),
            "not_multipart": lambda: request(srv.port, "POST", "/v1/voices", b'{"text":"x"}',
                                             {"Content-Type": "application/json"}),
            "no_boundary": lambda: request(srv.port, "POST", "/v1/voices", body,
                                           {"Content-Type": "multipart/form-data"}),
            "truncated": lambda: request(srv.port, "POST", "/v1/voices", body[:-30], {"Content-Type": ctype}),
            "twice": lambda: request(srv.port, "POST", "/v1/voices", *_twice(good)),
            "latin1_text": lambda: request(srv.port, "POST", "/v1/voices", *_latin1(good)),
        }[kind]()
        assert got[0] == status and got[1]["error"]["code"] == code, got
        assert got[1]["error"]["message"]
        names = {v["id"] for v in request(srv.port, "GET", "/v1/voices")[1]["voices"]}
        assert names == ({"taken", "second"} if kind == "full" else {"taken"})
        assert leftovers(tmp_path) == [] and temp_files() == before
        assert srv.errors == []


def _twice(audio: bytes) -> tuple[bytes, dict[str, str]]:
    body, ctype = multipart([("audio", audio, "a.wav"), ("text", b"a", None), ("text", b"b", None)])
    return body, {"Content-Type": ctype}


def _latin1(audio: bytes) -> tuple[bytes, dict[str, str]]:
    body, ctype = multipart([("audio", audio, "a.wav"), ("text", "caf\xe9".encode("latin-1"), None)])
    return body, {"Content-Type": ctype}


def _send(port: int, vid: str, go: threading.Barrier, results: list[int]) -> None:
    audio = wav(2)
    go.wait()
    results.append(upload(port, audio, voice_id=vid)[0])


def _response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_over_the_limit_by_content_length_is_refused_before_the_body(tmp_path: Path) -> None:
    with serving(tmp_path, max_upload_bytes=100_000) as srv, socket.create_connection(("127.0.0.1", srv.port)) as s:
        # Headers only: the answer comes without a byte of the (announced) 50 MB body.
        s.sendall(b"POST /v1/voices HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 50000000\r\n\r\n")
        s.settimeout(10)
        head = _response_head(s)
        while b"too_large" not in head and (more := s.recv(65536)):
            head += more
        assert head.startswith(b"HTTP/1.1 413") and b'"too_large"' in head
        assert leftovers(tmp_path) == [] and srv.errors == []


def test_over_the_limit_while_streaming_is_refused_as_it_passes(tmp_path: Path) -> None:
    limit = 200_000
    with serving(tmp_path, max_upload_bytes=limit) as srv, socket.create_connection(("127.0.0.1", srv.port)) as s:
        before = temp_files()
        # A chunked upload (no Content-Length) that never ends: the 413 can only come while it streams.
        s.sendall(b"POST /v1/voices HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        head = b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
        s.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        chunk = b"%x\r\n%s\r\n" % (16384, b"\x01" * 16384)
        sent, cap = 0, 100 * limit
        while sent < cap and not select.select([s], [], [], 0)[0]:
            select.select([], [s], [], 5)
            sent += s.send(chunk)
        assert sent < cap, "no answer while the body streamed"
        s.settimeout(10)
        answer = _response_head(s)
        while b"too_large" not in answer and (more := s.recv(65536)):  # the body may come in a later segment
            answer += more
        assert answer.startswith(b"HTTP/1.1 413") and b"too_large" in answer
        assert leftovers(tmp_path) == [] and temp_files() == before and srv.errors == []
    # The same kind of body under the limit is fine: the limit, not the framing, refused it.
    body, ctype = multipart([("audio", wav(2), "a.wav"), ("text", TEXT.encode(), None)])
    with serving(tmp_path, max_upload_bytes=len(body) + 1) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        c.request("POST", "/v1/voices", body=iter([body[:1000], body[1000:]]), headers={"Content-Type": ctype},
                  encode_chunked=True)
        assert c.getresponse().status == 201
        c.close()


def test_two_server_processes_share_the_store(tmp_path: Path) -> None:
    with serving_process(tmp_path) as a, serving_process(tmp_path) as b:
        assert request(b, "GET", "/v1/voices")[1]["voices"] == []  # b's scan is cached from here
        status, v = upload(a, wav(2), voice_id="shared")
        assert status == 201
        t0 = time.monotonic()
        while request(b, "GET", "/v1/voices")[1]["voices"] != [v]:
            assert time.monotonic() - t0 < 2.0, "not visible through the other process within 2 s"
            time.sleep(0.05)
        assert request(b, "GET", "/v1/voices/shared") == (200, v)
        assert request(b, "DELETE", "/v1/voices/shared")[0] == 204
        assert request(a, "GET", "/v1/voices/shared")[0] == 404
        # One id, uploaded through both processes at once: one 201, one 409.
        for n in range(3):
            results: list[int] = []
            go = threading.Barrier(2)
            threads = [threading.Thread(target=_send, args=(p, f"race{n}", go, results)) for p in (a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert sorted(results) == [201, 409]
        assert leftovers(tmp_path) == []
