"""The HTTP edge: an ASGI app (Starlette) served by uvicorn, WebSocket protocol by `websockets` (sans-I/O).

app.py builds the app (one guard for access, origins, readiness and the connection limit; route
families), ws.py is `/v1/tts`, probes.py the monitoring routes, static.py the demo page and client,
errors.py the JSON error shapes of the HTTP API, protocols.py the two uvicorn protocol classes voxws
tunes (a deadline for a request head, a last word before a library close, a socket that can be dropped).
"""
